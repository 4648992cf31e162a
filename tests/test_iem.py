"""iem.segment: both implementations against the authors' recorded masks and each other,
and every configuration option."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from iemlib import (PAPER_INIT_SIZES, GaussianInpainter, IEMConfig, IEMResult, ablations,
                    diversity, inpainting_error, iem_objective, objective_variants,
                    resolve_device, segment, select_init)
from iemlib.kernels import centred_square, smooth, update_mask


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of equal mask pixels."""
    assert a.shape == b.shape
    return float((a.bool() == b.bool()).float().mean())


def objective_at(x, m, cfg: IEMConfig, inpainter=None):
    """(L_inp, regularised objective) of masks m (N, 1, H, W) for images x, without autograd."""
    inpainter = inpainter or cfg.inpainter()
    m = m.to(x.dtype)
    with torch.no_grad():
        pf = inpainter(x * (1 - m), 1 - m)
        pb = inpainter(x * m, m)
        kw = dict(numerator=cfg.numerator, denominator=cfg.denominator,
                  denominator_mask=cfg.denominator_mask)
        l_inp = inpainting_error(x, m, pf, pb, **kw)
        obj = iem_objective(x, m, pf, pb, cfg.effective_lambda, **kw)
    return l_inp, obj


def expected_first_step(x, m0, cfg: IEMConfig):
    """One IEM update written from the paper's pieces: the autograd gradient of the
    regularised objective, the boundary-restricted sign step, the smoothing."""
    inp = cfg.inpainter()
    mv = m0.to(x.dtype).requires_grad_(True)
    pf = inp(x * (1 - mv), 1 - mv)
    pb = inp(x * mv, mv)
    obj = iem_objective(x, mv, pf, pb, cfg.effective_lambda, cfg.numerator, cfg.denominator,
                        cfg.denominator_mask)
    (grad,) = torch.autograd.grad(obj.sum(), mv)
    new = update_mask(m0, grad, cfg.boundary_only, cfg.edge_is_boundary)
    if cfg.smoothing:
        new = smooth(new, cfg.smoothing_rule)
    return new


def settling_from_masks(seq: torch.Tensor, iters: int):
    """From the masks M_0 .. M_T of one run (T + 1, 1, H, W): the first t with
    M_{t+1} == M_t (settled at t, period 1) or M_{t+1} == M_{t-1} (settled at t - 1,
    period 2); (T, 0) if neither happens."""
    for t in range(iters):
        if torch.equal(seq[t + 1], seq[t]):
            return t, 1
        if t >= 1 and torch.equal(seq[t + 1], seq[t - 1]):
            return t - 1, 2
    return iters, 0


@pytest.fixture(scope="module")
def x4(authors_x) -> torch.Tensor:
    """Four real images (float32) for the option tests."""
    return authors_x[[1, 2, 3, 9]].clone()


CPU = dict(device="cpu")


# ----------------------------------------------------------------- the authors' vectors
@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("k", [1, 10])
def test_authors_masks_after_few_iterations(authors, authors_x, impl, k):
    r = segment(authors_x, IEMConfig(iters=k, impl=impl, **CPU))
    assert r.masks.shape == (16, 1, 128, 128) and r.masks.dtype == torch.bool
    assert agreement(r.masks, torch.from_numpy(authors[f"mask_iter{k}"])) >= 0.999


@pytest.fixture(scope="module")
def fast_authors_150(authors_x):
    return segment(authors_x, IEMConfig(iters=150, history=True, keep_masks=True, **CPU))


def test_authors_masks_after_150_iterations_fast(authors, fast_authors_150):
    r = fast_authors_150
    assert agreement(r.masks, torch.from_numpy(authors["mask_iter150"])) >= 0.999
    for k in (1, 10, 150):
        assert agreement(r.history["masks"][:, 0, k], torch.from_numpy(authors[f"mask_iter{k}"])) >= 0.999
    np.testing.assert_allclose(r.inpainting_error.numpy(), authors["inpaint_error_final"],
                               rtol=1e-4)
    np.testing.assert_allclose(r.history["inpainting_error"][:, 0, 0].numpy(),
                               authors["inpaint_error_init"], rtol=1e-5)


