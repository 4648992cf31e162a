"""The gated-convolution network as IEM's inpainter psi (the paper's Table 6).

:class:`GatedConvInpainter` is an inpainter callable ``(x_visible, mask_visible) ->
prediction`` like :class:`iemlib.inpainters.GaussianInpainter`, so
``segment(x, config, inpainter=GatedConvInpainter("model.pt"))`` runs IEM with it.
It lives in its own module, not beside the Gaussian one, because it carries what the
Gaussian does not: a checkpoint to read, a network to keep on the right device and
dtype, and optionally its own fine-tuning; ``inpainters.py`` stays free of networks.

Two optional methods let IEM's reference loop use it efficiently (a plain callable
still works):

* ``inpaint_both(x, mask)``: both inpaintings of an iteration in one forward pass of a
  doubled batch;
* ``adapt``: with :class:`FineTune`, a hook the loop calls before every evaluation of the
  objective (Table 6's last row); None otherwise.

The hole the network sees is the pixels that are not visible, ``1 - mask_visible``; the
prediction covers every pixel (IEM's objective reads it on the hole only). The network is
differentiable with respect to the mask (through the masked image, the hole channel and
the pasting between the stages), which is what IEM's autograd gradient needs.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch

from .checkpoints import CheckpointError, load, load_state
from .inpainter_task import TASK, GatedConvTaskConfig
from .nets.gatedconv import GatedConvGenerator, channels_last
from .objective import inpainting_error

OUTPUTS = ("refined", "coarse")


@dataclass(frozen=True)
class FineTune:
    """Fine-tuning during IEM, the min over psi of Eq. 4 interleaved with IEM's max over M.

    Before every evaluation of the objective at masks M_t (each iteration's forward pass
    and the final evaluation), the network takes ``steps_per_iter`` Adam steps (``lr``,
    ``betas``) on L_inp of Eq. 7 with the l1 numerator, averaged over the batch: each
    region inpainted from the other, on the current masks, detached. Every run (every
    batch IEM processes) starts again from the loaded weights and a fresh Adam state.

    The schedule: the paper does not state one. One step per IEM update alternates the
    two players one move each, as the pre-training alternates its discriminator and
    generator. lr 1e-5 is a tenth of the pre-training rate: Adam moves a weight by about
    lr per step, so a 150-iteration run stays a small change of the pre-trained inpainter
    (measured at cnum 8: no weight moved by more than 3e-3, against a median weight
    magnitude of 0.06) that adapts it to the images and masks at hand instead of
    re-learning it. The Adam betas are the pre-training's.
    """

    steps_per_iter: int = 1
    lr: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)

    def __post_init__(self):
        if not isinstance(self.steps_per_iter, int) or self.steps_per_iter < 1:
            raise ValueError(f"steps_per_iter must be a positive integer, got {self.steps_per_iter!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")


def load_generator(path) -> tuple[GatedConvGenerator, GatedConvTaskConfig]:
    """The generator of a "gatedconv" checkpoint or weights file (or a shipped name, see
    :mod:`iemlib.weights`), rebuilt from its ``task_config``. Every problem is a
    :class:`CheckpointError` naming the file."""
    path = weights_path(path)
    data = load(path, task=TASK)
    try:
        config = GatedConvTaskConfig.from_dict(data.get("task_config"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad task_config ({e})") from None
    if "generator" not in data["models"]:
        raise CheckpointError(f"{path}: holds no 'generator' model "
                              f"(has {sorted(data['models'])})")
    net = GatedConvGenerator(config.net)
    load_state(net, data["models"]["generator"], path, "generator")
    return net, config


def weights_path(spec):
    """The file behind ``spec``: a path, or a shipped name ("gatedconv", "gatedconv-l1")."""
    from . import weights
    try:
        return weights.resolve(spec)
    except weights.MissingWeightsError as e:
        raise CheckpointError(str(e)) from None


class GatedConvInpainter:
    """IEM's inpainter from a trained gated-convolution generator.

    source: a checkpoint or weights file of the "gatedconv" task, the name of weights
        shipped with the package ("gatedconv": L1 + SN-PatchGAN, "gatedconv-l1": L1 only;
        :mod:`iemlib.weights`), or a
        :class:`~iemlib.nets.gatedconv.GatedConvGenerator` (copied: the caller's module is
        never modified, moved or trained).
    output: "refined" (the full model) or "coarse" (only the coarse network runs).
    finetune: a :class:`FineTune` for Table 6's last row, else None (weights fixed).

    Calls follow the inputs' device and dtype (a copy of the network is made for each).
    ``x_visible`` (N, 3, H, W) with hidden pixels zeroed, ``mask_visible`` (N, 1, H, W)
    float, 1 = visible; H, W multiples of 8. Returns (N, 3, H, W).
    """

    def __init__(self, source, output: str = "refined", finetune: FineTune | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if isinstance(source, GatedConvGenerator):
            net, self.task_config = copy.deepcopy(source), None
        elif isinstance(source, (str, os.PathLike)):
            net, self.task_config = load_generator(source)
        else:
            raise TypeError(f"source must be a checkpoint path or a GatedConvGenerator, "
                            f"got {type(source).__name__}")
        self.output = output
        self.finetune = finetune
        self._pretrained = net.eval().requires_grad_(False)
        self._copies: dict = {}          # (device, dtype) -> fixed network
        self._tuned = None               # the network being fine-tuned in the current run
        self._optimizer = None

    # ------------------------------------------------------------------ predictions
    def network(self, like: torch.Tensor) -> GatedConvGenerator:
        """The network that predicts for inputs like ``like``: the one being fine-tuned
        during (and after) a fine-tuned run, else the loaded one on like's device and dtype."""
        if self._tuned is not None and _matches(self._tuned, like):
            return self._tuned
        key = (like.device, like.dtype)
        if key not in self._copies:
            self._copies[key] = _copy(self._pretrained, like)
        return self._copies[key]

    def _predict(self, net, x_visible, mask_visible):
        x_visible, hole = channels_last(x_visible), channels_last(1 - mask_visible)
        out = net(x_visible, hole, coarse_only=self.output == "coarse")
        return out.coarse if self.output == "coarse" else out.refined

    def __call__(self, x_visible: torch.Tensor, mask_visible: torch.Tensor) -> torch.Tensor:
        return self._predict(self.network(x_visible), x_visible, mask_visible)

    def _both(self, net, x, mask):
        n = x.shape[0]
        visible = torch.cat([1 - mask, mask])      # foreground hidden, then background hidden
        pred = self._predict(net, torch.cat([x, x]) * visible, visible)
        return pred[:n], pred[n:]

    def inpaint_both(self, x: torch.Tensor, mask: torch.Tensor):
        """Both inpaintings of IEM in one forward pass: x (N, 3, H, W), mask (N, 1, H, W)
        float (1 = foreground) -> (psi(x (1 - M), 1 - M), psi(x M, M)), each (N, 3, H, W):
        the foreground predicted from the background, then the background from the
        foreground. Equal to two calls up to floating-point rounding."""
        return self._both(self.network(x), x, mask)

    # ------------------------------------------------------------------ fine-tuning
    @property
    def adapt(self):
        """With fine-tuning, the hook ``adapt(x, masks, t)`` IEM's loop calls before it
        evaluates the objective at the masks of iteration t (t = 0 starts a new run);
        None without fine-tuning, which tells the loop the inpainter never changes."""
        return self._finetune_steps if self.finetune is not None else None

    def _finetune_steps(self, x: torch.Tensor, masks: torch.Tensor, t: int) -> None:
        if t == 0 or self._tuned is None or not _matches(self._tuned, x):
            self._tuned = _copy(self._pretrained, x).requires_grad_(True)
            self._optimizer = torch.optim.Adam(self._tuned.parameters(), lr=self.finetune.lr,
                                               betas=self.finetune.betas)
        x, m = x.detach(), masks.detach().to(x.dtype)
        with torch.enable_grad():
            for _ in range(self.finetune.steps_per_iter):
                pred_fg, pred_bg = self._both(self._tuned, x, m)
                loss = inpainting_error(x, m, pred_fg, pred_bg).mean()
                self._optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._optimizer.step()


def _copy(net: GatedConvGenerator, like: torch.Tensor) -> GatedConvGenerator:
    """A copy of ``net`` on like's device and dtype, its weights in channels-last layout
    (faster; see :func:`~iemlib.nets.gatedconv.channels_last`)."""
    return copy.deepcopy(net).to(device=like.device, dtype=like.dtype,
                                 memory_format=torch.channels_last)


def _matches(net: torch.nn.Module, like: torch.Tensor) -> bool:
    p = next(net.parameters())
    return p.device == like.device and p.dtype == like.dtype


__all__ = ["GatedConvInpainter", "FineTune", "load_generator", "weights_path", "OUTPUTS"]
