"""Unsupervised segmentation by backpropagation (Kanezaki, ICASSP 2018) and its 2020
successor with a spatial continuity loss (Kim, Kanezaki & Tanaka, IEEE TIP 2020).

Per image, a small fully convolutional network is trained from scratch on that image
alone, against targets it makes itself:

1. the response ``y = f(x)`` has q = 100 channels per pixel; the target of a pixel is its
   arg-max channel ``c_n = argmax_j y_nj``;
2. (2018) the targets are made spatially coherent with superpixels: inside each SLIC
   superpixel, every pixel takes the superpixel's majority label;
3. the loss is the cross-entropy of the response against those targets; (TIP) plus
   ``mu`` x the mean absolute difference of the response between vertical and horizontal
   neighbours, which replaces the superpixels:

       L = CE(y, c)                                                   (2018)
       L = CE(y, c) + mu (mean |y[i+1, j] - y[i, j]| + mean |y[i, j+1] - y[i, j]|)   (TIP)

4. SGD (lr 0.1, momentum 0.9) for at most 1,000 iterations, stopping as soon as the
   targets hold ``min_labels`` (3) labels or fewer.

The network: 3x3 conv 3->100, ReLU, batch norm, then (n_conv - 1) x [3x3 conv 100->100,
ReLU, BN], then 1x1 conv 100->100, BN. Batch norm runs in training mode throughout (one
image: statistics over its pixels), as in the authors' code. Input: RGB in [0, 1]. Every
layer is trained, as the papers describe the method; the 2018 demo code keeps its middle
layers in a plain Python list, so its optimiser never sees them and they stay at their
random initialisation (the 2020 code registers them); that quirk is not reproduced.

Unlike IEM, the output is a label map with any number of clusters (about three when the
stopping rule fired: the rule looks at the targets before the last step, the map is
taken after it; more when the iterations ran out); the masks come from
:func:`~iemlib.related.base.border_rule`.

**Superpixels at 128 x 128.** The authors' 10,000 SLIC segments were set for images of
Berkeley-segmentation size (481 x 321, about 15 pixels per superpixel). At 128 x 128 the
same count would make superpixels of 1.6 pixels, i.e. no superpixels at all; by default
(``slic_segments=None``) the count keeps the authors' superpixel *size*:
10,000 x H x W / (481 x 321), 1,061 at 128 x 128. ``slic_segments=10000`` is the literal
setting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..iem import resolve_device
from .base import Clock, MethodResult, as_images, border_rule, compact_labels, per_image

#: the image area the authors' 10,000 superpixels were chosen for (BSD500, 481 x 321)
AUTHORS_AREA = 481 * 321


@dataclass(frozen=True)
class KanezakiConfig:
    """Every setting; defaults are the 2018 paper's code (``tip()`` gives the 2020 one).

    channels: q, the response's channels (100); n_conv: 3x3 convolutions (2); lr,
    momentum: SGD; max_iters: per image (1,000); min_labels: stop when the targets have
    this many labels or fewer (3); slic: superpixel targets (2018) or not (TIP);
    slic_segments: None keeps the authors' superpixel size (see the module notes);
    compactness: SLIC's (100); continuity: mu, the weight of the continuity loss (0 in
    2018; 1 in the TIP code's demo.py, 5 in its demo_ref.py); seed: every image's network
    starts from the same seeded initialisation, so a mask depends on its image alone;
    device: None for CUDA when present."""

    channels: int = 100
    n_conv: int = 2
    lr: float = 0.1
    momentum: float = 0.9
    max_iters: int = 1000
    min_labels: int = 3
    slic: bool = True
    slic_segments: int | None = None
    compactness: float = 100.0
    continuity: float = 0.0
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.channels < 2 or self.n_conv < 1 or self.max_iters < 1 or self.min_labels < 1:
            raise ValueError("Kanezaki: channels >= 2, n_conv >= 1, max_iters >= 1 and "
                             "min_labels >= 1 are required")
        if self.continuity < 0:
            raise ValueError(f"Kanezaki: continuity must be >= 0, got {self.continuity}")

    @classmethod
    def tip(cls, **changes) -> "KanezakiConfig":
        """The 2020 version: no superpixels, continuity loss with mu = 1 (demo.py)."""
        return replace(cls(slic=False, continuity=1.0), **changes)

    def to_dict(self) -> dict:
        return asdict(self)


class KanezakiNet(nn.Module):
    """The per-image network. (N, 3, H, W) in [0, 1] -> response (N, q, H, W)."""

    def __init__(self, channels: int = 100, n_conv: int = 2, in_channels: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels)]
        for _ in range(n_conv - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(channels)]
        layers += [nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def superpixels(image: torch.Tensor, segments: int | None, compactness: float) -> torch.Tensor:
    """SLIC superpixels (scikit-image) of one image (3, H, W) in [-1, 1] -> (H, W) int64."""
    from skimage.segmentation import slic
    h, w = image.shape[-2:]
    n = segments if segments is not None else max(1, round(10000 * h * w / AUTHORS_AREA))
    rgb = ((image.detach().cpu().numpy().transpose(1, 2, 0) + 1) / 2).clip(0, 1)
    # the authors' call: slic(image, compactness, n_segments), scikit-image's other defaults
    # (which convert to Lab and blur with sigma 0)
    return torch.from_numpy(slic(rgb, n_segments=n, compactness=compactness,
                                 start_label=0).astype(np.int64))


def majority(target: torch.Tensor, spx: torch.Tensor, k: int) -> torch.Tensor:
    """Every pixel takes the majority label of its superpixel (ties: the smaller label).
    target, spx (P,) int64 -> (P,) int64."""
    n_sp = int(spx.max()) + 1
    counts = torch.bincount(spx * k + target, minlength=n_sp * k).reshape(n_sp, k)
    return counts.argmax(1)[spx]


def continuity_loss(y: torch.Tensor) -> torch.Tensor:
    """Mean |vertical difference| + mean |horizontal difference| of y (N, q, H, W)."""
    return (y[:, :, 1:] - y[:, :, :-1]).abs().mean() + (y[:, :, :, 1:] - y[:, :, :, :-1]).abs().mean()


def fit_one(image: torch.Tensor, cfg: KanezakiConfig, dev: torch.device) -> tuple[torch.Tensor, int]:
    """Train a fresh network on one image (3, H, W) in [-1, 1]; its final label map
    (H, W) int64 and the number of iterations run."""
    with torch.random.fork_rng(devices=[]):   # seeded, without touching the caller's generator
        torch.manual_seed(cfg.seed)
        net = KanezakiNet(cfg.channels, cfg.n_conv)
    net = net.to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    data = ((image + 1) / 2).to(dev)[None]
    spx = superpixels(image, cfg.slic_segments, cfg.compactness).reshape(-1).to(dev) if cfg.slic else None
    it = 0
    for it in range(1, cfg.max_iters + 1):
        opt.zero_grad(set_to_none=True)
        y = net(data)
        flat = y[0].permute(1, 2, 0).reshape(-1, cfg.channels)
        target = flat.detach().argmax(1)
        n_labels = int(torch.unique(target).numel())
        if spx is not None:
            target = majority(target, spx, cfg.channels)
        loss = F.cross_entropy(flat, target)
        if cfg.continuity:
            loss = loss + cfg.continuity * continuity_loss(y)
        loss.backward()
        opt.step()
        if n_labels <= cfg.min_labels:
            break
    with torch.no_grad():
        labels = net(data)[0].argmax(0)
    return labels.cpu(), it


def segment(x, config: KanezakiConfig | None = None, progress=None) -> MethodResult:
    """Each image on its own (see the module notes); masks by the border rule."""
    cfg = config or KanezakiConfig()
    x = as_images(x)
    dev = resolve_device(cfg.device)
    clock = Clock(dev)
    fits = per_image(x, lambda image: fit_one(image, cfg, dev),
                     "Kanezaki" if cfg.slic else "Kanezaki TIP", progress)
    labels = compact_labels(torch.stack([lab for lab, _ in fits]))
    iters = [it for _, it in fits]
    return MethodResult(masks=border_rule(labels), labels=labels, seconds=clock.seconds(),
                        info={"iterations": iters,
                              "clusters": [int(lab.max()) + 1 for lab in labels]})
