"""Segmentation metrics with the ReDO convention used by the IEM paper and code.

Per image, the predicted foreground is compared with the ground truth; because an
unsupervised method cannot know which region is the object, the better of (mask,
1 - mask) is scored, and the scores are averaged over images. Ground-truth pixels equal to
:data:`iemlib.images.UNKNOWN` (255; 128 in the mask files) are excluded from every count.

Two readings of "the better of" exist, and they differ only for accuracy:

* ``flip="joint"`` (default): one orientation per image, the one with the higher IoU
  (equivalently DICE, a monotone function of IoU), and all three metrics of that
  orientation. This reproduces the reference figures measured with the authors' code on
  this project's shared sets (accuracy 72.7 / 76.5 on Weizmann Horse / GrabCut).
* ``flip="per_metric"``: each metric takes its own maximum, as the ``compute_performance``
  function published with the authors' code is written. Accuracy can then come from the
  other orientation than IoU; it reads higher (73.6 / 79.1 on the same masks).

IoU and DICE are the same under both.

An image whose ground truth has no labelled pixel (all unknown) has nothing to score: its
per-image values are NaN, it is left out of the means and counted apart
(``summary()["unlabelled"]``); scoring it as a perfect 100 would raise every mean.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .images import UNKNOWN


@dataclass
class Scores:
    """Per-image scores (fractions in [0, 1], arrays of shape (N,)).

    acc, iou, dice: the ReDO convention (best of mask and flipped mask).
    iou_direct: IoU of the mask as predicted, no flip.
    miou: mean of the (flip-convention) IoU against the ground truth and against the
    inverted ground truth.
    labelled: (N,) bool, False where the ground truth has no labelled pixel; those
    images hold NaN in every array above. None means all are labelled."""

    acc: np.ndarray
    iou: np.ndarray
    dice: np.ndarray
    iou_direct: np.ndarray
    miou: np.ndarray
    labelled: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.acc)

    def _scored(self) -> np.ndarray:
        return np.ones(len(self), bool) if self.labelled is None else np.asarray(self.labelled, bool)

    def summary(self) -> dict:
        """Means over the scored images, in percent; ``n``: how many were scored;
        ``unlabelled``: how many were left out for having no labelled pixel."""
        scored = self._scored()
        out = {"n": int(scored.sum()), "unlabelled": int((~scored).sum())}
        for k in ("acc", "iou", "dice", "iou_direct", "miou"):
            values = np.asarray(getattr(self, k))[scored]
            out[k] = float(100 * np.mean(values)) if len(values) else float("nan")
        return out

    def __str__(self) -> str:
        s = self.summary()
        apart = f" ({s['unlabelled']} without labelled pixels left out)" if s["unlabelled"] else ""
        return (f"n={s['n']}{apart}  accuracy {s['acc']:.1f}  IoU {s['iou']:.1f}  DICE {s['dice']:.1f}"
                f"  (IoU without flip {s['iou_direct']:.1f}, mIoU {s['miou']:.1f})")


def _as_nhw(t, name) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if t.dim() == 4:
        if t.shape[1] != 1:
            raise ValueError(f"{name} must have one channel, got shape {tuple(t.shape)}")
        t = t[:, 0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"{name} must have shape (N, 1, H, W) or (N, H, W), got {tuple(t.shape)}")
    return t


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # an empty union (or empty prediction and truth) means both agree perfectly
    return torch.where(den > 0, num / den.clamp_min(1), torch.ones_like(num))


def _iou(p, g, valid):
    inter = (p & g & valid).sum((1, 2)).double()
    union = ((p | g) & valid).sum((1, 2)).double()
    return _ratio(inter, union)


def _dice(p, g, valid):
    inter = (p & g & valid).sum((1, 2)).double()
    total = ((p & valid).sum((1, 2)) + (g & valid).sum((1, 2))).double()
    return _ratio(2 * inter, total)


FLIPS = ("joint", "per_metric")


def evaluate(masks, gt, flip: str = "joint") -> Scores:
    """masks: (N, 1, H, W) predicted foreground (bool, or floats thresholded at 0.5);
    gt: (N, 1, H, W) with 1 foreground, 0 background, 255 unknown (excluded);
    flip: "joint" or "per_metric" (see the module docstring).
    Returns per-image :class:`Scores`; ``scores.summary()`` gives the means in percent."""
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
    masks, gt = _as_nhw(masks, "masks"), _as_nhw(gt, "ground truth")
    if masks.shape != gt.shape:
        raise ValueError(f"masks {tuple(masks.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    p = masks >= 0.5 if torch.is_floating_point(masks) else masks.bool()
    g_raw = gt.to(torch.int64)
    valid = g_raw != UNKNOWN
    g = (g_raw == 1) & valid
    q = ~p
    n_valid = valid.sum((1, 2)).double()
    acc_p = _ratio(((p == g) & valid).sum((1, 2)).double(), n_valid)
    acc_q = _ratio(((q == g) & valid).sum((1, 2)).double(), n_valid)
    iou_direct, iou_q = _iou(p, g, valid), _iou(q, g, valid)
    iou = torch.maximum(iou_direct, iou_q)
    dice = torch.maximum(_dice(p, g, valid), _dice(q, g, valid))
    if flip == "joint":
        acc = torch.where(iou_direct >= iou_q, acc_p, acc_q)
    else:
        acc = torch.maximum(acc_p, acc_q)
    g_inv = ~g & valid
    iou_inv = torch.maximum(_iou(p, g_inv, valid), _iou(q, g_inv, valid))
    labelled = n_valid > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64)

    def scored(v):
        return torch.where(labelled, v, nan).numpy()

    return Scores(acc=scored(acc), iou=scored(iou), dice=scored(dice),
                  iou_direct=scored(iou_direct), miou=scored((iou + iou_inv) / 2),
                  labelled=labelled.numpy())
