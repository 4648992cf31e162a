"""Inpainting Error Maximization: configuration, the update loop, multi-init selection.

``segment(x, config)`` is the one entry point. Two implementations of the same algorithm:

* ``impl="reference"``: the loop as the paper (and the authors' code) writes it. Each
  iteration inpaints both regions with any inpainter callable, evaluates the regularised
  objective, and lets autograd produce the gradient with respect to the mask.
* ``impl="fast"``: the same iteration with the gradient derived by hand
  (:func:`iemlib.kernels.iem_value_and_grad`), the blur as two matrix products, no
  autograd graph, and images whose mask reached a fixed point leave the batch (the update
  is a deterministic function of (X, M), so a mask that did not change never will).

Tests hold the two to the same masks.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .inpainters import GUARD, GaussianInpainter
from .kernels import SeparableBlur, centred_square, iem_value_and_grad, smooth, update_mask
from .objective import DENOMINATOR_MASKS, DENOMINATORS, NUMERATORS, diversity, inpainting_error

IMPLS = ("fast", "reference")
SELECTIONS = ("image", "dataset")
#: Square sides used by the paper (Section 4.2), at 128 x 128.
PAPER_INIT_SIZES = (44, 78, 92)


@dataclass(frozen=True)
class IEMConfig:
    """Every setting of IEM. Defaults are the authors' code, which produced the paper's
    numbers; each documented alternative is an option.

    iters: number of updates (150).
    sigma, taps, reps: the Gaussian inpainter, ``reps`` separable passes of ``taps`` taps
        (paper: a 21 x 21 kernel realised as two 11-tap passes, sigma 5).
    scale_factor: 2 = the authors' downsampled inpainter (2 x 2 average pooling before the
        blur, nearest upsampling after); see :meth:`downsampled`.
    lam: diversity weight lambda (0 = no regulariser, Table 4).
    lambda_convention: "code" subtracts lam x (sigma(M) + sigma(1-M)) as the authors' code
        does; "paper" subtracts lam / 2 x (...), as the paper's text writes.
    smoothing: smooth the mask after each update (Table 4 turns it off).
    smoothing_rule: "code" (3 x 3 count with centre >= 4) or "paper" (8-neighbourhood
        sum > 4).
    boundary_only: restrict updates to boundary pixels (Table 4 turns it off).
    edge_is_boundary: the authors' code counts every image-border pixel as a boundary
        pixel (its zero padding); False follows the paper's wording strictly.
    numerator, denominator, denominator_mask: the objective's norms (Table 5): numerator
        "l1" | "l2"; denominator "count" (|M|) | "l1" (||X.M||_1) | "l2" (||X.M||_2);
        denominator_mask "own" (Appendix C's derivation) | "complement" (Table 5's printed
        ||X.(1-M)||).
    init_sizes: sides of the centred initial squares at 128 x 128; the authors' code uses
        (78,), the paper (44, 78, 92).
    select: with several squares, keep the one with the highest final inpainting error
        per "image", or the square whose mean error over the whole set is highest
        ("dataset").
    impl: "fast" or "reference".
    device: "cuda", "cpu", ... ; None picks CUDA when available.
    dtype: "float32" (the authors') or "float64".
    early_exit: let converged images leave the batch (never changes results; ignored for
        an inpainter that adapts during the run, see :func:`_run_reference`).
    batch_size: images x initialisations processed together.
    history: record the objective per iteration; keep_masks: record every iteration's mask.
    """

    iters: int = 150
    sigma: float = 5.0
    taps: int = 11
    reps: int = 2
    scale_factor: int = 1
    lam: float = 0.001
    lambda_convention: str = "code"
    smoothing: bool = True
    smoothing_rule: str = "code"
    boundary_only: bool = True
    edge_is_boundary: bool = True
    numerator: str = "l1"
    denominator: str = "count"
    denominator_mask: str = "own"
    init_sizes: tuple[int, ...] = (78,)
    select: str = "image"
    impl: str = "fast"
    device: str | None = None
    dtype: str = "float32"
    early_exit: bool = True
    batch_size: int = 128
    history: bool = False
    keep_masks: bool = False

    def __post_init__(self):
        object.__setattr__(self, "init_sizes", tuple(int(s) for s in self.init_sizes))
        checks = [
            (self.iters >= 0, f"iters must be >= 0, got {self.iters}"),
            (self.sigma > 0, f"sigma must be positive, got {self.sigma}"),
            (self.taps >= 1 and self.taps % 2 == 1, f"taps must be a positive odd number, got {self.taps}"),
            (self.reps >= 1, f"reps must be >= 1, got {self.reps}"),
            (self.scale_factor >= 1, f"scale_factor must be >= 1, got {self.scale_factor}"),
            (self.lam >= 0, f"lam must be >= 0, got {self.lam}"),
            (self.lambda_convention in ("code", "paper"), f"lambda_convention must be 'code' or 'paper', got {self.lambda_convention!r}"),
            (self.smoothing_rule in ("code", "paper"), f"smoothing_rule must be 'code' or 'paper', got {self.smoothing_rule!r}"),
            (self.numerator in NUMERATORS, f"numerator must be one of {NUMERATORS}, got {self.numerator!r}"),
            (self.denominator in DENOMINATORS, f"denominator must be one of {DENOMINATORS}, got {self.denominator!r}"),
            (self.denominator_mask in DENOMINATOR_MASKS, f"denominator_mask must be one of {DENOMINATOR_MASKS}, got {self.denominator_mask!r}"),
            (len(self.init_sizes) >= 1 and all(s > 0 for s in self.init_sizes), f"init_sizes must be positive, got {self.init_sizes}"),
            (self.select in SELECTIONS, f"select must be one of {SELECTIONS}, got {self.select!r}"),
            (self.impl in IMPLS, f"impl must be one of {IMPLS}, got {self.impl!r}"),
            (self.dtype in ("float32", "float64"), f"dtype must be 'float32' or 'float64', got {self.dtype!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def effective_lambda(self) -> float:
        """The weight actually subtracted in front of sigma(M) + sigma(1 - M)."""
        return self.lam / 2 if self.lambda_convention == "paper" else self.lam

    def replace(self, **changes) -> "IEMConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def paper(cls, **changes) -> "IEMConfig":
        """The paper's protocol: squares of side 44, 78 and 92, best by inpainting error."""
        return cls(init_sizes=PAPER_INIT_SIZES, **changes)

    def downsampled(self) -> "IEMConfig":
        """The authors' optional 2x-downsampled inpainter (sigma 2.5, 7 taps)."""
        return self.replace(scale_factor=2, sigma=self.sigma / 2, taps=7)

    def inpainter(self) -> GaussianInpainter:
        return GaussianInpainter(self.sigma, self.taps, self.reps, self.scale_factor)

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def ablations(base: IEMConfig | None = None) -> dict[str, IEMConfig]:
    """Table 4 of the paper: each ablation is a configuration."""
    base = base or IEMConfig()
    return {
        "default": base,
        "no regulariser": base.replace(lam=0.0),
        "no smoothing": base.replace(smoothing=False),
        "unrestricted updates": base.replace(boundary_only=False),
    }


def objective_variants(base: IEMConfig | None = None, literal_table: bool = False) -> dict[str, IEMConfig]:
    """Table 5 of the paper: the four normalisations of the inpainting error.

    ``literal_table`` uses the complement mask in the marginal denominators, as Table 5
    prints them; the default follows Appendix C's derivation."""
    base = base or IEMConfig()
    dm = "complement" if literal_table else "own"
    return {
        "L1 / |M|": base.replace(numerator="l1", denominator="count"),
        "L2 / |M|": base.replace(numerator="l2", denominator="count"),
        "L1 / ||X.M||_1": base.replace(numerator="l1", denominator="l1", denominator_mask=dm),
        "L2 / ||X.M||_2": base.replace(numerator="l2", denominator="l2", denominator_mask=dm),
    }


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class IEMResult:
    """What :func:`segment` returns (N images, K initial squares, T iterations).

    masks: (N, 1, H, W) bool, the selected mask of each image.
    inpainting_error: (N,) L_inp of the selected final mask.
    init_index: (N,) index into ``init_sizes`` of the selected square.
    init_sizes: the squares tried.
    all_masks: (N, K, 1, H, W) bool, every square's final mask.
    all_errors: (N, K) every square's final L_inp.
    all_objectives: (N, K) every square's final regularised objective.
    settled_at: (N, K) the first iteration t from which the mask sequence repeats (T if
        it did not within T iterations).
    period: (N, K) 1 where the mask reached a fixed point (M_{t+1} == M_t), 2 where it
        alternates between two masks (M_{t+1} == M_{t-1}), 0 where neither was seen.
    history: with ``config.history``: "inpainting_error" and "objective" (N, K, T + 1),
        the values at M_0 ... M_T; with ``keep_masks`` also "masks" (N, K, T + 1, 1, H, W).
    seconds: wall time of the run.
    """

    masks: torch.Tensor
    inpainting_error: torch.Tensor
    init_index: torch.Tensor
    init_sizes: tuple[int, ...]
    all_masks: torch.Tensor
    all_errors: torch.Tensor
    all_objectives: torch.Tensor
    settled_at: torch.Tensor
    period: torch.Tensor
    history: dict = field(default_factory=dict)
    seconds: float = 0.0
    config: IEMConfig | None = None

    def reselect(self, rule: str) -> "IEMResult":
        """The same run with the initial square chosen by another rule."""
        idx = select_init(self.all_errors, rule)
        rows = torch.arange(len(idx))
        return dataclasses.replace(self, masks=self.all_masks[rows, idx],
                                   inpainting_error=self.all_errors[rows, idx], init_index=idx)


def select_init(errors: torch.Tensor, rule: str = "image") -> torch.Tensor:
    """errors (N, K) final inpainting errors -> (N,) chosen square per image.

    "image": the highest error of each image; "dataset": the square whose mean error over
    all N images is highest, for every image. Ground truth is never used. A NaN error (a
    mask that vanished: 0 / 0) never wins; in the dataset rule it is left out of the mean."""
    errors = torch.as_tensor(errors, dtype=torch.float64)
    if rule == "image":
        return errors.nan_to_num(nan=-float("inf")).argmax(1)
    if rule == "dataset":
        means = errors.nanmean(0).nan_to_num(nan=-float("inf"))
        return torch.full((errors.shape[0],), int(means.argmax()), dtype=torch.long)
    raise ValueError(f"select must be one of {SELECTIONS}, got {rule!r}")


def _as_images(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a tensor or array, got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"images must be floats in [-1, 1], got {x.dtype}")
    return x


# --------------------------------------------------------------------------- the loops
class _Loop:
    """Book-keeping shared by both implementations for one batch of B masks.

    The update is a deterministic function of (X, M). So once M_{t+1} == M_t (a fixed
    point, period 1) or M_{t+1} == M_{t-1} (a two-cycle, period 2), every later mask,
    objective value and the final mask are known without computing them: the fast path
    lets such images leave the batch, the reference path just notes it."""

    def __init__(self, config: IEMConfig, iters: int, m0: torch.Tensor):
        b = m0.shape[0]
        self.cfg = config
        self.iters = iters
        self.settled_at = torch.full((b,), iters, dtype=torch.long)
        self.period = torch.zeros(b, dtype=torch.long)
        self.err = torch.zeros(b, iters + 1, dtype=torch.float64) if config.history else None
        self.obj = torch.zeros(b, iters + 1, dtype=torch.float64) if config.history else None
        self.masks = None
        if config.keep_masks:
            self.masks = torch.zeros(b, iters + 1, *m0.shape[1:], dtype=torch.bool)
            self.masks[:, 0] = m0.cpu()

    def record(self, t: int, idx: torch.Tensor, l_inp, objective):
        """Objective values at M_t of the images idx."""
        if self.err is not None:
            self.err[idx, t] = l_inp.detach().double().cpu()
            self.obj[idx, t] = objective.detach().double().cpu()

    def step(self, m: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The update of Eq. 9 followed by smoothing, as configured: bool (B, 1, H, W)."""
        new = update_mask(m, grad, self.cfg.boundary_only, self.cfg.edge_is_boundary)
        if self.cfg.smoothing:
            new = smooth(new, self.cfg.smoothing_rule)
        return new

    def settle(self, idx: torch.Tensor, t: int, period: int):
        """Images idx have M_{t+1} == M_{t+1-period}: fill in every later value."""
        self.settled_at[idx] = t + 1 - period
        self.period[idx] = period
        later = torch.arange(t + 1, self.iters + 1)
        # M_s for s > t equals M_t (s - t even) or M_{t-1} (s - t odd, two-cycles only)
        source = t - ((later - t) % period)
        if self.err is not None:
            self.err[idx.unsqueeze(1), later] = self.err[idx.unsqueeze(1), source]
            self.obj[idx.unsqueeze(1), later] = self.obj[idx.unsqueeze(1), source]
        if self.masks is not None:
            later_m = later[1:]  # M_{t+1} itself is recorded by the caller
            if len(later_m):
                src = t + 1 - ((later_m - t - 1) % period)
                self.masks[idx.unsqueeze(1), later_m] = self.masks[idx.unsqueeze(1), src]

    def final_of_cycle(self, t: int, m_t: torch.Tensor, m_next: torch.Tensor) -> torch.Tensor:
        """For a two-cycle detected at t (M_{t+1} == M_{t-1}): the mask at the last step."""
        return m_next if (self.iters - t - 1) % 2 == 0 else m_t

    def advance(self, t: int, active: torch.Tensor, m: torch.Tensor, prev, cur: torch.Tensor,
                new: torch.Tensor, exit_early: bool):
        """After the update M_t = cur -> M_{t+1} = new of the images ``active``: store the
        masks in ``m`` (every image's latest) and note which sequences became periodic.
        With ``exit_early``, settled images get their later values filled in and their
        final mask stored; returns the (device) bool mask of the images to keep
        iterating, or None when all of them stay."""
        m[active.to(m.device)] = new
        fixed = ~(new != cur).flatten(1).any(1)
        cycle = torch.zeros_like(fixed) if prev is None else (~fixed & ~(new != prev).flatten(1).any(1))
        if not exit_early:
            fresh = self.period[active] == 0
            f, c = fixed.cpu() & fresh, cycle.cpu() & fresh
            self.settled_at[active[f]], self.period[active[f]] = t, 1
            self.settled_at[active[c]], self.period[active[c]] = t - 1, 2
            return None
        if bool(fixed.any()):
            self.settle(active[fixed.cpu()], t, 1)
        if bool(cycle.any()):
            c = cycle.cpu()
            self.settle(active[c], t, 2)
            m[active[c].to(m.device)] = self.final_of_cycle(t, cur[cycle], new[cycle])
        keep = ~(fixed | cycle)
        return None if bool(keep.all()) else keep


def _run_fast(x, m0, cfg: IEMConfig, iters: int, on_final: Callable | None = None):
    """The fast loop on one batch. ``on_final(rows, masks, l_inp, objective)`` is called
    for batch rows whose final values are known, as soon as they are: when they settle,
    and for the others at the end."""
    b, _, h, w = x.shape
    blur = SeparableBlur(h, w, cfg.sigma, cfg.taps, cfg.reps, cfg.scale_factor, x.dtype, x.device)
    k1 = blur(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))
    # per-image constants: K*X, the channel sums and the squared norms
    const = dict(kx=blur(x), sx=x.sum((2, 3), keepdim=True), sq=x.pow(2).sum(1, keepdim=True))
    kw = dict(lam=cfg.effective_lambda, numerator=cfg.numerator, denominator=cfg.denominator,
              denominator_mask=cfg.denominator_mask, guard=GUARD)
    loop = _Loop(cfg, iters, m0)
    m = m0.clone()                      # final masks of every image, filled as they settle
    final_l = torch.empty(b, dtype=x.dtype, device=x.device)
    final_o = torch.empty(b, dtype=x.dtype, device=x.device)

    def finish(rows: torch.Tensor):
        """Final values of batch rows (CPU indices) whose final mask is in m."""
        d = rows.to(x.device)
        l, o, _ = iem_value_and_grad(x[d], m[d].to(x.dtype), blur, k1=k1, need_grad=False,
                                     **{k: v[d] for k, v in const.items()}, **kw)
        final_l[d], final_o[d] = l, o
        if on_final is not None:
            on_final(rows, m[d], l, o)

    active = torch.arange(b)            # images still iterating (CPU indices)
    xa, ca, cur, prev = x, const, m0.clone(), None
    for t in range(iters):
        l_inp, objective, grad = iem_value_and_grad(xa, cur.to(x.dtype), blur, k1=k1, **ca, **kw)
        loop.record(t, active, l_inp, objective)
        new = loop.step(cur, grad)
        if loop.masks is not None:
            loop.masks[active, t + 1] = new.cpu()
        keep = loop.advance(t, active, m, prev, cur, new, cfg.early_exit)
        if keep is not None:
            # the settled images' final values are known now: compute them at once, so that
            # a caller can keep the result without waiting for the rest of the batch
            finish(active[(~keep).cpu()])
            kc = keep.cpu()
            active, xa = active[kc], xa[keep]
            ca = {k: v[keep] for k, v in ca.items()}
            new, cur = new[keep], cur[keep]
            if active.numel() == 0:
                break
        prev, cur = cur, new
    # images that left the batch had their final values computed when they settled
    live = loop.period == 0 if cfg.early_exit else torch.ones(b, dtype=torch.bool)
    if bool(live.all()):
        finish(torch.arange(b))
    elif bool(live.any()):
        finish(torch.arange(b)[live])
    loop.record(iters, torch.arange(b)[live], final_l[live.to(x.device)],
                final_o[live.to(x.device)])
    return m, final_l, final_o, loop


def _run_reference(x, m0, cfg: IEMConfig, iters: int, inpainter: Callable):
    """The authors' loop: autograd gives the gradient of the regularised objective.

    An inpainter may offer ``inpaint_both(x, mask) -> (pred_fg, pred_bg)``, both
    inpaintings in one call (a network runs them as one batch), and ``adapt(x, masks, t)``,
    called before each evaluation of the objective (an inpainter fine-tuned during IEM).
    Settled images leave the batch as in the fast path, unless the inpainter adapts: then
    the update is no longer a function of (X, M) alone."""
    b = x.shape[0]
    lam = cfg.effective_lambda
    loop = _Loop(cfg, iters, m0)
    obj_kw = dict(numerator=cfg.numerator, denominator=cfg.denominator,
                  denominator_mask=cfg.denominator_mask)
    both = getattr(inpainter, "inpaint_both", None)
    adapt = getattr(inpainter, "adapt", None)
    exit_early = cfg.early_exit and adapt is None

    def evaluate(x, m):
        if both is not None:
            pred_fg, pred_bg = both(x, m)
        else:
            pred_fg = inpainter(x * (1 - m), 1 - m)   # foreground inpainted from the background
            pred_bg = inpainter(x * m, m)             # background inpainted from the foreground
        l_inp = inpainting_error(x, m, pred_fg, pred_bg, **obj_kw)
        objective = l_inp - lam * diversity(x, m) if lam else l_inp
        return l_inp, objective

    m = m0.bool().clone()               # final masks of every image, filled as they settle
    active = torch.arange(b)            # images still iterating (CPU indices)
    xa, cur, prev = x, m0.bool(), None
    for t in range(iters):
        if adapt is not None:
            adapt(xa, cur, t)
        mv = cur.to(x.dtype).requires_grad_(True)
        l_inp, objective = evaluate(xa, mv)
        (grad,) = torch.autograd.grad(objective.sum(), mv)
        loop.record(t, active, l_inp, objective)
        new = loop.step(cur, grad)
        if loop.masks is not None:
            loop.masks[active, t + 1] = new.cpu()
        keep = loop.advance(t, active, m, prev, cur, new, exit_early)
        if keep is not None:
            active, xa = active[keep.cpu()], xa[keep]
            new, cur = new[keep], cur[keep]
            if active.numel() == 0:
                break
        prev, cur = cur, new
    if adapt is not None:
        adapt(x, m, iters)
    with torch.no_grad():
        l_inp, objective = evaluate(x, m.to(x.dtype))
    # images that left the batch had their last values filled in when they settled
    live = loop.period == 0 if exit_early else torch.ones(b, dtype=torch.bool)
    loop.record(iters, torch.arange(b)[live], l_inp[live.to(l_inp.device)],
                objective[live.to(l_inp.device)])
    return m, l_inp, objective, loop


def segment(x, config: IEMConfig | None = None, inpainter: Callable | None = None,
            progress: bool = False, on_mask: Callable | None = None,
            init_masks=None) -> IEMResult:
    """Segment images by Inpainting Error Maximization.

    x: (N, 3, H, W) float in [-1, 1] (tensor or array; one (3, H, W) image is accepted),
    all of one size (the paper pre-processes to 128 x 128).
    config: :class:`IEMConfig`, defaults to the authors' settings.
    inpainter: any callable ``(x_visible, mask_visible) -> prediction``; given one, the
    reference implementation runs (the fast path is specific to the Gaussian inpainter).
    init_masks: optional (N, 1, H, W) masks to start from instead of the config's squares
    (one run per image; the refinement phase starts IEM from a network's masks). The
    result's ``init_sizes`` is then ``(0,)``.
    on_mask: called as ``on_mask(i, mask)`` with image i's selected mask (1, H, W) bool on
    the CPU as soon as it is final, so that a caller can save it before the rest of the
    batch is done: on the fast path when every square of image i has settled (with
    ``select="image"``), otherwise when its batch ends; with ``select="dataset"`` the
    choice needs every image, so the calls come at the end. The result does not depend
    on it.
    Returns an :class:`IEMResult` on the CPU."""
    cfg = config or IEMConfig()
    if inpainter is not None and cfg.impl == "fast":
        cfg = cfg.replace(impl="reference")
    x = _as_images(x)
    device = cfg.torch_device()
    dtype = getattr(torch, cfg.dtype)
    n, _, h, w = x.shape
    if init_masks is not None:
        init_masks = torch.as_tensor(init_masks)
        if init_masks.dim() == 3:
            init_masks = init_masks[:, None]
        if tuple(init_masks.shape) != (n, 1, h, w):
            raise ValueError(f"init_masks must be ({n}, 1, {h}, {w}), got {tuple(init_masks.shape)}")
        init_masks = init_masks.bool()
    k = len(cfg.init_sizes) if init_masks is None else 1
    iters = cfg.iters
    start = time.perf_counter()
    inpainter = inpainter or cfg.inpainter()

    # every (image, square) pair is an independent problem: flatten them into one list
    jobs = [(i, j) for i in range(n) for j in range(k)]
    squares = [centred_square(1, h, w, s) for s in cfg.init_sizes] if init_masks is None else None
    all_masks = torch.zeros(n, k, 1, h, w, dtype=torch.bool)
    all_err = torch.zeros(n, k, dtype=torch.float64)
    all_obj = torch.zeros(n, k, dtype=torch.float64)
    settled_at = torch.zeros(n, k, dtype=torch.long)
    period = torch.zeros(n, k, dtype=torch.long)
    hist_err = torch.zeros(n, k, iters + 1, dtype=torch.float64) if cfg.history else None
    hist_obj = torch.zeros(n, k, iters + 1, dtype=torch.float64) if cfg.history else None
    hist_masks = torch.zeros(n, k, iters + 1, 1, h, w, dtype=torch.bool) if cfg.keep_masks else None

    # squares still running per image, to know when an image's own choice is final
    remaining = torch.full((n,), k, dtype=torch.long)
    per_image = on_mask is not None and cfg.select == "image"

    def jobs_final(ii: torch.Tensor, jj: torch.Tensor, m, l_inp, objective):
        all_masks[ii, jj] = m.cpu()
        all_err[ii, jj] = l_inp.detach().double().cpu()
        all_obj[ii, jj] = objective.detach().double().cpu()
        if not per_image:
            return
        remaining.index_add_(0, ii, torch.full_like(ii, -1))
        for i in ii.unique().tolist():
            if remaining[i] == 0:
                remaining[i] = -1  # reported once
                on_mask(i, all_masks[i, int(select_init(all_err[i:i + 1], "image")[0])])

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc="IEM", unit="img", leave=False)
    for lo in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[lo:lo + cfg.batch_size]
        ii = torch.tensor([i for i, _ in chunk])
        jj = torch.tensor([j for _, j in chunk])
        xb = x[ii].to(device=device, dtype=dtype)
        m0 = (init_masks[ii] if squares is None else torch.cat([squares[j] for _, j in chunk])).to(device)
        if cfg.impl == "fast":
            def settled(rows, m, l_inp, objective, ii=ii, jj=jj):
                jobs_final(ii[rows], jj[rows], m, l_inp, objective)

            with torch.no_grad():
                m, l_inp, objective, loop = _run_fast(xb, m0, cfg, iters,
                                                      settled if per_image else None)
        else:
            m, l_inp, objective, loop = _run_reference(xb, m0, cfg, iters, inpainter)
            if per_image:
                jobs_final(ii, jj, m, l_inp, objective)
        all_masks[ii, jj] = m.cpu()
        all_err[ii, jj] = l_inp.detach().double().cpu()
        all_obj[ii, jj] = objective.detach().double().cpu()
        settled_at[ii, jj] = loop.settled_at
        period[ii, jj] = loop.period
        if cfg.history:
            hist_err[ii, jj] = loop.err
            hist_obj[ii, jj] = loop.obj
        if cfg.keep_masks:
            hist_masks[ii, jj] = loop.masks
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()

    idx = select_init(all_err, cfg.select)
    rows = torch.arange(n)
    if on_mask is not None and not per_image:
        for i in range(n):
            on_mask(i, all_masks[i, int(idx[i])])
    history = {}
    if cfg.history:
        history = {"inpainting_error": hist_err, "objective": hist_obj}
    if cfg.keep_masks:
        history["masks"] = hist_masks
    return IEMResult(
        masks=all_masks[rows, idx], inpainting_error=all_err[rows, idx], init_index=idx,
        init_sizes=cfg.init_sizes if init_masks is None else (0,), all_masks=all_masks, all_errors=all_err,
        all_objectives=all_obj, settled_at=settled_at, period=period, history=history,
        seconds=time.perf_counter() - start, config=cfg)


__all__ = ["IEMConfig", "IEMResult", "segment", "select_init", "ablations",
           "objective_variants", "resolve_device", "PAPER_INIT_SIZES"]