@pytest.mark.slow
def test_authors_masks_after_150_iterations_reference(authors, authors_x, fast_authors_150):
    r = segment(authors_x, IEMConfig(iters=150, impl="reference", keep_masks=True,
                                     history=True, **CPU))
    assert agreement(r.masks, torch.from_numpy(authors["mask_iter150"])) >= 0.999
    for k in (1, 10):
        assert agreement(r.history["masks"][:, 0, k], torch.from_numpy(authors[f"mask_iter{k}"])) >= 0.999
    np.testing.assert_allclose(r.inpainting_error.numpy(), authors["inpaint_error_final"],
                               rtol=1e-4)
    # the two implementations agree on the whole run
    f = fast_authors_150
    assert agreement(r.history["masks"], f.history["masks"]) >= 0.999
    # wherever the masks of an iteration are equal, so are the values
    same = (r.history["masks"] == f.history["masks"]).flatten(3).all(3)     # (N, K, T + 1)
    assert same.float().mean() >= 0.99
    np.testing.assert_allclose(r.history["inpainting_error"][same].numpy(),
                               f.history["inpainting_error"][same].numpy(), rtol=1e-5)
    np.testing.assert_allclose(r.history["objective"][same].numpy(),
                               f.history["objective"][same].numpy(), rtol=1e-5, atol=1e-5)
    whole = same.all(2)
    assert whole.float().mean() >= 0.75
    assert torch.equal(r.settled_at[whole], f.settled_at[whole])
    assert torch.equal(r.period[whole], f.period[whole])


def test_authors_first_update_from_their_own_gradient(authors):
    """The update rule and smoothing, fed the authors' recorded gradient, give their mask."""
    m0 = torch.from_numpy(authors["mask_init"])
    grad = torch.from_numpy(authors["grad_init"])
    new = smooth(update_mask(m0, grad, boundary_only=True, edge_is_boundary=True), "code")
    assert agreement(new, torch.from_numpy(authors["mask_iter1"])) >= 0.9999


# ------------------------------------------------------- fast versus reference, real data
@pytest.mark.slow
def test_fast_and_reference_agree_on_horses(load_horses):
    indices = list(range(16, load_horses.count, 13))[:24]
    x, _ = load_horses(indices)
    cfg = IEMConfig(iters=150, **CPU)
    fast = segment(x, cfg)
    ref = segment(x, cfg.replace(impl="reference"))
    assert agreement(fast.masks, ref.masks) >= 0.999
    same = (fast.masks == ref.masks).flatten(1).all(1)
    assert same.float().mean() >= 0.9
    np.testing.assert_allclose(fast.inpainting_error[same].numpy(),
                               ref.inpainting_error[same].numpy(), rtol=1e-4)


@pytest.mark.parametrize("cfg", [
    IEMConfig(iters=20, **CPU),
    IEMConfig(iters=20, lam=0.0, smoothing=False, **CPU),
    IEMConfig(iters=20, numerator="l2", denominator="l2", **CPU),
    IEMConfig(iters=20, **CPU).downsampled(),
], ids=["default", "no-reg-no-smooth", "l2-l2", "downsampled"])
def test_fast_and_reference_agree_on_non_square_images(authors_x, cfg):
    x = authors_x[[0, 7, 11], :, 16:112, :].contiguous()        # 96 x 128
    fast = segment(x, cfg)
    ref = segment(x, cfg.replace(impl="reference"))
    assert fast.masks.shape == (3, 1, 96, 128)
    assert agreement(fast.masks, ref.masks) >= 0.999
    np.testing.assert_allclose(fast.all_errors.numpy(), ref.all_errors.numpy(), rtol=1e-4)


