"""The IEM objective, written as the paper writes it (autograd differentiates these).

Shapes: ``x`` (N, C, H, W) in [-1, 1]; ``mask`` (N, 1, H, W) float in [0, 1] (1 =
foreground); predictions (N, C, H, W). Every function returns one value per image: (N,).

The mask always enters linearly (``M * |r|`` rather than ``|M * r|``, ``M * r^2`` rather
than ``(M * r)^2``). For a binary mask both forms have the same value, which is all the
paper's derivation fixes; the linear form is the one the authors' code uses for Eq. 7,
and it keeps the gradient with respect to pixels outside a region informative (the
one-sided derivative at M = 0 instead of autograd's zero subgradient of ``|0|``).
"""
from __future__ import annotations

import torch

NUMERATORS = ("l1", "l2")
DENOMINATORS = ("count", "l1", "l2")
DENOMINATOR_MASKS = ("own", "complement")

_TINY = 1e-12  # keeps empty regions finite; never reached by a mask with pixels in it


def weighted_norm(weight: torch.Tensor, values: torch.Tensor | None, kind: str) -> torch.Tensor:
    """A norm of ``weight . values`` for a binary weight, per image: (N,).

    kind ``"count"``: sum of the weight (the uniform-marginal |M|; values unused);
    ``"l1"``: sum over pixels of weight x (mean over channels of |values|);
    ``"l2"``: square root of the sum over pixels of weight x (mean over channels of values^2).
    Channel means keep l1 and l2 on the scale of the authors' l1 term."""
    if kind == "count":
        return weight.sum((1, 2, 3))
    if kind == "l1":
        return (weight * values.abs().mean(1, keepdim=True)).sum((1, 2, 3))
    if kind == "l2":
        return (weight * values.pow(2).mean(1, keepdim=True)).sum((1, 2, 3)).clamp_min(_TINY).sqrt()
    raise ValueError(f"unknown norm {kind!r}; expected one of count, l1, l2")


def region_term(x, region, prediction, other, numerator="l1", denominator="count",
                denominator_mask="own"):
    """One term of Eq. 7 / Table 5: ||region . (x - prediction)|| / H(region).

    region: (N, 1, H, W) the pixels being inpainted; other = 1 - region. The denominator
    approximates the marginal entropy: |region| (uniform), ||x . region||_1 (Laplace,
    Eq. 17) or ||x . region||_2 (Gaussian, Eq. 16); ``denominator_mask="complement"`` uses
    ``other`` instead, the literal reading of Table 5's ||X . (1 - M)||."""
    if numerator not in NUMERATORS:
        raise ValueError(f"numerator must be one of {NUMERATORS}, got {numerator!r}")
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
    if denominator_mask not in DENOMINATOR_MASKS:
        raise ValueError(f"denominator_mask must be one of {DENOMINATOR_MASKS}, got {denominator_mask!r}")
    num = weighted_norm(region, x - prediction, numerator)
    den = weighted_norm(region if denominator_mask == "own" else other, x, denominator)
    return num / den.clamp_min(_TINY)


def inpainting_error(x, mask, pred_foreground, pred_background, numerator="l1",
                     denominator="count", denominator_mask="own") -> torch.Tensor:
    """L_inp of Eq. 7 (= 2 - C(F, B) up to the approximations): (N,).

    pred_foreground = psi(x . (1 - mask), 1 - mask), the foreground predicted from the
    background; pred_background = psi(x . mask, mask)."""
    fg = region_term(x, mask, pred_foreground, 1 - mask, numerator, denominator, denominator_mask)
    bg = region_term(x, 1 - mask, pred_background, mask, numerator, denominator, denominator_mask)
    return fg + bg


def total_deviation(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sigma(M) of Eq. 10: sum over channels and pixels of M (x - mu_c(M))^2, where mu_c(M)
    is the mean of channel c over the mask: (N,)."""
    mu = (x * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(_TINY)
    return (mask * (x - mu) ** 2).sum((1, 2, 3))


def diversity(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sigma(M) + sigma(1 - M), the diversity regulariser of Eq. 10: (N,)."""
    return total_deviation(x, mask) + total_deviation(x, 1 - mask)


def iem_objective(x, mask, pred_foreground, pred_background, lam=0.001, numerator="l1",
                  denominator="count", denominator_mask="own") -> torch.Tensor:
    """The maximised objective L_inp - lam (sigma(M) + sigma(1 - M)): (N,).

    ``lam`` is the effective weight: 0.001 in the authors' code; the paper's text writes
    lambda / 2 (see :attr:`iemlib.IEMConfig.effective_lambda`)."""
    value = inpainting_error(x, mask, pred_foreground, pred_background, numerator,
                             denominator, denominator_mask)
    if lam:
        value = value - lam * diversity(x, mask)
    return value
