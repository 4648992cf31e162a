"""The objective, the Gaussian inpainter and the hand-derived gradient.

The analytic gradient of :func:`iemlib.kernels.iem_value_and_grad` is held to autograd
through :class:`GaussianInpainter` and :func:`iemlib.objective.iem_objective` for every
variant of the objective, and both are held to the vectors recorded from the authors' code.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from iemlib import GaussianInpainter, diversity, iem_objective, inpainting_error, total_deviation
from iemlib.inpainters import GUARD, gaussian_inpaint_naive
from iemlib.kernels import (SeparableBlur, blur_conv, centred_square, effective_kernel,
                            iem_value_and_grad)
from iemlib.objective import region_term, weighted_norm

from conftest import blob_masks, noise_masks

VARIANTS = list(itertools.product(("l1", "l2"), ("count", "l1", "l2"), ("own", "complement")))


def smooth_images(n, h, w, seed):
    """Random images in [-1, 1] with some spatial structure: (n, 3, h, w) float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g, dtype=torch.float64)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    x = x - x.amin((2, 3), keepdim=True)
    return x / x.amax((2, 3), keepdim=True) * 2 - 1


def autograd_value_and_grad(x, m, inpainter, lam, numerator="l1", denominator="count",
                            denominator_mask="own"):
    """The objective as the paper writes it, differentiated by autograd."""
    mv = m.detach().clone().to(x.dtype).requires_grad_(True)
    pred_fg = inpainter(x * (1 - mv), 1 - mv)
    pred_bg = inpainter(x * mv, mv)
    l_inp = inpainting_error(x, mv, pred_fg, pred_bg, numerator, denominator, denominator_mask)
    objective = iem_objective(x, mv, pred_fg, pred_bg, lam, numerator, denominator, denominator_mask)
    (grad,) = torch.autograd.grad(objective.sum(), mv)
    return l_inp.detach(), objective.detach(), grad


def fast_value_and_grad(x, m, sigma, taps, sf, lam, numerator="l1", denominator="count",
                        denominator_mask="own"):
    h, w = x.shape[-2:]
    blur = SeparableBlur(h, w, sigma, taps, 2, sf, dtype=x.dtype)
    kx = blur(x)
    k1 = blur(torch.ones(1, 1, h, w, dtype=x.dtype))
    return iem_value_and_grad(x, m.to(x.dtype), blur, kx, k1, lam, numerator, denominator,
                              denominator_mask, GUARD)


def rel_max_err(a, b):
    """Per-image max |a - b| / max |b|: (N,)."""
    a, b = a.double().reshape(len(a), -1), b.double().reshape(len(b), -1)
    return (a - b).abs().amax(1) / b.abs().amax(1)


@pytest.fixture(scope="module")
def grad_inputs(request):
    """Image / mask pairs for the gradient checks: synthetic non-square images with blob
    and Bernoulli masks, and (when the shared data is present) real horse images with
    blob, Bernoulli and centred-square masks. float64."""
    x = smooth_images(2, 64, 48, 0)
    xs = torch.cat([x, x, x])
    ms = torch.cat([blob_masks(2, 64, 48, 1), noise_masks(2, 64, 48, 2, 0.5),
                    noise_masks(2, 64, 48, 3, 0.2)])
    sets = {"synthetic": (xs, ms)}
    try:
        authors = request.getfixturevalue("authors")
    except pytest.skip.Exception:
        authors = None
    if authors is not None:
        xr = torch.from_numpy(authors["x"][[0, 5]]).double()
        mr = torch.cat([blob_masks(2, 128, 128, 4), noise_masks(2, 128, 128, 5),
                        centred_square(2, 128, 128, 44)])
        sets["real"] = (torch.cat([xr, xr, xr]), mr)
    return sets


