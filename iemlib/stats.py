"""Uncertainty of the series' table means: percentile bootstrap intervals over images.

A table mean over a few dozen or a few hundred images moves by points when other images
are drawn; these intervals say by how much. Two rows computed on the same images are
compared by the mean of their per-image differences, resampled as pairs, which is far
tighter than two separate intervals (the images' difficulty is shared and cancels).

Values are per-image scores (any scale); NaN entries (images without a label) are left
out, pairwise in :func:`paired_difference`. Every draw comes from ``numpy``'s seeded
generator: the same inputs give the same interval on any machine.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Interval(NamedTuple):
    """A mean and its bootstrap interval (``lo``, ``hi``) at ``level``, over ``n`` values."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.mean:.1f} [{self.lo:.1f}, {self.hi:.1f}]"

    def signed(self) -> str:
        """For differences: ``+1.2 [-0.3, +2.8]``."""
        return f"{self.mean:+.1f} [{self.lo:+.1f}, {self.hi:+.1f}]"


def _values(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=float).reshape(-1)
    return a


def _interval(a: np.ndarray, draws: int, seed: int, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(a) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0, level)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, len(a), (draws, len(a)))].mean(1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return Interval(float(a.mean()), float(lo), float(hi), len(a), level)


def bootstrap_mean(values, draws: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The mean of ``values`` (N,) and its percentile bootstrap interval (NaN left out)."""
    a = _values(values)
    return _interval(a[~np.isnan(a)], draws, seed, level)


def paired_difference(before, after, draws: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Interval:
    """The mean of ``after - before`` over images (two (N,) scores of the same images, in
    the same order) and its interval, the images resampled as pairs. An interval that
    excludes 0 means the difference is larger than the choice of images explains."""
    a, b = _values(before), _values(after)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have one value per image each, got {a.shape} and {b.shape}")
    d = b - a
    return _interval(d[~np.isnan(d)], draws, seed, level)


__all__ = ["Interval", "bootstrap_mean", "paired_difference"]
