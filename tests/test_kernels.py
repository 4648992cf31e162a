"""The tensor kernels of iemlib.kernels against naive, explicitly written versions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iemlib.kernels import (SeparableBlur, axis_operator, blur_conv, boundary, box_count,
                            centred_square, effective_kernel, gaussian_taps, smooth,
                            update_mask)

from conftest import blob_masks, noise_masks


# ------------------------------------------------------------------------- naive helpers
def naive_conv2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Textbook 2-D convolution of one channel, zero padding, output of the input's size:
    out[i, j] = sum_{a, b} kernel[a, b] * img[i + ph - a, j + pw - b]."""
    h, w = img.shape
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            s = 0.0
            for a in range(kh):
                ii = i + ph - a
                if not 0 <= ii < h:
                    continue
                for b in range(kw):
                    jj = j + pw - b
                    if 0 <= jj < w:
                        s += kernel[a, b] * img[ii, jj]
            out[i, j] = s
    return out


def naive_blur(x: torch.Tensor, sigma, taps, reps, scale_factor=1) -> np.ndarray:
    """The authors' blur written out: optional 2 x 2 mean pooling, ``reps`` zero-padded
    convolutions with the outer product of the 1-D taps, nearest upsampling."""
    x = x.double().numpy()
    g = gaussian_taps(sigma, taps, torch.float64).numpy()
    k2 = np.outer(g, g)
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    for i in range(n):
        for ch in range(c):
            u = x[i, ch]
            if scale_factor > 1:
                s = scale_factor
                u = u.reshape(h // s, s, w // s, s).mean((1, 3))
            for _ in range(reps):
                u = naive_conv2d(u, k2)
            if scale_factor > 1:
                u = np.repeat(np.repeat(u, scale_factor, 0), scale_factor, 1)
            out[i, ch] = u
    return out


def naive_neighbour_count(m: np.ndarray, include_centre: bool) -> np.ndarray:
    """Ones among the 8 neighbours inside the image (plus the pixel itself if asked)."""
    h, w = m.shape
    out = np.zeros((h, w), int)
    for i in range(h):
        for j in range(w):
            s = 0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if di == 0 and dj == 0 and not include_centre:
                        continue
                    ii, jj = i + di, j + dj
                    if 0 <= ii < h and 0 <= jj < w:
                        s += int(m[ii, jj])
            out[i, j] = s
    return out


def naive_boundary_inside(m: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour inside the image holding the opposite value."""
    h, w = m.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ii, jj = i + di, j + dj
                if 0 <= ii < h and 0 <= jj < w and m[ii, jj] != m[i, j]:
                    out[i, j] = True
    return out


def authors_boundary(m: torch.Tensor) -> torch.Tensor:
    """The authors' formulation: a zero-padded Laplacian on the mask and on its complement,
    each thresholded at 0.5, then OR."""
    lap = torch.tensor([[0., -1., 0.], [-1., 4., -1.], [0., -1., 0.]], dtype=torch.float64)
    lap = lap.view(1, 1, 3, 3)
    mf = m.double()
    fore = F.conv2d(mf, lap, padding=1) >= 0.5
    back = F.conv2d(1 - mf, lap, padding=1) >= 0.5
    return fore | back


def random_masks(n, h, w, seed):
    """A mix of blob masks, Bernoulli masks of several densities, all-0 and all-1."""
    return torch.cat([
        blob_masks(n, h, w, seed),
        noise_masks(n, h, w, seed + 1, 0.5),
        noise_masks(n, h, w, seed + 2, 0.15),
        noise_masks(n, h, w, seed + 3, 0.85),
        torch.zeros(1, 1, h, w, dtype=torch.bool),
        torch.ones(1, 1, h, w, dtype=torch.bool),
    ])


# ------------------------------------------------------------------------ gaussian_taps
@pytest.mark.parametrize("sigma,taps", [(5.0, 11), (2.5, 7), (1.0, 5), (0.7, 3), (3.0, 1), (10.0, 21)])
def test_gaussian_taps_formula(sigma, taps):
    g = gaussian_taps(sigma, taps, torch.float64)
    assert g.shape == (taps,) and g.dtype == torch.float64
    r = (taps - 1) // 2
    expected = np.array([math.exp(-(i * i) / (2 * sigma ** 2)) for i in range(-r, r + 1)])
    expected /= expected.sum()
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-14, atol=0)
    assert abs(float(g.sum()) - 1.0) < 1e-14
    torch.testing.assert_close(g, g.flip(0), rtol=0, atol=0)
    assert int(g.argmax()) == r


def test_gaussian_taps_dtype_and_default():
    g = gaussian_taps(5.0, 11)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g.double(), gaussian_taps(5.0, 11, torch.float64), rtol=1e-7, atol=0)


@pytest.mark.parametrize("sigma,taps", [(5.0, 0), (5.0, 10), (5.0, -3), (0.0, 11), (-1.0, 11)])
def test_gaussian_taps_rejects_bad_arguments(sigma, taps):
    with pytest.raises(ValueError):
        gaussian_taps(sigma, taps)


# --------------------------------------------------------------------- effective_kernel
@pytest.mark.parametrize("sigma,taps,reps", [(5.0, 11, 2), (2.5, 7, 3), (1.5, 5, 1)])
def test_effective_kernel_is_the_blur_of_a_delta(sigma, taps, reps):
    k = effective_kernel(sigma, taps, reps)
    size = reps * (taps - 1) + 1
    assert k.shape == (size, size) and k.dtype == torch.float64
    assert abs(float(k.sum()) - 1.0) < 1e-12
    # far from the borders, the stacked passes applied to a delta draw the kernel itself
    n = size + 2 * size
    delta = torch.zeros(1, 1, n, n, dtype=torch.float64)
    delta[..., n // 2, n // 2] = 1.0
    out = blur_conv(delta, sigma, taps, reps)[0, 0]
    r = size // 2
    window = out[n // 2 - r:n // 2 + r + 1, n // 2 - r:n // 2 + r + 1]
    torch.testing.assert_close(window, k.flip(0, 1), rtol=0, atol=1e-15)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------- blur_conv
@pytest.mark.parametrize("sigma,taps,reps,size", [
    (5.0, 11, 1, (19, 23)),
    (5.0, 11, 2, (24, 19)),
    (2.5, 7, 3, (25, 22)),
    (1.0, 5, 2, (9, 12)),
    (5.0, 11, 2, (7, 8)),       # image smaller than the kernel
])
def test_blur_conv_matches_naive_convolution(sigma, taps, reps, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = blur_conv(x, sigma, taps, reps).numpy()
    # everywhere, borders included: each pass is a zero-padded convolution
    np.testing.assert_allclose(got, naive_blur(x, sigma, taps, reps), rtol=0, atol=1e-13)

    # one big kernel (the effective kernel, zero padding) agrees wherever no intermediate
    # pass reaches past the image, i.e. at least (reps - 1) * (taps // 2) from the border
    k = effective_kernel(sigma, taps, reps).numpy()
    big = np.stack([[naive_conv2d(x[i, c].numpy(), k) for c in range(3)] for i in range(2)])
    d = (reps - 1) * (taps // 2)
    h, w = size
    if h > 2 * d and w > 2 * d:
        np.testing.assert_allclose(got[..., d:h - d, d:w - d], big[..., d:h - d, d:w - d],
                                   rtol=0, atol=1e-13)
    if reps == 1:
        np.testing.assert_allclose(got, big, rtol=0, atol=1e-13)
    elif min(h, w) > taps:
        # each pass is truncated at the image border: the border differs from one big kernel
        assert np.abs(got - big).max() > 1e-6


@pytest.mark.parametrize("size", [(16, 20), (32, 32)])
def test_blur_conv_downsampled_matches_naive(size):
    x = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = blur_conv(x, 2.5, 7, 2, scale_factor=2).numpy()
    np.testing.assert_allclose(got, naive_blur(x, 2.5, 7, 2, scale_factor=2), rtol=0, atol=1e-13)
    # nearest upsampling: every 2 x 2 block is constant
    assert np.array_equal(got[..., ::2, ::2], got[..., 1::2, 1::2])


def test_blur_conv_preserves_constants_in_the_interior():
    x = torch.full((1, 1, 64, 64), 0.7, dtype=torch.float64)
    out = blur_conv(x)
    torch.testing.assert_close(out[..., 10:-10, 10:-10], x[..., 10:-10, 10:-10], rtol=0, atol=1e-14)
    assert float(out[0, 0, 0, 0]) < 0.7 * 0.6   # zero padding darkens the corner


# ------------------------------------------------------------------------ SeparableBlur
BLUR_CASES = (
    [((128, 128), 5.0, 11, r, 1) for r in (1, 2, 3)]
    + [((40, 56), 5.0, 11, r, 1) for r in (1, 2, 3)]
    + [((33, 20), 5.0, 11, r, 1) for r in (1, 2, 3)]
    + [((7, 9), 5.0, 11, 2, 1), ((1, 5), 1.0, 3, 2, 1)]
    + [((128, 128), 2.5, 7, r, 2) for r in (1, 2, 3)]
    + [((40, 56), 2.5, 7, r, 2) for r in (1, 2, 3)]
    + [((32, 18), 2.5, 7, 2, 2), ((6, 4), 2.5, 7, 2, 2)]
)


@pytest.mark.parametrize("size,sigma,taps,reps,sf", BLUR_CASES)
def test_separable_blur_equals_blur_conv(size, sigma, taps, reps, sf):
    h, w = size
    x = torch.randn(2, 4, h, w, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    blur = SeparableBlur(h, w, sigma, taps, reps, sf, dtype=torch.float64)
    expected = blur_conv(x, sigma, taps, reps, sf)
    torch.testing.assert_close(blur(x), expected, rtol=0, atol=1e-12)
    assert blur.a_h.shape == (h, h) and blur.a_w.shape == (w, w)


@pytest.mark.parametrize("sf", [1, 2])
def test_separable_blur_float32(sf):
    x = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(4)) * 2 - 1
    sigma, taps = (5.0, 11) if sf == 1 else (2.5, 7)
    blur = SeparableBlur(64, 48, sigma, taps, 2, sf)
    out = blur(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, blur_conv(x, sigma, taps, 2, sf), rtol=0, atol=2e-6)


def test_axis_operator_columns_are_the_blurred_unit_vectors():
    a = axis_operator(17, 2.0, 5, 2, dtype=torch.float64)
    g = gaussian_taps(2.0, 5, torch.float64).numpy()
    for j in (0, 5, 16):
        col = np.zeros(17)
        col[j] = 1.0
        for _ in range(2):
            col = np.convolve(col, g, mode="same")      # zero-padded 1-D pass
        np.testing.assert_allclose(a[:, j].numpy(), col, rtol=0, atol=1e-15)


@pytest.mark.parametrize("h,w", [(33, 32), (32, 33), (33, 33)])
def test_odd_size_with_scale_factor_2_raises(h, w):
    with pytest.raises(ValueError):
        SeparableBlur(h, w, 2.5, 7, 2, scale_factor=2)


def test_axis_operator_odd_size_raises():
    with pytest.raises(ValueError):
        axis_operator(127, 2.5, 7, 2, scale_factor=2)


def test_separable_blur_rejects_other_image_sizes():
    blur = SeparableBlur(32, 32)
    with pytest.raises(ValueError):
        blur(torch.zeros(1, 1, 32, 31))


@pytest.mark.parametrize("size,sigma,taps,reps,sf", [
    ((40, 56), 5.0, 11, 1, 1), ((40, 56), 5.0, 11, 2, 1), ((33, 20), 5.0, 11, 3, 1),
    ((40, 56), 2.5, 7, 2, 2), ((128, 128), 2.5, 7, 3, 2), ((128, 128), 5.0, 11, 2, 1),
])
def test_separable_blur_adjoint(size, sigma, taps, reps, sf):
    h, w = size
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    blur = SeparableBlur(h, w, sigma, taps, reps, sf, dtype=torch.float64)
    lhs = (blur(x) * y).sum()
    rhs = (x * blur.adjoint(y)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)
    # the adjoint of the convolution itself, by autograd
    xv = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad((blur_conv(xv, sigma, taps, reps, sf) * y).sum(), xv)
    torch.testing.assert_close(blur.adjoint(y), vjp, rtol=0, atol=1e-12)
    # zero padding and symmetric taps make the operator symmetric, as documented
    torch.testing.assert_close(blur.a_h, blur.a_h.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(blur.a_w, blur.a_w.T, rtol=0, atol=1e-15)
    torch.testing.assert_close(blur.adjoint(y), blur(y), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ boundary
def test_boundary_matches_authors_laplacian():
    masks = torch.cat([random_masks(3, 40, 33, seed) for seed in (0, 10)])
    got = boundary(masks, edge_is_boundary=True)
    assert got.dtype == torch.bool and got.shape == masks.shape
    assert torch.equal(got, authors_boundary(masks))
    # float 0/1 masks give the same answer
    assert torch.equal(boundary(masks.float(), True), got)


def test_boundary_inside_only_matches_naive_loop():
    masks = random_masks(2, 21, 17, 20)
    got = boundary(masks, edge_is_boundary=False)
    for i in range(len(masks)):
        expected = naive_boundary_inside(masks[i, 0].numpy())
        assert np.array_equal(got[i, 0].numpy(), expected), i


def test_boundary_covers_both_sides_of_a_contour():
    m = torch.zeros(1, 1, 10, 12, dtype=torch.bool)
    m[..., 3:7, 4:9] = True                 # rows 3..6, columns 4..8
    b = boundary(m, edge_is_boundary=False)[0, 0].numpy()
    expected = np.zeros((10, 12), bool)
    expected[3:7, 4:9] = True
    expected[4:6, 5:8] = False              # the square's inner ring is on the boundary
    expected[2, 4:9] = expected[7, 4:9] = True   # and the outer 4-neighbours too
    expected[3:7, 3] = expected[3:7, 9] = True
    assert np.array_equal(b, expected)
    # the diagonal corners outside the square only touch it diagonally
    assert not b[2, 3] and not b[7, 9]
    inside = m[0, 0].numpy()
    assert (b & inside).any() and (b & ~inside).any()


def test_boundary_of_uniform_masks():
    for value in (False, True):
        m = torch.full((1, 1, 6, 7), value)
        assert not boundary(m, edge_is_boundary=False).any()
        b = boundary(m, edge_is_boundary=True)[0, 0]
        border = torch.ones(6, 7, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        assert torch.equal(b, border)


def test_edge_is_boundary_only_adds_the_border():
    m = blob_masks(4, 30, 26, 7)
    inside = boundary(m, False)
    edge = boundary(m, True)
    assert torch.equal(edge[..., 1:-1, 1:-1], inside[..., 1:-1, 1:-1])
    assert edge[..., 0, :].all() and edge[..., -1, :].all()
    assert edge[..., :, 0].all() and edge[..., :, -1].all()
    assert (inside <= edge).all()


# ------------------------------------------------------------------------------- smooth
def test_box_count_matches_naive():
    masks = random_masks(2, 15, 13, 30)
    got = box_count(masks)
    for i in range(len(masks)):
        expected = naive_neighbour_count(masks[i, 0].numpy(), include_centre=True)
        assert np.array_equal(got[i, 0].numpy(), expected)


def test_smooth_code_rule_matches_authors_avg_pool():
    masks = torch.cat([random_masks(3, 48, 37, seed) for seed in (40, 50)])
    count = F.avg_pool2d(masks.float(), 3, 1, 1, divisor_override=1)
    expected = count >= 4
    got = smooth(masks, "code")
    assert got.dtype == torch.bool and got.shape == masks.shape
    assert torch.equal(got, expected)
    assert torch.equal(smooth(masks), expected)             # the default rule
    assert torch.equal(smooth(masks.double(), "code"), expected)


def test_smooth_paper_rule_matches_naive_loop():
    masks = random_masks(2, 19, 22, 60)
    got = smooth(masks, "paper")
    for i in range(len(masks)):
        expected = naive_neighbour_count(masks[i, 0].numpy(), include_centre=False) > 4
        assert np.array_equal(got[i, 0].numpy(), expected), i


def _with_neighbours(k: int, centre: bool) -> torch.Tensor:
    """A 5 x 5 mask whose pixel (2, 2) has exactly k of its 8 neighbours set."""
    m = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    ring = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1), (2, 1)]
    for i, j in ring[:k]:
        m[0, 0, i, j] = True
    m[0, 0, 2, 2] = centre
    return m


def test_smooth_code_rule_counts_the_centre():
    # 3 neighbours: on if the pixel itself is on (3 + 1 = 4 ones), off otherwise
    assert smooth(_with_neighbours(3, True), "code")[0, 0, 2, 2]
    assert not smooth(_with_neighbours(3, False), "code")[0, 0, 2, 2]
    # 4 neighbours: on whatever the pixel
    assert smooth(_with_neighbours(4, False), "code")[0, 0, 2, 2]
    assert not smooth(_with_neighbours(2, True), "code")[0, 0, 2, 2]


def test_smooth_paper_rule_ignores_the_centre():
    assert not smooth(_with_neighbours(4, True), "paper")[0, 0, 2, 2]
    assert not smooth(_with_neighbours(4, False), "paper")[0, 0, 2, 2]
    assert smooth(_with_neighbours(5, False), "paper")[0, 0, 2, 2]
    assert smooth(_with_neighbours(5, True), "paper")[0, 0, 2, 2]


def test_smooth_rejects_unknown_rule():
    with pytest.raises(ValueError):
        smooth(torch.zeros(1, 1, 4, 4, dtype=torch.bool), "median")


# -------------------------------------------------------------------------- update_mask
def _grad_with_zeros(shape, seed):
    g = torch.Generator().manual_seed(seed)
    grad = torch.randn(*shape, generator=g, dtype=torch.float64)
    grad[torch.rand(*shape, generator=g) < 0.2] = 0.0
    return grad


@pytest.mark.parametrize("edge", [True, False])
def test_update_mask_boundary_only(edge):
    m = torch.cat([blob_masks(3, 32, 30, 70), noise_masks(2, 32, 30, 71)])
    grad = _grad_with_zeros(m.shape, 72)
    new = update_mask(m, grad, boundary_only=True, edge_is_boundary=edge)
    assert new.dtype == torch.bool and new.shape == m.shape
    b = boundary(m, edge)
    frozen = (grad == 0) | ~b
    assert torch.equal(new[frozen], m[frozen])
    movable = ~frozen
    assert torch.equal(new[movable], grad[movable] > 0)
    # both directions happen
    assert (new & ~m).any() and (~new & m).any()
    # float masks behave like bool ones
    assert torch.equal(update_mask(m.double(), grad, True, edge), new)


def test_update_mask_unrestricted():
    m = blob_masks(3, 32, 30, 80)
    grad = _grad_with_zeros(m.shape, 81)
    new = update_mask(m, grad, boundary_only=False)
    zero = grad == 0
    assert torch.equal(new[zero], m[zero])
    assert torch.equal(new[~zero], grad[~zero] > 0)
    # pixels far from any boundary change too
    interior = ~boundary(m, True)
    assert (new != m)[interior].any()
    assert not (update_mask(m, grad, boundary_only=True) != m)[interior].any()


def test_update_mask_edge_is_boundary_frees_the_border():
    m = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    m[..., 4:8, 4:8] = True
    grad = torch.ones(1, 1, 12, 12)
    with_edge = update_mask(m, grad, True, edge_is_boundary=True)
    without = update_mask(m, grad, True, edge_is_boundary=False)
    assert with_edge[0, 0, 0].all() and with_edge[0, 0, :, -1].all()
    assert not without[0, 0, 0].any()
    assert torch.equal(without, m | boundary(m, False))


# ------------------------------------------------------------------------ centred_square
@pytest.mark.parametrize("side,first,last", [(78, 25, 102), (44, 42, 85), (92, 18, 109)])
def test_centred_square_at_128(side, first, last):
    m = centred_square(3, 128, 128, side)
    assert m.shape == (3, 1, 128, 128) and m.dtype == torch.bool
    rows = torch.nonzero(m[0, 0].any(1)).flatten()
    cols = torch.nonzero(m[0, 0].any(0)).flatten()
    assert (int(rows[0]), int(rows[-1])) == (first, last)
    assert (int(cols[0]), int(cols[-1])) == (first, last)
    assert int(m[0].sum()) == side * side
    assert torch.equal(m[0], m[2])
    # centred: the mirror image is the same square
    assert torch.equal(m, m.flip(-1)) and torch.equal(m, m.flip(-2))


def test_centred_square_authors_78():
    expected = torch.zeros(1, 1, 128, 128, dtype=torch.bool)
    expected[..., 128 // 5:128 - 128 // 5, 128 // 5:128 - 128 // 5] = True
    assert torch.equal(centred_square(1, 128, 128, 78), expected)


@pytest.mark.parametrize("h,w,side,px", [(64, 96, 78, 39), (96, 64, 78, 39), (256, 256, 78, 156),
                                          (256, 300, 44, 88), (100, 100, 92, 72)])
def test_centred_square_scales_with_the_shorter_side(h, w, side, px):
    m = centred_square(2, h, w, side)[0, 0]
    rows = torch.nonzero(m.any(1)).flatten()
    cols = torch.nonzero(m.any(0)).flatten()
    assert len(rows) == px and len(cols) == px
    assert int(m.sum()) == px * px
    assert int(rows[0]) == (h - px) // 2 and int(cols[0]) == (w - px) // 2


def test_centred_square_too_large_raises():
    with pytest.raises(ValueError):
        centred_square(1, 128, 128, 130)