# --------------------------------------------------------------------- weighted_norm etc.
def test_weighted_norm_hand_examples():
    values = torch.tensor([[[[3.0, -1.0]], [[1.0, 5.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    w1 = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    w2 = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    assert float(weighted_norm(w1, values, "count")) == 1.0
    assert float(weighted_norm(w2, None, "count")) == 2.0
    assert float(weighted_norm(w1, values, "l1")) == pytest.approx(2.0)       # (3 + 1) / 2
    assert float(weighted_norm(w2, values, "l1")) == pytest.approx(5.0)       # + (1 + 5) / 2
    assert float(weighted_norm(w1, values, "l2")) == pytest.approx(math.sqrt(5.0))
    assert float(weighted_norm(w2, values, "l2")) == pytest.approx(math.sqrt(18.0))
    with pytest.raises(ValueError):
        weighted_norm(w1, values, "linf")


@pytest.mark.parametrize("kw", [dict(numerator="l3"), dict(denominator="entropy"),
                                dict(denominator_mask="both")])
def test_region_term_rejects_unknown_variants(kw):
    x = torch.zeros(1, 3, 4, 4)
    m = torch.ones(1, 1, 4, 4)
    with pytest.raises(ValueError):
        region_term(x, m, x, 1 - m, **kw)
    with pytest.raises(ValueError):
        inpainting_error(x, m, x, x, **kw)


def naive_inpainting_error(x, m, pf, pb, numerator, denominator, denominator_mask):
    """Eq. 7 and the Table 5 variants, written out with numpy, one image at a time."""
    x, m, pf, pb = (t.double().numpy() for t in (x, m, pf, pb))
    out = []
    for i in range(len(x)):
        fg, bg = m[i, 0], 1 - m[i, 0]

        def norm(weight, values, kind):
            if kind == "count":
                return weight.sum()
            if kind == "l1":
                return (weight * np.abs(values).mean(0)).sum()
            return np.sqrt((weight * (values ** 2).mean(0)).sum())

        total = 0.0
        for region, other, pred in ((fg, bg, pf[i]), (bg, fg, pb[i])):
            num = norm(region, x[i] - pred, numerator)
            den = norm(region if denominator_mask == "own" else other, x[i], denominator)
            total += num / den
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("numerator,denominator,denominator_mask", VARIANTS)
def test_inpainting_error_matches_naive(numerator, denominator, denominator_mask):
    g = torch.Generator().manual_seed(11)
    x = torch.rand(3, 3, 12, 10, generator=g, dtype=torch.float64) * 2 - 1
    pf = torch.rand(3, 3, 12, 10, generator=g, dtype=torch.float64) * 2 - 1
    pb = torch.rand(3, 3, 12, 10, generator=g, dtype=torch.float64) * 2 - 1
    m = noise_masks(3, 12, 10, 12).double()
    got = inpainting_error(x, m, pf, pb, numerator, denominator, denominator_mask)
    assert got.shape == (3,)
    expected = naive_inpainting_error(x, m, pf, pb, numerator, denominator, denominator_mask)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13)


def test_inpainting_error_default_is_the_authors_l1_over_count():
    g = torch.Generator().manual_seed(13)
    x = torch.rand(2, 3, 8, 9, generator=g, dtype=torch.float64) * 2 - 1
    pf = torch.rand(2, 3, 8, 9, generator=g, dtype=torch.float64) * 2 - 1
    pb = torch.rand(2, 3, 8, 9, generator=g, dtype=torch.float64) * 2 - 1
    m = noise_masks(2, 8, 9, 14).double()
    fg = (m * (x - pf).abs().mean(1, keepdim=True)).sum((1, 2, 3)) / m.sum((1, 2, 3))
    bg = ((1 - m) * (x - pb).abs().mean(1, keepdim=True)).sum((1, 2, 3)) / (1 - m).sum((1, 2, 3))
    torch.testing.assert_close(inpainting_error(x, m, pf, pb), fg + bg, rtol=1e-14, atol=0)


def test_total_deviation_and_diversity_match_naive():
    g = torch.Generator().manual_seed(15)
    x = torch.rand(3, 3, 9, 11, generator=g, dtype=torch.float64) * 2 - 1
    m = noise_masks(3, 9, 11, 16)
    xn, mn = x.numpy(), m.numpy()[:, 0]
    for i in range(3):
        expected = {}
        for name, region in (("fg", mn[i]), ("bg", ~mn[i])):
            s = 0.0
            for c in range(3):
                vals = xn[i, c][region]
                s += ((vals - vals.mean()) ** 2).sum()
            expected[name] = s
        assert float(total_deviation(x, m.double())[i]) == pytest.approx(expected["fg"], rel=1e-13)
        assert float(total_deviation(x, 1 - m.double())[i]) == pytest.approx(expected["bg"], rel=1e-13)
        assert float(diversity(x, m.double())[i]) == pytest.approx(
            expected["fg"] + expected["bg"], rel=1e-13)


def test_iem_objective_subtracts_lambda_times_diversity():
    g = torch.Generator().manual_seed(17)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    pf, pb = x.flip(-1), x.flip(-2)
    m = noise_masks(2, 8, 8, 18).double()
    l_inp = inpainting_error(x, m, pf, pb)
    torch.testing.assert_close(iem_objective(x, m, pf, pb, lam=0.0), l_inp, rtol=0, atol=0)
    torch.testing.assert_close(iem_objective(x, m, pf, pb, lam=0.25),
                               l_inp - 0.25 * diversity(x, m), rtol=1e-14, atol=0)
    # the default weight is the authors' 0.001
    torch.testing.assert_close(iem_objective(x, m, pf, pb),
                               l_inp - 0.001 * diversity(x, m), rtol=1e-14, atol=0)


# --------------------------------------------------------------------- GaussianInpainter
def test_gaussian_inpainter_formula_with_guard():
    x = smooth_images(2, 32, 24, 20)
    m = noise_masks(2, 32, 24, 21).double()
    xm = x * m
    num = blur_conv(xm) + GUARD * xm.sum((2, 3), keepdim=True)
    den = blur_conv(m) + GUARD * m.sum((2, 3), keepdim=True)
    torch.testing.assert_close(GaussianInpainter()(xm, m), num / den, rtol=1e-14, atol=0)


def test_gaussian_inpainter_reproduces_constants():
    x = torch.full((1, 3, 40, 30), -0.3, dtype=torch.float64)
    m = blob_masks(1, 40, 30, 22).double()
    out = GaussianInpainter()(x * m, m)
    # a normalised convolution of a constant is that constant, wherever the blur reaches
    reach = blur_conv(m) > 1e-6
    torch.testing.assert_close(out[reach.expand_as(out)], x[reach.expand_as(x)],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("reps", [1, 2])
def test_gaussian_inpainter_matches_textbook_normalised_convolution(reps):
    x = smooth_images(2, 36, 30, 23)
    m = noise_masks(2, 36, 30, 24, 0.6).double()
    inp = GaussianInpainter(sigma=3.0, taps=7, reps=reps, guard=0.0)
    got = inp(x * m, m)
    naive = gaussian_inpaint_naive(x * m, m, effective_kernel(3.0, 7, reps))
    d = (reps - 1) * 3     # one big kernel equals the stacked passes this far from borders
    torch.testing.assert_close(got[..., d:36 - d, d:30 - d], naive[..., d:36 - d, d:30 - d],
                               rtol=1e-12, atol=1e-13)


def test_gaussian_inpainter_downsampled_is_blockwise_constant():
    x = smooth_images(1, 32, 32, 25)
    m = blob_masks(1, 32, 32, 26).double()
    out = GaussianInpainter(sigma=2.5, taps=7, scale_factor=2)(x * m, m)
    assert torch.equal(out[..., ::2, ::2], out[..., 1::2, 1::2])
    assert torch.equal(out[..., ::2, ::2], out[..., 1::2, ::2])


# ------------------------------------------------------ analytic gradient versus autograd
@pytest.mark.parametrize("sf", [1, 2])
@pytest.mark.parametrize("lam", [0.0, 0.001])
@pytest.mark.parametrize("numerator,denominator,denominator_mask", VARIANTS)
@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_analytic_gradient_equals_autograd_float64(grad_inputs, source, numerator, denominator,
                                                   denominator_mask, lam, sf):
    if source not in grad_inputs:
        pytest.skip("shared data not available")
    x, m = grad_inputs[source]
    sigma, taps = (5.0, 11) if sf == 1 else (2.5, 7)
    variant = (numerator, denominator, denominator_mask)
    l_ref, obj_ref, g_ref = autograd_value_and_grad(
        x, m, GaussianInpainter(sigma, taps, 2, sf), lam, *variant)
    l_inp, obj, grad = fast_value_and_grad(x, m, sigma, taps, sf, lam, *variant)
    assert grad.shape == m.shape and grad.dtype == torch.float64
    torch.testing.assert_close(l_inp, l_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(obj, obj_ref, rtol=1e-12, atol=1e-14)
    assert rel_max_err(grad, g_ref).max() < 1e-10
    if lam == 0:
        torch.testing.assert_close(obj, l_inp, rtol=0, atol=0)


@pytest.mark.parametrize("numerator,denominator,denominator_mask", VARIANTS)
def test_value_without_gradient(grad_inputs, numerator, denominator, denominator_mask):
    x, m = grad_inputs["synthetic"]
    variant = (numerator, denominator, denominator_mask)
    l_a, o_a, g = fast_value_and_grad(x, m, 5.0, 11, 1, 0.001, *variant)
    h, w = x.shape[-2:]
    blur = SeparableBlur(h, w, dtype=x.dtype)
    l_b, o_b, none = iem_value_and_grad(x, m.double(), blur, blur(x),
                                        blur(torch.ones(1, 1, h, w, dtype=x.dtype)), 0.001,
                                        *variant, need_grad=False)
    assert none is None
    torch.testing.assert_close(l_a, l_b, rtol=0, atol=0)
    torch.testing.assert_close(o_a, o_b, rtol=0, atol=0)


def _float32_case(x, m, sf, variant):
    sigma, taps = (5.0, 11) if sf == 1 else (2.5, 7)
    _, obj64, g64 = autograd_value_and_grad(x, m, GaussianInpainter(sigma, taps, 2, sf), 0.001, *variant)
    _, obj32, g32 = fast_value_and_grad(x.float(), m, sigma, taps, sf, 0.001, *variant)
    assert g32.dtype == torch.float32
    return rel_max_err(obj32, obj64), rel_max_err(g32, g64)


@pytest.mark.parametrize("sf", [1, 2])
@pytest.mark.parametrize("numerator,denominator,denominator_mask", VARIANTS)
def test_analytic_gradient_float32_on_iem_masks(authors, numerator, denominator,
                                                denominator_mask, sf):
    """Masks IEM actually meets on real images, against the float64 truth.

    On the initial square the float32 gradient is within 1e-6 (no pixel is far from the
    other region). Later masks leave regions whose distance to the other region exceeds
    the kernel's reach; there K*(1-M) = K*1 - K*M, which the fast path uses instead of
    blurring 1-M, cancels in float32 and the gradient drifts to a few 1e-5 (autograd in
    float32, which blurs 1-M directly, stays near 3e-7)."""
    x = torch.from_numpy(authors["x"][[1, 2, 3]]).double()
    m = torch.cat([torch.from_numpy(authors[k][[1, 2, 3]])
                   for k in ("mask_init", "mask_iter10", "mask_iter150")])
    x = torch.cat([x, x, x])
    err_obj, err_grad = _float32_case(x, m, sf, (numerator, denominator, denominator_mask))
    assert err_obj.max() < 1e-5
    assert err_grad[:3].max() < 1e-6
    assert err_grad.max() < 1e-4


@pytest.mark.parametrize("numerator,denominator", [("l1", "count"), ("l2", "l2")])
def test_analytic_gradient_float32_on_random_masks(grad_inputs, numerator, denominator):
    """Random blobs leave large regions far from the other region, where the fast path's
    K*(1-M) = K*1 - K*M cancels in float32: the gradient is still within 3e-4 of the
    float64 truth (autograd in float32 does better there, below 1e-6)."""
    for x, m in grad_inputs.values():
        err_obj, err_grad = _float32_case(x, m, 1, (numerator, denominator, "own"))
        assert err_obj.max() < 1e-5
        assert err_grad.max() < 3e-4


# ------------------------------------------------------------- the authors' first step
def _authors_first_step(authors, impl, dtype=torch.float32):
    x = torch.from_numpy(authors["x"]).to(dtype)
    m = torch.from_numpy(authors["mask_init"])
    if impl == "reference":
        l_inp, obj, grad = autograd_value_and_grad(x, m, GaussianInpainter(), 0.001)
    else:
        l_inp, obj, grad = fast_value_and_grad(x, m, 5.0, 11, 1, 0.001)
    return l_inp, obj, grad


def test_authors_initial_mask_is_the_centred_square(authors):
    m = torch.from_numpy(authors["mask_init"])
    assert torch.equal(m, centred_square(len(m), 128, 128, 78))


@pytest.mark.parametrize("impl,dtype", [("reference", torch.float32), ("fast", torch.float32),
                                        ("fast", torch.float64)])
def test_authors_first_step(authors, impl, dtype):
    l_inp, obj, grad = _authors_first_step(authors, impl, dtype)
    np.testing.assert_allclose(l_inp.double().numpy(), authors["inpaint_error_init"], rtol=2e-6)
    # the objective is L_inp - 0.001 (sigma(M) + sigma(1 - M))
    div = (l_inp.double() - obj.double()) / 0.001
    rtol = 1e-5 if dtype == torch.float32 else 1e-6
    np.testing.assert_allclose(div.numpy(), authors["diversity_init"], rtol=rtol)

    g_auth = torch.from_numpy(authors["grad_init"]).double()
    grad = grad.double()
    scale = g_auth.abs().flatten(1).amax(1).view(-1, 1, 1, 1)
    big = g_auth.abs() > 1e-3 * scale
    assert big.float().mean() > 0.5
    assert torch.equal(torch.sign(grad[big]), torch.sign(g_auth[big]))
    assert rel_max_err(grad, g_auth).max() < 1e-5


def test_authors_diversity_and_prediction(authors):
    x = torch.from_numpy(authors["x"])
    m = torch.from_numpy(authors["mask_init"]).float()
    np.testing.assert_allclose(diversity(x, m).numpy(), authors["diversity_init"], rtol=1e-5)
    pred_fg = GaussianInpainter()(x * (1 - m), 1 - m)
    np.testing.assert_allclose(pred_fg.numpy(), authors["pred_foreground_init"], rtol=0, atol=1e-5)
    # in float64 the prediction is the same to float32 precision
    x64, m64 = x.double(), m.double()
    pred64 = GaussianInpainter()(x64 * (1 - m64), 1 - m64)
    np.testing.assert_allclose(pred64.numpy(), authors["pred_foreground_init"], rtol=0, atol=1e-5)