# --------------------------------------------------------------------------- early exit
@pytest.mark.parametrize("iters", [50, 150, 151])
def test_early_exit_changes_nothing(authors_x, iters):
    # images that settle on fixed points, on two-cycles (both parities of the remaining
    # iterations), and that never settle
    x = authors_x[[0, 1, 4, 5]]
    cfg = IEMConfig(iters=iters, history=True, keep_masks=True, **CPU)
    on = segment(x, cfg)
    off = segment(x, cfg.replace(early_exit=False))
    assert torch.equal(on.masks, off.masks)
    assert torch.equal(on.all_masks, off.all_masks)
    assert torch.equal(on.all_errors, off.all_errors)
    assert torch.equal(on.all_objectives, off.all_objectives)
    for key in ("inpainting_error", "objective", "masks"):
        assert torch.equal(on.history[key], off.history[key]), key
    # the run does contain settled images of both kinds (else this test proves little)
    if iters >= 150:
        assert (on.period == 1).any() and (on.period == 2).any() and (on.period == 0).any()


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_settled_at_and_period_match_the_mask_sequence(authors_x, impl):
    x = authors_x[[0, 6, 14]]        # within 50 iterations: none, a two-cycle, a fixed point
    iters = 50
    r = segment(x, IEMConfig(iters=iters, impl=impl, keep_masks=True, history=True, **CPU))
    assert r.settled_at.shape == (3, 1) and r.period.shape == (3, 1)
    for i in range(3):
        s, p = settling_from_masks(r.history["masks"][i, 0], iters)
        assert (int(r.settled_at[i, 0]), int(r.period[i, 0])) == (s, p), i
    assert sorted(r.period.flatten().tolist()) == [0, 1, 2]


def test_settled_at_and_period_do_not_depend_on_early_exit(authors_x):
    x = authors_x[[1, 14]]       # both reach a fixed point within 70 iterations
    cfg = IEMConfig(iters=70, **CPU)
    on = segment(x, cfg)
    off = segment(x, cfg.replace(early_exit=False))
    assert (on.period == 1).all()
    assert torch.equal(on.settled_at, off.settled_at)
    assert torch.equal(on.period, off.period)


