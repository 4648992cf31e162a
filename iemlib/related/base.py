"""What every method of :mod:`iemlib.related` shares: the result type, turning a k-cluster
map into foreground / background without labels, the oracle merge (an upper bound that
reads the ground truth), and the Hungarian alignment of two label maps.

Images in, masks out, the same way for every method::

    result = method.segment(x, config)    # x (N, 3, H, W) float in [-1, 1]
    result.masks                          # (N, 1, H, W) bool, True = foreground
    result.labels                         # (N, H, W) int64 cluster map (None for 2-region methods)
    result.seconds_per_image

The metrics score the better of (mask, 1 - mask) per image (the convention of ReDO and
IEM), so for a method with two clusters which one is called foreground does not change a
score; with k > 2 clusters the *merge* matters, and :func:`border_rule` decides it.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..images import UNKNOWN


@dataclass
class MethodResult:
    """The output of any method: ``masks`` (N, 1, H, W) bool; ``labels`` (N, H, W) int64
    cluster ids (None when the method segments into two regions directly); ``seconds``
    the wall time of the whole call (training included); ``info`` what the method wants
    to report (iterations per image, training log, selected checkpoint ...)."""

    masks: torch.Tensor
    seconds: float
    labels: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.masks.shape[0])


def as_images(x) -> torch.Tensor:
    """``x`` as a float32 (N, 3, H, W) tensor; one clear error otherwise."""
    x = torch.as_tensor(x)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W) in [-1, 1], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no images to segment")
    return x.float()


class Clock:
    """Wall time of a call, synchronising CUDA so that queued kernels are counted."""

    def __init__(self, device: torch.device | None = None):
        self.device = device
        self.start = time.perf_counter()

    def seconds(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.start


#: progress(total, description) -> an object with update(n) and close(), e.g. tqdm
Progress = Callable[[int, str], object]


def tqdm_progress(total: int, desc: str):
    import sys

    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


@contextmanager
def training_folder(out_dir, method: str):
    """Where a set-trained method keeps its checkpoint and log: ``out_dir`` (created; a
    rerun resumes there), or a temporary folder removed on exit. Yields (folder, kept).
    Under torchrun the processes must share a folder, so ``out_dir`` is required; an
    interruption inside a temporary folder says that nothing was kept."""
    from .. import distributed as dist
    from ..training import TrainingInterrupted
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder, True
        return
    if dist.world_size() > 1:
        raise ValueError(f"{method} under torchrun needs an out_dir that every process shares")
    with tempfile.TemporaryDirectory(prefix=f"iem-{method.lower()}-") as tmp:
        try:
            yield Path(tmp), False
        except TrainingInterrupted as err:
            raise TrainingInterrupted(f"{method} interrupted; its training was in a temporary folder "
                                      "and is not kept (give an out_dir, --work-dir, to resume)",
                                      err.signum) from None


def per_image(x: torch.Tensor, fit, desc: str, progress=None) -> list:
    """``fit(image)`` for every image (3, H, W) of ``x``, in order, with a bar from
    ``progress(total, desc)`` when given: the loop of the methods that learn per image."""
    bar = progress(x.shape[0], desc) if progress else None
    out = []
    for image in x:
        out.append(fit(image))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return out


# --------------------------------------------------------------------- k clusters -> mask
def compact_labels(labels: torch.Tensor) -> torch.Tensor:
    """Renumber each image's cluster ids to 0 .. k-1 in order of first appearance in
    raster order, so that equal partitions get equal maps. (N, H, W) -> (N, H, W) int64."""
    out = torch.empty_like(labels, dtype=torch.int64)
    for i, lab in enumerate(labels):
        flat = lab.reshape(-1).cpu().numpy()
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))
        out[i] = torch.from_numpy(rank[inverse].reshape(lab.shape))
    return out


def border_width(h: int, w: int) -> int:
    """The border band of the rule: an eighth of the shorter side (16 px at 128), wide
    enough that the thin clusters a network's zero padding makes along the image edge do
    not hide the background cluster just inside them."""
    return max(1, min(h, w) // 8)


def border_fraction(labels: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, float]:
    """For one (H, W) cluster map: the share of each cluster's pixels that lie in the
    image border band of ``width`` pixels (default :func:`border_width`) ((k,) for ids
    0 .. k-1), and the share of all pixels in that band (what a cluster spread evenly
    over the image would have)."""
    h, w = labels.shape
    width = width or border_width(h, w)
    band = torch.zeros(h, w, dtype=torch.bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    k = int(labels.max()) + 1
    total = torch.bincount(labels.reshape(-1), minlength=k).double()
    on_band = torch.bincount(labels[band], minlength=k).double()
    share = torch.where(total > 0, on_band / total.clamp_min(1), torch.full_like(total, float("inf")))
    return share, float(band.sum()) / (h * w)


def border_rule(labels: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Foreground without labels: a cluster is foreground when its pixels lie in the
    image's border band (:func:`border_width`) at most half as often as an evenly spread
    cluster's would (the object of a photograph is framed by background); the others are
    background. (Half, not "less often": a background that fills most of the image, inside
    a thin edge cluster, lies in the band almost exactly as often as an even spread.) When that leaves no foreground,
    the cluster that touches the border least is foreground; when it leaves no background,
    the one that touches it most is background.

    labels (N, H, W) integer -> masks (N, 1, H, W) bool."""
    labels = compact_labels(torch.as_tensor(labels).cpu())
    out = torch.zeros(labels.shape[0], 1, *labels.shape[1:], dtype=torch.bool)
    for i, lab in enumerate(labels):
        share, even = border_fraction(lab, width)
        fg = share <= even / 2
        if not bool(fg.any()):
            fg[int(share.argmin())] = True
        if bool(fg.all()) and fg.numel() > 1:
            fg[int(share.argmax())] = False
        out[i, 0] = fg[lab]
    return out


