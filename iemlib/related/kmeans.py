"""k-means on colour, per image: the simplest unsupervised segmentation, the floor of the table.

Each image's pixels are clustered by their RGB colour alone (no position) into ``k``
clusters (2 by default: foreground / background) with Lloyd's algorithm. The start is
deterministic and needs no seed: the first centre is the pixel farthest from the image's
mean colour, each next one the pixel farthest from the centres so far (farthest-point
seeding). All images of a batch run together on the device.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..iem import resolve_device
from .base import Clock, MethodResult, as_images, border_rule


@dataclass(frozen=True)
class KMeansConfig:
    """k: clusters per image; iters: at most this many Lloyd steps (stops earlier when no
    pixel changes cluster); batch_size: images clustered together; device: None for CUDA
    when present."""

    k: int = 2
    iters: int = 50
    batch_size: int = 64
    device: str | None = None

    def __post_init__(self):
        if self.k < 2:
            raise ValueError(f"k-means needs k >= 2 clusters, got {self.k}")
        if self.iters < 1 or self.batch_size < 1:
            raise ValueError("k-means iters and batch_size must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def _seed_centres(p: torch.Tensor, k: int) -> torch.Tensor:
    """Farthest-point seeding. p (B, P, 3) -> centres (B, k, 3)."""
    mean = p.mean(1, keepdim=True)
    far = ((p - mean) ** 2).sum(-1)                      # (B, P)
    centres = [p[torch.arange(p.shape[0]), far.argmax(1)]]
    dist = ((p - centres[0][:, None]) ** 2).sum(-1)
    for _ in range(1, k):
        centres.append(p[torch.arange(p.shape[0]), dist.argmax(1)])
        dist = torch.minimum(dist, ((p - centres[-1][:, None]) ** 2).sum(-1))
    return torch.stack(centres, 1)


def cluster(x: torch.Tensor, k: int = 2, iters: int = 50) -> torch.Tensor:
    """Colour k-means of every image of ``x`` (B, 3, H, W) -> labels (B, H, W) int64."""
    b, c, h, w = x.shape
    p = x.reshape(b, c, h * w).transpose(1, 2).double()   # (B, P, 3)
    centres = _seed_centres(p, k)
    labels = None
    for _ in range(iters):
        new = torch.cdist(p, centres).argmin(-1)           # (B, P)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        one_hot = torch.nn.functional.one_hot(labels, k).double()   # (B, P, k)
        count = one_hot.sum(1)                                      # (B, k)
        sums = one_hot.transpose(1, 2) @ p                          # (B, k, 3)
        # an emptied cluster keeps its centre instead of dividing by zero
        centres = torch.where(count[..., None] > 0, sums / count.clamp_min(1)[..., None], centres)
    return labels.reshape(b, h, w)


def segment(x, config: KMeansConfig | None = None, progress=None) -> MethodResult:
    """k-means on colour; masks by :func:`~iemlib.related.base.border_rule`."""
    cfg = config or KMeansConfig()
    x = as_images(x)
    dev = resolve_device(cfg.device)
    clock = Clock(dev)
    bar = progress(x.shape[0], "k-means") if progress else None
    labels = []
    for i in range(0, x.shape[0], cfg.batch_size):
        labels.append(cluster(x[i:i + cfg.batch_size].to(dev), cfg.k, cfg.iters).cpu())
        if bar:
            bar.update(labels[-1].shape[0])
    if bar:
        bar.close()
    labels = torch.cat(labels)
    masks = border_rule(labels)
    return MethodResult(masks=masks, labels=labels, seconds=clock.seconds(), info={"k": cfg.k})
