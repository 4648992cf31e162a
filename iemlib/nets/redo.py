"""ReDO's region generator, discriminator and noise encoder (Chen et al., NeurIPS 2019),
at 128 x 128, as pure modules (the mask network is :class:`iemlib.nets.segnet.SegNet`).

Written from the paper and a reading of the authors' description of their models (their
code's licence forbids copying it). ``w`` below is each network's width.

RegionGenerator (one per region; it sees only its soft mask m (N, 1, 128, 128) and its
noise z (N, nz), never the image):
    linear nz -> 16w x 4 x 4
    5 up-sampling residual blocks, 16w->16w->8w->4w->2w->w, 4 -> 128 px; each block:
        conditional instance norm (scale and shift linear in z), ReLU, concatenate the
        mask pooled to the block's size, nearest x2, SN 3x3 conv; conditional IN, ReLU,
        SN 3x3 conv; plus a shortcut nearest x2 -> SN 1x1 conv of the block's input
    self-attention before the last block (2w channels at 64 x 64)
    conditional IN, ReLU, concatenate the mask, SN 3x3 conv -> 3, tanh, times the mask
Discriminator: SN residual down-sampling blocks 3 -> w (128 -> 64, with self-attention
    after it), w -> 2w -> 4w -> 8w -> 16w (-> 4 x 4), one block at 4 x 4; sum over space,
    linear 16w -> 1 (one logit per image).
NoiseEncoder: the discriminator's architecture without self-attention, linear
    16w -> regions x nz: the noise of every region, recovered from a generated image.

SN = spectral normalisation. Self-attention: query and key 1x1 convs to C/8, value to
C/2, keys and values max-pooled 2 x 2, softmax over the keys, a 1x1 conv back to C,
scaled by a learned scalar that starts at 0 (the block starts as the identity).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class ReDONetsConfig:
    """Widths of the networks (the authors: generator 32 as their README advises,
    discriminator and encoder 64), noise size nz (32), regions (2), self-attention on,
    orthogonal initialisation gain (0.8)."""

    gen_width: int = 32
    disc_width: int = 64
    enc_width: int = 64
    nz: int = 32
    regions: int = 2
    attention: bool = True
    init_gain: float = 0.8

    def __post_init__(self):
        for name in ("gen_width", "disc_width", "enc_width", "nz"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReDO {name} must be positive, got {getattr(self, name)}")
        if self.regions != 2:
            raise ValueError("this ReDO handles two regions (object and background)")

    def to_dict(self) -> dict:
        return asdict(self)


def orthogonal_init(module: nn.Module, gain: float) -> None:
    """Orthogonal initialisation of every convolution and linear weight (for spectrally
    normalised layers, of the raw weight: the norm divides its scale out)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            with torch.no_grad():
                nn.init.orthogonal_(w, gain)


def _sn_conv(cin, cout, k, bias=True):
    return spectral_norm(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias))


class SelfAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W), H and W even."""

    def __init__(self, c: int):
        super().__init__()
        self.q = spectral_norm(nn.Conv2d(c, max(1, c // 8), 1, bias=False))
        self.k = spectral_norm(nn.Conv2d(c, max(1, c // 8), 1, bias=False))
        self.v = spectral_norm(nn.Conv2d(c, max(1, c // 2), 1, bias=False))
        self.o = spectral_norm(nn.Conv2d(max(1, c // 2), c, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        n, c, h, w = x.shape
        q = self.q(x).flatten(2)                                  # (N, C/8, HW)
        k = F.max_pool2d(self.k(x), 2).flatten(2)                 # (N, C/8, HW/4)
        v = F.max_pool2d(self.v(x), 2).flatten(2)                 # (N, C/2, HW/4)
        attn = torch.softmax(k.transpose(1, 2) @ q, dim=1)        # (N, HW/4, HW): over keys
        out = (v @ attn).view(n, -1, h, w)
        return x + self.gamma * self.o(out)


class CondIN(nn.Module):
    """Instance norm (no affine) whose per-channel scale and shift are linear in z."""

    def __init__(self, c: int, nz: int):
        super().__init__()
        self.scale, self.shift = nn.Linear(nz, c), nn.Linear(nz, c)

    def forward(self, x, z):
        return F.instance_norm(x) * self.scale(z)[..., None, None] + self.shift(z)[..., None, None]


class _UpBlock(nn.Module):
    def __init__(self, cin, cout, nz):
        super().__init__()
        self.n1, self.n2 = CondIN(cin, nz), CondIN(cout, nz)
        self.c1 = _sn_conv(cin + 1, cout, 3, bias=False)
        self.c2 = _sn_conv(cout, cout, 3)
        self.skip = _sn_conv(cin, cout, 1)

    def forward(self, x, m, z):
        h = F.relu(self.n1(x, z))
        h = torch.cat([h, F.adaptive_avg_pool2d(m, h.shape[-2:])], 1)
        h = self.c1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.c2(F.relu(self.n2(h, z)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class RegionGenerator(nn.Module):
    """(mask (N, 1, 128, 128), z (N, nz)) -> region pixels (N, 3, 128, 128), zero outside
    the mask."""

    def __init__(self, width: int = 32, nz: int = 32, attention: bool = True):
        super().__init__()
        w = width
        self.w = w
        self.stem = nn.Linear(nz, 16 * w * 16)
        chans = [16 * w, 16 * w, 8 * w, 4 * w, 2 * w, w]
        self.blocks = nn.ModuleList(_UpBlock(a, b, nz) for a, b in zip(chans[:-1], chans[1:]))
        self.attn = SelfAttention(2 * w) if attention else nn.Identity()
        self.n_out = CondIN(w, nz)
        self.out = _sn_conv(w + 1, 3, 3)

    def forward(self, m, z):
        h = self.stem(z).view(z.shape[0], 16 * self.w, 4, 4)
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:
                h = self.attn(h)
            h = block(h, m, z)
        h = torch.cat([F.relu(self.n_out(h, z)), m], 1)
        return torch.tanh(self.out(h)) * m


class Generators(nn.Module):
    """One RegionGenerator per region, called once: masks (N, R, H, W), z (N, R, nz) ->
    region pixels (N, R, 3, H, W)."""

    def __init__(self, cfg: ReDONetsConfig):
        super().__init__()
        self.gens = nn.ModuleList(RegionGenerator(cfg.gen_width, cfg.nz, cfg.attention)
                                  for _ in range(cfg.regions))

    def forward(self, masks, z):
        return torch.stack([g(masks[:, r:r + 1], z[:, r]) for r, g in enumerate(self.gens)], 1)


class _DownBlock(nn.Module):
    def __init__(self, cin, cout, first=False, down=True):
        super().__init__()
        self.first, self.down = first, down
        self.c1, self.c2 = _sn_conv(cin, cout, 3), _sn_conv(cout, cout, 3)
        self.skip = _sn_conv(cin, cout, 1) if (cin != cout or down) else None

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.c2(F.relu(self.c1(h)))
        s = x
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + (self.skip(s) if self.skip is not None else s)


class _ResEncoder(nn.Module):
    """Residual down-sampling network 128 x 128 -> (N, out)."""

    def __init__(self, width: int, out: int, attention: bool):
        super().__init__()
        w = width
        self.first = _DownBlock(3, w, first=True)
        self.attn = SelfAttention(w) if attention else nn.Identity()
        chans = [w, 2 * w, 4 * w, 8 * w, 16 * w]
        self.blocks = nn.Sequential(*(_DownBlock(a, b) for a, b in zip(chans[:-1], chans[1:])),
                                    _DownBlock(16 * w, 16 * w, down=False))
        self.head = nn.Linear(16 * w, out)

    def forward(self, x):
        h = self.blocks(self.attn(self.first(x)))
        return self.head(h.sum((2, 3)))


class Discriminator(_ResEncoder):
    """(N, 3, 128, 128) in [-1, 1] -> (N,) logits."""

    def __init__(self, cfg: ReDONetsConfig):
        super().__init__(cfg.disc_width, 1, cfg.attention)

    def forward(self, x):
        return super().forward(x)[:, 0]


class NoiseEncoder(_ResEncoder):
    """(N, 3, 128, 128) -> (N, regions, nz): the noise that drew each region."""

    def __init__(self, cfg: ReDONetsConfig):
        super().__init__(cfg.enc_width, cfg.regions * cfg.nz, attention=False)
        self.shape = (cfg.regions, cfg.nz)

    def forward(self, x):
        return super().forward(x).view(-1, *self.shape)
