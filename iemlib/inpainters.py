"""Inpainters psi: any callable ``(x, mask) -> prediction`` with
``x`` (N, C, H, W) holding the visible pixels (zero elsewhere), ``mask`` (N, 1, H, W) float
(1 = visible) and the prediction (N, C, H, W) of every pixel from the visible ones.

:class:`GaussianInpainter` is the paper's psi_K (Eq. 6), normalised convolution:
``psi_K(X, M) = (K * (X . M)) / (K * M)``, with the authors' division guard.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import blur_conv

#: The authors' division guard: eps x (per-sample, per-channel sum of the unfiltered input)
#: is added to numerator and denominator after filtering.
GUARD = 1e-8


@dataclass(frozen=True)
class GaussianInpainter:
    """Normalised-convolution inpainter psi_K of paper Eq. 5-6.

    sigma / taps / reps: a ``taps``-tap Gaussian of scale ``sigma`` applied separably
    ``reps`` times (the paper's 21 x 21 kernel = two stacked 11-tap passes).
    scale_factor: 2 gives the authors' optional speed-up (2 x 2 average pooling before the
    blur, nearest upsampling after; use sigma 2.5 and 7 taps with it)."""

    sigma: float = 5.0
    taps: int = 11
    reps: int = 2
    scale_factor: int = 1
    guard: float = GUARD

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) with hidden pixels already zeroed; mask: (N, 1, H, W) float,
        1 where visible. Returns the inpainting (N, C, H, W). Differentiable in both."""
        u = torch.cat((x, mask), 1)                      # filter image and mask together
        eps = u.sum((2, 3), keepdim=True) * self.guard   # per-sample, per-channel guard
        u = blur_conv(u, self.sigma, self.taps, self.reps, self.scale_factor) + eps
        return u[:, :-1] / u[:, -1:]


def gaussian_inpaint_naive(x: torch.Tensor, mask: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """psi_K with a full 2-D kernel (kh, kw) and zero padding, no guard: the textbook
    Eq. 6, used to check the separable version. x (N, C, H, W), mask (N, 1, H, W)."""
    c = x.shape[1]
    k = kernel.to(x)[None, None]
    kh, kw = kernel.shape
    num = torch.nn.functional.conv2d(x, k.repeat(c, 1, 1, 1), padding=(kh // 2, kw // 2), groups=c)
    den = torch.nn.functional.conv2d(mask, k, padding=(kh // 2, kw // 2))
    return num / den


def inpaint_regions(x: torch.Tensor, mask: torch.Tensor, inpainter=None):
    """Both inpaintings of IEM for masks ``mask`` (N, 1, H, W) of images ``x`` (N, C, H, W).

    Returns ``(pred_foreground, pred_background, composite)``, each (N, C, H, W):
    the foreground predicted from the background, psi(x . (1 - M), 1 - M); the background
    predicted from the foreground, psi(x . M, M); and the picture the paper shows, each
    region replaced by its inpainting: M . pred_foreground + (1 - M) . pred_background."""
    inpainter = inpainter or GaussianInpainter()
    m = mask.to(x.dtype)
    with torch.no_grad():
        pred_fg = inpainter(x * (1 - m), 1 - m)
        pred_bg = inpainter(x * m, m)
    return pred_fg, pred_bg, m * pred_fg + (1 - m) * pred_bg