# ------------------------------------------------------------------- IEMConfig validation
@pytest.mark.parametrize("field,value", [
    ("iters", -1), ("sigma", 0.0), ("sigma", -2.0), ("taps", 0), ("taps", 4), ("taps", -3),
    ("reps", 0), ("scale_factor", 0), ("lam", -0.001), ("lambda_convention", "half"),
    ("smoothing_rule", "median"), ("numerator", "l3"), ("denominator", "entropy"),
    ("denominator_mask", "both"), ("init_sizes", ()), ("init_sizes", (0,)),
    ("init_sizes", (78, -4)), ("select", "best"), ("impl", "cuda"), ("dtype", "float16"),
    ("batch_size", 0),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        IEMConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        IEMConfig().replace(**{field: value})


def test_config_defaults_are_the_authors():
    c = IEMConfig()
    assert (c.iters, c.sigma, c.taps, c.reps, c.scale_factor) == (150, 5.0, 11, 2, 1)
    assert (c.lam, c.lambda_convention, c.effective_lambda) == (0.001, "code", 0.001)
    assert (c.smoothing, c.smoothing_rule, c.boundary_only, c.edge_is_boundary) == (True, "code", True, True)
    assert (c.numerator, c.denominator, c.denominator_mask) == ("l1", "count", "own")
    assert c.init_sizes == (78,) and c.select == "image" and c.impl == "fast"
    assert c.dtype == "float32"
    assert c.inpainter() == GaussianInpainter(5.0, 11, 2, 1)


def test_config_normalises_and_is_frozen():
    c = IEMConfig(init_sizes=[44, 92])
    assert c.init_sizes == (44, 92)
    hash(c)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.iters = 3
    assert IEMConfig.paper().init_sizes == PAPER_INIT_SIZES == (44, 78, 92)
    assert IEMConfig.paper(iters=7).iters == 7


def test_downsampled_config():
    c = IEMConfig(iters=12, lam=0.0).downsampled()
    assert (c.scale_factor, c.sigma, c.taps, c.reps) == (2, 2.5, 7, 2)
    assert c.iters == 12 and c.lam == 0.0
    assert c.inpainter() == GaussianInpainter(2.5, 7, 2, 2)


def test_lambda_conventions():
    assert IEMConfig(lam=0.002, lambda_convention="paper").effective_lambda == pytest.approx(0.001)
    assert IEMConfig(lam=0.002).effective_lambda == 0.002


def test_ablations_are_table_4():
    base = IEMConfig(iters=9, init_sizes=(44,))
    abl = ablations(base)
    assert list(abl) == ["default", "no regulariser", "no smoothing", "unrestricted updates"]
    assert abl["default"] == base
    assert abl["no regulariser"] == base.replace(lam=0.0)
    assert abl["no smoothing"] == base.replace(smoothing=False)
    assert abl["unrestricted updates"] == base.replace(boundary_only=False)
    assert ablations()["default"] == IEMConfig()


@pytest.mark.parametrize("literal", [False, True])
def test_objective_variants_are_table_5(literal):
    base = IEMConfig(iters=9)
    v = objective_variants(base, literal_table=literal)
    dm = "complement" if literal else "own"
    assert v == {
        "L1 / |M|": base.replace(numerator="l1", denominator="count"),
        "L2 / |M|": base.replace(numerator="l2", denominator="count"),
        "L1 / ||X.M||_1": base.replace(numerator="l1", denominator="l1", denominator_mask=dm),
        "L2 / ||X.M||_2": base.replace(numerator="l2", denominator="l2", denominator_mask=dm),
    }
    assert objective_variants()["L1 / |M|"] == IEMConfig()


# ------------------------------------------------------------- every option is honoured
OPTIONS = {
    "default": {},
    "lam=0": dict(lam=0.0),
    "no smoothing": dict(smoothing=False),
    "paper smoothing": dict(smoothing_rule="paper"),
    "unrestricted": dict(boundary_only=False),
    "no edge": dict(edge_is_boundary=False),
    "paper lambda": dict(lambda_convention="paper"),
    "l2 numerator": dict(numerator="l2"),
    "l1 denominator": dict(denominator="l1"),
    "l2 denominator": dict(denominator="l2"),
    "l1 complement": dict(denominator="l1", denominator_mask="complement"),
    "l2/l2 complement": dict(numerator="l2", denominator="l2", denominator_mask="complement"),
    "downsampled": "downsampled",
}


def _config(option, **kw):
    cfg = IEMConfig(**kw)
    return cfg.downsampled() if option == "downsampled" else cfg.replace(**option)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_first_step_follows_the_option(x4, name, impl):
    """One iteration equals the update built from autograd, update_mask and smooth with
    exactly the configured settings."""
    cfg = _config(OPTIONS[name], iters=1, impl=impl, dtype="float64", **CPU)
    x = x4.double()
    m0 = centred_square(len(x), 128, 128, 78)
    r = segment(x, cfg)
    assert torch.equal(r.masks, expected_first_step(x, m0, cfg))


@pytest.mark.parametrize("name", [n for n in OPTIONS if n != "default"])
def test_every_option_changes_the_result(x4, name):
    base = IEMConfig(iters=30, **CPU)
    r0 = segment(x4, base)
    r = segment(x4, _config(OPTIONS[name], iters=30, **CPU))
    assert int((r.masks != r0.masks).sum()) > 0


def test_paper_lambda_is_the_code_lambda_halved(x4):
    a = segment(x4, IEMConfig(iters=30, lam=0.001, lambda_convention="paper", history=True, **CPU))
    b = segment(x4, IEMConfig(iters=30, lam=0.0005, history=True, **CPU))
    assert torch.equal(a.masks, b.masks)
    torch.testing.assert_close(a.all_objectives, b.all_objectives, rtol=0, atol=0)
    torch.testing.assert_close(a.history["objective"], b.history["objective"], rtol=0, atol=0)


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("kw", [dict(), dict(lam=0.0), dict(lam=0.004, lambda_convention="paper"),
                                dict(numerator="l2", denominator="l1")])
def test_final_values_are_the_objective_of_the_final_masks(x4, impl, kw):
    cfg = IEMConfig(iters=15, impl=impl, dtype="float64", **CPU, **kw)
    x = x4.double()
    r = segment(x, cfg)
    l_inp, obj = objective_at(x, r.masks, cfg)
    torch.testing.assert_close(r.inpainting_error, l_inp, rtol=1e-12, atol=0)
    torch.testing.assert_close(r.all_objectives[:, 0], obj, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        r.all_objectives[:, 0],
        r.all_errors[:, 0] - cfg.effective_lambda * diversity(x, r.masks.double()),
        rtol=1e-12, atol=1e-14)
    if cfg.lam == 0:
        torch.testing.assert_close(r.all_objectives, r.all_errors, rtol=0, atol=0)


# ------------------------------------------------------------------- history and iters
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_history(x4, impl):
    iters = 12
    cfg = IEMConfig(iters=iters, init_sizes=(44, 92), history=True, keep_masks=True, impl=impl,
                    dtype="float64", **CPU)
    x = x4[:3].double()
    r = segment(x, cfg)
    h = r.history
    assert set(h) == {"inpainting_error", "objective", "masks"}
    assert h["inpainting_error"].shape == (3, 2, iters + 1)
    assert h["objective"].shape == (3, 2, iters + 1)
    assert h["masks"].shape == (3, 2, iters + 1, 1, 128, 128) and h["masks"].dtype == torch.bool
    for j, side in enumerate(cfg.init_sizes):
        sq = centred_square(3, 128, 128, side)
        assert torch.equal(h["masks"][:, j, 0], sq)
        l0, o0 = objective_at(x, sq, cfg)
        torch.testing.assert_close(h["inpainting_error"][:, j, 0], l0, rtol=1e-12, atol=0)
        torch.testing.assert_close(h["objective"][:, j, 0], o0, rtol=1e-12, atol=0)
        # an intermediate step is the objective of the mask recorded for it
        l5, o5 = objective_at(x, h["masks"][:, j, 5], cfg)
        torch.testing.assert_close(h["objective"][:, j, 5], o5, rtol=1e-12, atol=0)
    torch.testing.assert_close(h["inpainting_error"][..., -1], r.all_errors, rtol=0, atol=0)
    torch.testing.assert_close(h["objective"][..., -1], r.all_objectives, rtol=0, atol=0)
    assert torch.equal(h["masks"][:, :, -1], r.all_masks)


def test_history_is_empty_unless_asked(x4):
    r = segment(x4[:1], IEMConfig(iters=2, **CPU))
    assert r.history == {}
    r = segment(x4[:1], IEMConfig(iters=2, history=True, **CPU))
    assert set(r.history) == {"inpainting_error", "objective"}


def test_history_float32_first_value(x4):
    cfg = IEMConfig(iters=3, history=True, **CPU)
    r = segment(x4, cfg)
    l0, _ = objective_at(x4.double(), centred_square(4, 128, 128, 78), cfg)
    torch.testing.assert_close(r.history["inpainting_error"][:, 0, 0], l0, rtol=1e-5, atol=0)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_zero_iterations_return_the_initial_square(x4, impl):
    cfg = IEMConfig(iters=0, history=True, impl=impl, dtype="float64", **CPU)
    r = segment(x4, cfg)
    sq = centred_square(4, 128, 128, 78)
    assert torch.equal(r.masks, sq)
    l0, o0 = objective_at(x4.double(), sq, cfg)
    torch.testing.assert_close(r.inpainting_error, l0, rtol=1e-12, atol=0)
    assert r.history["objective"].shape == (4, 1, 1)


def test_iters_is_honoured(x4):
    r10 = segment(x4, IEMConfig(iters=10, keep_masks=True, history=True, **CPU))
    r6 = segment(x4, IEMConfig(iters=6, **CPU))
    assert torch.equal(r6.masks, r10.history["masks"][:, 0, 6])
    assert not torch.equal(r6.masks, r10.masks)


# ------------------------------------------------------------------ dtype, device, batch
def test_dtype_float64_is_honoured(x4):
    r64 = segment(x4, IEMConfig(iters=5, dtype="float64", **CPU))
    r32 = segment(x4, IEMConfig(iters=5, **CPU))
    assert agreement(r64.masks, r32.masks) >= 0.999
    cfg = IEMConfig()
    l64, _ = objective_at(x4.double(), r64.masks, cfg)
    torch.testing.assert_close(r64.inpainting_error, l64, rtol=1e-12, atol=0)
    l32, _ = objective_at(x4.double(), r32.masks, cfg)
    rel = ((r32.inpainting_error - l32).abs() / l32).max()
    assert rel < 1e-5
    assert rel > 1e-10          # the float32 run really computed in float32


def test_device_cpu(x4):
    cfg = IEMConfig(iters=2, **CPU)
    assert cfg.torch_device() == torch.device("cpu")
    r = segment(x4[:2], cfg)
    for t in (r.masks, r.inpainting_error, r.init_index, r.all_masks, r.all_errors,
              r.all_objectives, r.settled_at, r.period):
        assert t.device.type == "cpu"
    expected = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device(None) == expected
    assert IEMConfig().torch_device() == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_batch_size_does_not_change_results(x4):
    cfg = IEMConfig.paper(iters=15, history=True, **CPU)
    a = segment(x4, cfg)
    b = segment(x4, cfg.replace(batch_size=5))        # 12 jobs in batches of 5, 5, 2
    assert torch.equal(a.all_masks, b.all_masks)
    torch.testing.assert_close(a.all_errors, b.all_errors, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.history["objective"], b.history["objective"], rtol=1e-6, atol=0)


def test_progress_bar_does_not_change_results(x4):
    cfg = IEMConfig(iters=3, **CPU)
    assert torch.equal(segment(x4[:2], cfg, progress=True).masks, segment(x4[:2], cfg).masks)


# ------------------------------------------------------------- several initial squares
def test_select_init_rules():
    errors = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [0.0, 1.0, 0.5]])
    assert select_init(errors, "image").tolist() == [1, 0, 1]
    # column means 2, 4/3, 7/6: square 0 for every image
    assert select_init(errors, "dataset").tolist() == [0, 0, 0]
    assert select_init(errors).tolist() == [1, 0, 1]
    with pytest.raises(ValueError):
        select_init(errors, "best")


