"""Batched, device-agnostic tensor kernels of IEM.

Shapes: images ``x`` are ``(N, C, H, W)`` floats in [-1, 1]; masks ``m`` are
``(N, 1, H, W)``, bool or float 0/1. Every function takes its device and dtype from its
inputs and works unchanged on CUDA and on the CPU.

Two realisations of the Gaussian blur live here:

* :func:`blur_conv` is what the paper and the authors' code do: a 1-D Gaussian of
  ``taps`` taps applied along H then W by a depthwise ``conv2d`` with zero padding,
  the pair repeated ``reps`` times (two 11-tap passes stand in for the 21 x 21 kernel).
* :class:`SeparableBlur` is the same linear map written as one matrix per axis,
  ``blur(x) = A_H @ x @ A_W^T``. Stacked passes, zero padding and even the optional
  2x2 average-pool / nearest-upsample pair compose into a single ``(H, H)`` and a single
  ``(W, W)`` matrix, so a blur of any depth is two matrix products: on the CPU this is
  several times faster than the depthwise convolution, and its adjoint (needed by the
  hand-written gradient) is the same product with the matrices transposed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- Gaussian taps
def gaussian_taps(sigma: float, taps: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """1-D Gaussian of ``taps`` samples, centred, normalised to sum 1: shape ``(taps,)``.

    Sampled exactly as the authors' code does (``linspace(-(k-1)/2, (k-1)/2, k)``)."""
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f"taps must be a positive odd number, got {taps}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    d2 = torch.linspace(-(taps - 1) / 2, (taps - 1) / 2, taps, dtype=torch.float64) ** 2
    k = torch.exp(-0.5 * d2 / sigma ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def effective_kernel(sigma: float, taps: int, reps: int) -> torch.Tensor:
    """The 2-D kernel that ``reps`` stacked separable passes amount to, away from borders:
    shape ``(reps*(taps-1)+1, reps*(taps-1)+1)``, float64, sums to 1."""
    g = gaussian_taps(sigma, taps, torch.float64)
    k = torch.ones(1, dtype=torch.float64)
    for _ in range(reps):
        k = torch.from_numpy(np.convolve(k.numpy(), g.numpy()))
    return torch.outer(k, k)


# --------------------------------------------------------------------- blur: convolution
def blur_conv(x: torch.Tensor, sigma: float = 5.0, taps: int = 11, reps: int = 2,
              scale_factor: int = 1) -> torch.Tensor:
    """Gaussian blur of every channel of ``x`` (N, C, H, W), as the authors compute it:
    optional ``scale_factor`` average pooling, ``reps`` x (1-D pass along H, then along W)
    with zero padding ``taps // 2``, then nearest upsampling. Differentiable."""
    n, c, h, w = x.shape
    g = gaussian_taps(sigma, taps, x.dtype, x.device).view(1, 1, taps).repeat(c, 1, 1)
    pad = taps // 2
    u = F.avg_pool2d(x, scale_factor) if scale_factor > 1 else x
    for _ in range(reps):
        u = F.conv2d(u, g.unsqueeze(3), padding=(pad, 0), groups=c)
        u = F.conv2d(u, g.unsqueeze(2), padding=(0, pad), groups=c)
    if scale_factor > 1:
        u = F.interpolate(u, scale_factor=scale_factor, mode="nearest")
    return u


# ------------------------------------------------------------------------ blur: matrices
def axis_operator(n: int, sigma: float = 5.0, taps: int = 11, reps: int = 2,
                  scale_factor: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """The blur along one axis of length ``n`` as an ``(n, n)`` matrix ``A``: for a signal
    ``v`` (n,), ``A @ v`` equals the 1-D passes of :func:`blur_conv` applied to ``v``.

    Built in float64 by running the 1-D passes on the identity, then cast."""
    if scale_factor > 1 and n % scale_factor:
        raise ValueError(
            f"the downsampled inpainter needs sides divisible by {scale_factor}, got {n}")
    eye = torch.eye(n, dtype=torch.float64)
    g = gaussian_taps(sigma, taps, torch.float64).view(1, 1, taps)
    u = eye.unsqueeze(1)  # (n, 1, n): each column of the identity as a signal
    if scale_factor > 1:
        u = F.avg_pool1d(u, scale_factor)
    for _ in range(reps):
        u = F.conv1d(u, g, padding=taps // 2)
    if scale_factor > 1:
        u = F.interpolate(u, scale_factor=scale_factor, mode="nearest")
    # row j of u is A @ e_j, i.e. column j of A
    return u[:, 0, :].T.contiguous().to(dtype=dtype, device=device)


class SeparableBlur:
    """The Gaussian blur of :func:`blur_conv` for images of one size, as two matrix products.

    ``blur(x)`` maps (N, C, H, W) to (N, C, H, W); ``blur.adjoint(x)`` applies the transposed
    operator (equal to ``blur`` when ``scale_factor`` is 1 or 2: the operator is symmetric)."""

    def __init__(self, height: int, width: int, sigma: float = 5.0, taps: int = 11,
                 reps: int = 2, scale_factor: int = 1, dtype=torch.float32, device=None):
        self.shape = (height, width)
        self.a_h = axis_operator(height, sigma, taps, reps, scale_factor, dtype, device)
        self.a_w = axis_operator(width, sigma, taps, reps, scale_factor, dtype, device)
        # x @ A_W^T is one (N*C*H, W) x (W, W) product; A_H @ y is done the same way on the
        # transposed view, which keeps both products as single large GEMMs.
        self.a_w_t = self.a_w.T.contiguous()
        self.a_h_t = self.a_h.T.contiguous()

    def _apply(self, x: torch.Tensor, a_h_t: torch.Tensor, a_w_t: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.shape:
            raise ValueError(f"blur built for {self.shape}, got images of {tuple(x.shape[-2:])}")
        y = torch.matmul(x, a_w_t)                      # along W
        y = torch.matmul(y.transpose(-1, -2), a_h_t)    # along H, on the transposed view
        return y.transpose(-1, -2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.a_h_t, self.a_w_t)

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.a_h, self.a_w)


# ------------------------------------------------------------------ boundary and smoothing
def boundary(m: torch.Tensor, edge_is_boundary: bool = True) -> torch.Tensor:
    """Pixels that have a 4-neighbour of the opposite value: (N, 1, H, W) bool.

    This covers both sides of the contour. With ``edge_is_boundary`` (the authors' code,
    whose zero-padded Laplacian sees the outside as the opposite value from either side),
    every pixel on the image border is a boundary pixel too; without it, only neighbours
    inside the image count (the paper's wording)."""
    m = m.bool()
    out = torch.zeros_like(m)
    dv = m[..., 1:, :] != m[..., :-1, :]
    dh = m[..., :, 1:] != m[..., :, :-1]
    out[..., 1:, :] |= dv
    out[..., :-1, :] |= dv
    out[..., :, 1:] |= dh
    out[..., :, :-1] |= dh
    if edge_is_boundary:
        out[..., 0, :] = True
        out[..., -1, :] = True
        out[..., :, 0] = True
        out[..., :, -1] = True
    return out


def box_count(m: torch.Tensor) -> torch.Tensor:
    """Number of ones in each 3 x 3 window (centre included, zero padded): (N, 1, H, W) int."""
    v = F.pad(m.to(torch.int16), (1, 1, 1, 1))
    rows = v[..., :-2, :] + v[..., 1:-1, :] + v[..., 2:, :]
    return rows[..., :, :-2] + rows[..., :, 1:-1] + rows[..., :, 2:]


def smooth(m: torch.Tensor, rule: str = "code") -> torch.Tensor:
    """The smoothing after each update: (N, 1, H, W) -> bool of the same shape.

    ``rule="code"`` (default, the authors' code): 1 where the 3 x 3 window, centre
    included, holds at least 4 ones. ``rule="paper"`` (the paper's text): 1 where the sum
    over the 8-neighbourhood, centre excluded, exceeds 4."""
    m = m.bool()
    count = box_count(m)
    if rule == "code":
        return count >= 4
    if rule == "paper":
        return (count - m.to(count.dtype)) > 4
    raise ValueError(f"smoothing rule must be 'code' or 'paper', got {rule!r}")


def update_mask(m: torch.Tensor, grad: torch.Tensor, boundary_only: bool = True,
                edge_is_boundary: bool = True) -> torch.Tensor:
    """The projected step with eta -> infinity (paper Eq. 9): (N, 1, H, W) -> bool.

    Pixels that may change (the boundary, or every pixel) become 1 where ``grad > 0``
    and 0 where ``grad < 0``; pixels whose gradient is exactly 0 keep their value."""
    m = m.bool()
    may_change = grad != 0
    if boundary_only:
        may_change &= boundary(m, edge_is_boundary)
    return torch.where(may_change, grad > 0, m)


def centred_square(n: int, height: int, width: int, side: int, reference: int = 128,
                   device=None) -> torch.Tensor:
    """Centred square initial masks: (n, 1, height, width) bool.

    ``side`` is given at the paper's ``reference`` size (128); on other sizes it scales
    with the shorter side. At 128 x 128 and side 78 this is exactly the authors' square
    (rows and columns 25 to 102)."""
    s = min(height, width)
    side_px = side if s == reference else max(1, round(side * s / reference))
    if side_px > s:
        raise ValueError(f"initial square of side {side_px} does not fit in {height}x{width}")
    top, left = (height - side_px) // 2, (width - side_px) // 2
    m = torch.zeros(n, 1, height, width, dtype=torch.bool, device=device)
    m[..., top:top + side_px, left:left + side_px] = True
    return m


# ------------------------------------------------------------ the analytic IEM gradient
_TINY = 1e-12


def _norm_parts(weight: torch.Tensor, values: torch.Tensor | None, kind: str):
    """Value and partial derivatives of :func:`iemlib.objective.weighted_norm`.

    Returns (value (N,), d value / d weight (N, 1, H, W) or a scalar, d value / d values
    (N, C, H, W) or None)."""
    if kind == "count":
        return weight.sum((1, 2, 3)), 1.0, None
    c = values.shape[1]
    if kind == "l1":
        a = values.abs().mean(1, keepdim=True)
        return (weight * a).sum((1, 2, 3)), a, weight * values.sign() / c
    if kind == "l2":
        a = values.pow(2).mean(1, keepdim=True)
        value = (weight * a).sum((1, 2, 3)).clamp_min(_TINY).sqrt()
        v = value.view(-1, 1, 1, 1)
        return value, a / (2 * v), weight * values / (c * v)
    raise ValueError(f"unknown norm {kind!r}")


def _col(v) -> torch.Tensor:
    return v.view(-1, 1, 1, 1) if isinstance(v, torch.Tensor) else v


def iem_value_and_grad(x: torch.Tensor, m: torch.Tensor, blur: SeparableBlur,
                       kx: torch.Tensor, k1: torch.Tensor, lam: float = 0.001,
                       numerator: str = "l1", denominator: str = "count",
                       denominator_mask: str = "own", guard: float = 1e-8,
                       need_grad: bool = True, sx: torch.Tensor | None = None,
                       sq: torch.Tensor | None = None):
    """L_inp, the regularised objective and its gradient with respect to the mask, by hand.

    x: (N, C, H, W); m: (N, 1, H, W) float 0/1; blur: the Gaussian blur for (H, W);
    kx = blur(x) (N, C, H, W) and k1 = blur(ones) (1, 1, H, W), computed once per image;
    optionally sx = x.sum((2, 3), keepdim=True) (N, C, 1, 1) and sq = (x ** 2).sum(1,
    keepdim=True) (N, 1, H, W), also constant per image.
    Returns ``(l_inp (N,), objective (N,), grad (N, 1, H, W) or None)``.

    Equal to autograd through :class:`~iemlib.inpainters.GaussianInpainter` and
    :func:`~iemlib.objective.iem_objective`, guard terms included, with:

    * 4 blurs forward: K*(X.M) and K*M. By linearity K*(X.(1-M)) = K*X - K*(X.M) and
      K*(1-M) = K*1 - K*M, so the second inpainting costs nothing.
    * 4 blurs backward: the chain rule through psi = N / D leaves, for each inpainting, a
      per-pixel seed G = (d objective / d psi) / D, and the gradient
      K^T (sum_c G_c psi_c) - sum_c X_c K^T G_c. The foreground and background seeds enter
      with opposite signs and are summed before the (adjoint) blur.
    * the diversity term in closed form: sigma(M) = sum M |x|^2 - |sum M x|^2 / |M|, and
      d sigma(M) / dM = |x - mu(M)|^2 (the terms through mu vanish, since
      sum_p M_p (x_p - mu) = 0 by the definition of mu).
    """
    n, c, h, w = x.shape
    area = h * w
    if sx is None:
        sx = x.sum((2, 3), keepdim=True)
    u = torch.empty(n, c + 1, h, w, dtype=x.dtype, device=x.device)
    xm = torch.mul(x, m, out=u[:, :c])
    u[:, c:] = m
    sxm = xm.sum((2, 3), keepdim=True)
    sm = m.sum((2, 3), keepdim=True)
    u = blur(u)
    kxm, km = u[:, :c], u[:, c:]
    # foreground predicted from the background, and background from the foreground
    inv_df = 1.0 / (k1 - km + guard * (area - sm))
    f_hat = (kx - kxm + guard * (sx - sxm)) * inv_df
    inv_db = 1.0 / (km + guard * sm)
    b_hat = (kxm + guard * sxm) * inv_db
    r_f, r_b = x - f_hat, x - b_hat
    bg = 1 - m
    own = denominator_mask == "own"

    num_f, dnum_f, dres_f = _norm_parts(m, r_f, numerator)
    num_b, dnum_b, dres_b = _norm_parts(bg, r_b, numerator)
    if denominator == "count":
        den_f = (sm if own else area - sm).view(-1)
        den_b = (area - sm if own else sm).view(-1)
        dden_f = dden_b = 1.0
    else:
        den_f, dden_f, _ = _norm_parts(m if own else bg, x, denominator)
        den_b, dden_b, _ = _norm_parts(bg if own else m, x, denominator)
    den_f, den_b = den_f.clamp_min(_TINY), den_b.clamp_min(_TINY)
    t_f, t_b = num_f / den_f, num_b / den_b
    l_inp = t_f + t_b

    if lam:
        if sq is None:
            sq = x.pow(2).sum(1, keepdim=True)
        sm_b = (area - sm).clamp_min(_TINY)
        sm_f = sm.clamp_min(_TINY)
        msq = (m * sq).sum((1, 2, 3))
        div = (msq - (sxm.pow(2).sum(1, keepdim=True) / sm_f).view(-1)
               + sq.sum((1, 2, 3)) - msq
               - ((sx - sxm).pow(2).sum(1, keepdim=True) / sm_b).view(-1))
        objective = l_inp - lam * div
    else:
        objective = l_inp
    if not need_grad:
        return l_inp, objective, None

    # direct dependence on the mask (d bg / d m = -1; the denominators' weight is m or bg)
    sign_den = 1.0 if own else -1.0
    grad = (_col(1.0 / den_f) * dnum_f - _col(1.0 / den_b) * dnum_b
            - sign_den * _col(t_f / den_f) * dden_f + sign_den * _col(t_b / den_b) * dden_b)
    if not isinstance(grad, torch.Tensor) or grad.dim() < 4:
        grad = torch.as_tensor(grad, dtype=x.dtype, device=x.device).expand(n, 1, h, w)
    # through the two inpaintings: seeds d objective / d psi, divided by psi's denominator
    g_f = dres_f * (-inv_df / _col(den_f))
    g_b = dres_b * (-inv_db / _col(den_b))
    v = torch.empty(n, c + 1, h, w, dtype=x.dtype, device=x.device)
    p = torch.sub(g_f, g_b, out=v[:, 1:])
    torch.sum(g_f * f_hat - g_b * b_hat, 1, keepdim=True, out=v[:, :1])
    q = v[:, :1]
    # the guard eps * sum(input) acts like a constant blur kernel of weight eps
    guard_term = guard * (q.sum((2, 3), keepdim=True)
                          - (x * p.sum((2, 3), keepdim=True)).sum(1, keepdim=True))
    v = blur.adjoint(v)
    grad = grad + v[:, :1] - (x * v[:, 1:]).sum(1, keepdim=True) + guard_term
    if lam:
        # |x - mu_f|^2 - |x - mu_b|^2 = sum_c (mu_b - mu_f)(2 x - mu_f - mu_b)
        mu_f, mu_b = sxm / sm_f, (sx - sxm) / sm_b
        dmu = mu_b - mu_f
        grad = grad - lam * ((x * (2 * dmu)).sum(1, keepdim=True)
                             - (dmu * (mu_f + mu_b)).sum(1, keepdim=True))
    return l_inp, objective, grad


__all__ = [
    "gaussian_taps", "effective_kernel", "blur_conv", "axis_operator", "SeparableBlur",
    "boundary", "box_count", "smooth", "update_mask", "centred_square", "iem_value_and_grad",
]