def oracle_merge(labels: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The UPPER BOUND that reads the ground truth: per image, the union of clusters with
    the highest IoU against the ground truth (unknown pixels ignored).

    IoU = sum_c tp_c / (|G| + sum_c fp_c) over the chosen clusters is a ratio of two sums,
    so the best choice is a prefix of the clusters sorted by tp_c / fp_c: trying every
    prefix finds the exact optimum in k steps, for any k. (The complement of a union of
    clusters is a union of clusters too, so this also covers the flip the metrics make.)

    labels (N, H, W) integer, gt (N, 1, H, W) or (N, H, W) uint8 / bool -> (N, 1, H, W) bool."""
    labels = compact_labels(torch.as_tensor(labels).cpu())
    gt = torch.as_tensor(gt).cpu()
    if gt.dim() == 4:
        gt = gt[:, 0]
    out = torch.zeros(labels.shape[0], 1, *labels.shape[1:], dtype=torch.bool)
    for i, (lab, g) in enumerate(zip(labels, gt)):
        valid = g != UNKNOWN if g.dtype == torch.uint8 else torch.ones_like(g, dtype=torch.bool)
        fg = ((g == 1) if g.dtype == torch.uint8 else g.bool()) & valid
        k = int(lab.max()) + 1
        tp = torch.bincount(lab[fg], minlength=k).double()
        fp = torch.bincount(lab[valid & ~fg], minlength=k).double()
        order = torch.argsort(tp / fp.clamp_min(1e-9), descending=True, stable=True)
        iou = torch.cumsum(tp[order], 0) / (float(fg.sum()) + torch.cumsum(fp[order], 0)).clamp_min(1e-9)
        chosen = torch.zeros(k, dtype=torch.bool)
        chosen[order[:int(iou.argmax()) + 1]] = True
        out[i, 0] = chosen[lab]
    return out


# ------------------------------------------------------------------- Hungarian alignment
def overlap_matrix(source: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """S[i, j] = number of pixels with source label i and target label j. (k, k) int64."""
    idx = source.reshape(-1).long() * k + target.reshape(-1).long()
    return torch.bincount(idx, minlength=k * k).reshape(k, k)


def hungarian_map(source: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """The one-to-one relabelling of ``source``'s k labels that overlaps ``target`` most
    (the Hungarian algorithm on the overlap matrix, scipy's ``linear_sum_assignment``):
    a (k,) permutation ``p`` with ``p[source]`` in target's label space."""
    from scipy.optimize import linear_sum_assignment
    s = overlap_matrix(source, target, k).cpu().numpy()
    rows, cols = linear_sum_assignment(s, maximize=True)
    perm = torch.empty(k, dtype=torch.int64)
    perm[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return perm.to(source.device)


def align_labels(source: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """``source`` relabelled into ``target``'s label space (see :func:`hungarian_map`)."""
    return hungarian_map(source, target, k)[source.long()]