def test_select_init_does_not_choose_a_nan_error():
    nan = float("nan")
    errors = torch.tensor([[1.0, nan, 0.5], [nan, 0.2, 0.3]], dtype=torch.float64)
    assert select_init(errors, "image").tolist() == [0, 2]


def _collapsing_images():
    """Two 32 x 32 images, left half bright, right half dark, slight noise: IEM from a
    2-pixel square loses the square entirely, from a 15-pixel square it finds the halves."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 0.02
    x[..., :16] += 0.8
    return x


def test_a_vanished_mask_has_no_inpainting_error():
    r = segment(_collapsing_images(), IEMConfig(iters=30, init_sizes=(10, 60), **CPU))
    assert r.all_masks.shape == (2, 2, 1, 32, 32)
    assert not r.all_masks[:, 0].any()                       # the small square vanished
    assert torch.isnan(r.all_errors[:, 0]).all()
    assert r.all_masks[:, 1].flatten(1).any(1).all()
    assert torch.isfinite(r.all_errors[:, 1]).all()


def test_selection_prefers_a_mask_that_did_not_vanish():
    r = segment(_collapsing_images(), IEMConfig(iters=30, init_sizes=(10, 60), **CPU))
    assert r.init_index.tolist() == [1, 1]
    assert r.masks.flatten(1).any(1).all()


@pytest.fixture(scope="module")
def paper_run(x4):
    return segment(x4, IEMConfig.paper(iters=20, **CPU))


def test_multiple_initial_squares(x4, paper_run):
    r = paper_run
    assert r.init_sizes == (44, 78, 92)
    assert r.all_masks.shape == (4, 3, 1, 128, 128)
    assert r.all_errors.shape == (4, 3) and r.all_objectives.shape == (4, 3)
    # each column is the run from that square alone
    for j, side in enumerate(r.init_sizes):
        single = segment(x4, IEMConfig(iters=20, init_sizes=(side,), **CPU))
        assert agreement(single.masks, r.all_masks[:, j]) >= 0.9999
        torch.testing.assert_close(single.inpainting_error, r.all_errors[:, j], rtol=1e-5, atol=0)
    # per image: the square with the highest final inpainting error
    assert torch.equal(r.init_index, r.all_errors.argmax(1))
    rows = torch.arange(4)
    assert torch.equal(r.masks, r.all_masks[rows, r.init_index])
    assert torch.equal(r.inpainting_error, r.all_errors[rows, r.init_index])
    # the squares do lead to different masks here
    assert not torch.equal(r.all_masks[:, 0], r.all_masks[:, 2])


def test_select_dataset(x4, paper_run):
    d = segment(x4, IEMConfig.paper(iters=20, select="dataset", **CPU))
    best = int(paper_run.all_errors.mean(0).argmax())
    assert d.init_index.tolist() == [best] * 4
    assert torch.equal(d.masks, d.all_masks[:, best])
    assert torch.equal(d.all_masks, paper_run.all_masks)


def test_reselect(paper_run):
    r = paper_run
    d = r.reselect("dataset")
    assert isinstance(d, IEMResult)
    best = int(r.all_errors.mean(0).argmax())
    assert d.init_index.tolist() == [best] * 4
    assert torch.equal(d.masks, r.all_masks[:, best])
    assert torch.equal(d.inpainting_error, r.all_errors[:, best])
    assert d.all_masks is r.all_masks
    back = d.reselect("image")
    assert torch.equal(back.masks, r.masks) and torch.equal(back.init_index, r.init_index)
    with pytest.raises(ValueError):
        r.reselect("best")


# ------------------------------------------------------------------- custom inpainters
def test_custom_inpainter_runs_the_reference_loop(x4):
    calls = []

    def inpainter(x_visible, mask_visible):
        calls.append(tuple(x_visible.shape))
        return GaussianInpainter()(x_visible, mask_visible)

    cfg = IEMConfig(iters=4, **CPU)
    r = segment(x4[:2], cfg, inpainter=inpainter)
    assert r.config.impl == "reference"
    assert len(calls) == 2 * (4 + 1)         # two inpaintings per iteration and at the end
    ref = segment(x4[:2], cfg.replace(impl="reference"))
    assert torch.equal(r.masks, ref.masks)
    torch.testing.assert_close(r.inpainting_error, ref.inpainting_error, rtol=0, atol=0)


def test_custom_inpainter_is_used(x4):
    cfg = IEMConfig(iters=10, **CPU)
    other = segment(x4, cfg, inpainter=GaussianInpainter(sigma=2.0, taps=5, reps=1))
    same = segment(x4, cfg.replace(sigma=2.0, taps=5, reps=1))
    default = segment(x4, cfg)
    assert agreement(other.masks, same.masks) >= 0.999
    assert not torch.equal(other.masks, default.masks)


# ------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 4, 32, 32), (32, 32), (1, 2, 3, 32, 32),
                                   (3, 32)])
def test_wrong_image_shapes_raise(shape):
    with pytest.raises(ValueError):
        segment(torch.zeros(shape), IEMConfig(iters=1, **CPU))


def test_non_float_and_non_tensor_inputs():
    with pytest.raises(ValueError):
        segment(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), IEMConfig(iters=1, **CPU))
    with pytest.raises(TypeError):
        segment([[0.0]], IEMConfig(iters=1, **CPU))


def test_single_image_and_numpy_input(x4):
    cfg = IEMConfig(iters=3, **CPU)
    a = segment(x4[0], cfg)
    b = segment(x4[:1].numpy(), cfg)
    c = segment(x4[:1], cfg)
    assert a.masks.shape == (1, 1, 128, 128)
    assert torch.equal(a.masks, c.masks) and torch.equal(b.masks, c.masks)


def test_sizes_the_configuration_cannot_handle():
    with pytest.raises(ValueError):                     # odd side with 2x downsampling
        segment(torch.zeros(1, 3, 127, 128), IEMConfig(iters=1, **CPU).downsampled())
    with pytest.raises(ValueError):                     # square larger than the image
        segment(torch.zeros(1, 3, 128, 128), IEMConfig(iters=1, init_sizes=(130,), **CPU))


def test_init_masks_start_from_given_masks(authors_x):
    """Starting from the square itself gives the square's run; any other start another run."""
    from iemlib.kernels import centred_square
    x = authors_x[:4]
    cfg = IEMConfig(iters=12, device="cpu")
    ref = segment(x, cfg)
    square = centred_square(4, 128, 128, 78)
    same = segment(x, cfg, init_masks=square)
    assert torch.equal(same.masks, ref.masks) and same.init_sizes == (0,)
    assert torch.equal(same.inpainting_error, ref.inpainting_error)
    other = segment(x, cfg, init_masks=centred_square(4, 128, 128, 44))
    assert not torch.equal(other.masks, ref.masks)
    both = segment(x, cfg.replace(impl="reference"), init_masks=square)
    assert torch.equal(both.masks, ref.masks)
    with pytest.raises(ValueError, match="init_masks must be"):
        segment(x, cfg, init_masks=square[:2])
