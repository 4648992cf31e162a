"""ReDO's mask network, the segmentation network of IEM's refinement phase (paper 3.3, 4.2).

The architecture of ReDO's ``_netEncM`` (Chen et al., NeurIPS 2019) with the settings IEM
uses: 64 feature channels, three residual blocks, one output channel. Instance norm
(affine) replaces batch norm everywhere, so a sample's output never depends on the other
samples of its batch, and several processes give the same results as one.

    encoder   reflect-pad 3, 7x7 conv 3->16, IN, ReLU          (N, 16, 128, 128)
              3x3 stride-2 conv 16->32, IN, ReLU                (N, 32,  64,  64)
              3x3 stride-2 conv 32->64, IN, ReLU                (N, 64,  32,  32)
    residual  3 x [3x3 conv, IN, ReLU, 3x3 conv (bias), + input, IN, ReLU]   (N, 64, 32, 32)
    pyramid   average pools giving 1x1, 2x2, 3x3, 6x6 (kernels 32, 16, 10, 5 = stride),
              each a 1x1 conv 64->1, bilinear back to 32x32; concatenated  (N, 68, 32, 32)
    decoder   nearest x2, 3x3 conv 68->34, IN, ReLU               (N, 34,  64,  64)
              nearest x2, 3x3 conv 34->17, IN, ReLU               (N, 17, 128, 128)
              reflect-pad 3, 7x7 conv 17->1 (bias)                (N,  1, 128, 128) logits

Convolutions followed by instance norm have no bias (the norm's shift replaces it).
274,966 parameters at the defaults. The pooling kernels follow ReDO's rule for a feature map
of side s = size / 4: s, s // 2, s // 3, s // 6, each with stride = kernel. Bilinear
up-sampling uses ``align_corners=False``, PyTorch's default since 0.4 (ReDO's code relied
on the default).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class SegNetConfig:
    """Everything that shapes the network; a checkpoint's ``task_config["net"]``.

    ``width``: channels after the encoder (ReDO's ``nf``; the others are width/4, width/2
    and, in the decoder, (width+4)/2, (width+4)/4); ``blocks``: residual blocks; ``size``:
    the side of the square input images (a multiple of 4, at least 24 so that the finest
    pyramid pool has a kernel of one pixel or more)."""

    width: int = 64
    blocks: int = 3
    size: int = 128
    in_channels: int = 3

    def __post_init__(self):
        if self.width < 4 or self.width % 4:
            raise ValueError(f"SegNet width must be a positive multiple of 4, got {self.width}")
        if self.blocks < 0:
            raise ValueError(f"SegNet blocks must be >= 0, got {self.blocks}")
        if self.size < 24 or self.size % 4:
            raise ValueError(f"SegNet size must be a multiple of 4 and at least 24, got {self.size}")
        if self.in_channels < 1:
            raise ValueError(f"SegNet in_channels must be positive, got {self.in_channels}")

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_norm_relu(cin: int, cout: int, kernel: int, stride: int = 1,
                    padding: int | None = None) -> list[nn.Module]:
    pad = kernel // 2 if padding is None else padding
    return [nn.Conv2d(cin, cout, kernel, stride, pad, bias=False),
            nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]


class ResidualBlock(nn.Module):
    """x -> relu(IN(x + conv(relu(IN(conv(x)))))), shape-preserving: (N, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_norm_relu(channels, channels, 3),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=True))
        # the norm comes after the sum, as in ReDO's block
        self.after = nn.Sequential(nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.body(x) + x)


class PyramidPooling(nn.Module):
    """Global context at four scales: (N, C, s, s) -> (N, 4, s, s), one map per scale."""

    def __init__(self, channels: int, side: int):
        super().__init__()
        self.side = side
        self.kernels = (side, side // 2, side // 3, side // 6)
        self.proj = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in self.kernels)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        maps = [F.interpolate(conv(F.avg_pool2d(f, k, k)), size=(self.side, self.side),
                              mode="bilinear", align_corners=False)
                for k, conv in zip(self.kernels, self.proj)]
        return torch.cat(maps, 1)


class SegNet(nn.Module):
    """ReDO's mask network: images (N, C, S, S) in [-1, 1] -> foreground (N, 1, S, S).

    ``model(x)`` gives probabilities in (0, 1); ``model(x, logits=True)`` the logits before
    the sigmoid, for a numerically stable ``binary_cross_entropy_with_logits``. Both go
    through ``forward`` on purpose: DistributedDataParallel synchronises gradients only
    through calls of the (wrapped) module itself, never through other methods."""

    def __init__(self, config: SegNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or SegNetConfig()
        w = cfg.width
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), *_conv_norm_relu(cfg.in_channels, w // 4, 7, padding=0),
            *_conv_norm_relu(w // 4, w // 2, 3, stride=2),
            *_conv_norm_relu(w // 2, w, 3, stride=2))
        self.residual = nn.Sequential(*(ResidualBlock(w) for _ in range(cfg.blocks)))
        self.pyramid = PyramidPooling(w, cfg.size // 4)
        wd = w + len(self.pyramid.kernels)
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), *_conv_norm_relu(wd, wd // 2, 3),
            nn.Upsample(scale_factor=2, mode="nearest"), *_conv_norm_relu(wd // 2, wd // 4, 3),
            nn.ReflectionPad2d(3), nn.Conv2d(wd // 4, 1, 7, bias=True))

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """x: (N, C, S, S) -> (N, 1, S, S) probabilities, or logits when ``logits``."""
        s = self.config.size
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[-2:] != (s, s):
            raise ValueError(f"SegNet expects (N, {self.config.in_channels}, {s}, {s}) images, "
                             f"got {tuple(x.shape)}")
        f = self.residual(self.encoder(x))
        z = self.decoder(torch.cat([f, self.pyramid(f)], 1))
        return z if logits else torch.sigmoid(z)


def count_parameters(model: nn.Module) -> int:
    """The number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["SegNetConfig", "SegNet", "ResidualBlock", "PyramidPooling", "count_parameters"]
