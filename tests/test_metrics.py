"""Accuracy / IoU / DICE with the ReDO convention (best of mask and flipped mask)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iemlib.images import UNKNOWN
from iemlib.metrics import Scores, evaluate

from conftest import blob_masks, noise_masks


def authors_compute_performance(pred: np.ndarray, gt: np.ndarray):
    """The per-image formulas of the authors' published compute_performance, written
    naively: each metric is the better of the mask and its complement, separately."""
    p, g = pred.astype(bool).ravel(), gt.astype(bool).ravel()
    q = ~p
    acc = max(np.mean(p == g), np.mean(q == g))
    iou = max((p & g).sum() / (p | g).sum(), (q & g).sum() / (q | g).sum())
    dice = max(2 * (p & g).sum() / (p.sum() + g.sum()), 2 * (q & g).sum() / (q.sum() + g.sum()))
    return acc, iou, dice


def example():
    """A 4 x 4 case worked out by hand (see the test)."""
    g = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    g[..., :2, :2] = 1
    p = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    p[0, 0, 0, :3] = True
    p[0, 0, 1, 0] = True
    return p, g


@pytest.mark.parametrize("flip", ["joint", "per_metric"])
def test_hand_computed_example(flip):
    p, g = example()
    s = evaluate(p, g, flip=flip)
    assert isinstance(s, Scores) and len(s) == 1
    # |p| = |g| = 4, |p & g| = 3, |p | g| = 5; p and g disagree on 2 of 16 pixels
    assert s.acc[0] == pytest.approx(14 / 16)
    assert s.iou_direct[0] == pytest.approx(3 / 5)
    # the complement: |~p & g| = 1, |~p | g| = 15 -> 1/15, worse
    assert s.iou[0] == pytest.approx(3 / 5)
    assert s.dice[0] == pytest.approx(2 * 3 / 8)
    # against the inverted truth (12 pixels): p: 1/15, ~p: 11/13
    assert s.miou[0] == pytest.approx((3 / 5 + 11 / 13) / 2)
    summary = s.summary()
    assert summary["n"] == 1
    assert summary["acc"] == pytest.approx(100 * 14 / 16)
    assert summary["iou"] == pytest.approx(60.0)
    assert summary["dice"] == pytest.approx(75.0)


def test_flip_conventions_differ_only_in_accuracy():
    # accuracy prefers the mask (5/8 against 3/8), IoU and DICE its complement
    g = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.uint8).view(1, 1, 1, 8)
    p = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool).view(1, 1, 1, 8)
    joint = evaluate(p, g)                         # the default
    per_metric = evaluate(p, g, flip="per_metric")
    for s in (joint, per_metric):
        assert s.iou_direct[0] == 0.0
        assert s.iou[0] == pytest.approx(2 / 7)
        assert s.dice[0] == pytest.approx(4 / 9)
    # one orientation per image, chosen by IoU, for all three metrics
    assert joint.acc[0] == pytest.approx(3 / 8)
    # each metric its own maximum, as the authors' compute_performance is written
    assert per_metric.acc[0] == pytest.approx(5 / 8)
    assert evaluate(p, g, flip="joint").acc[0] == joint.acc[0]


def test_unknown_flip_convention_raises():
    p, g = example()
    with pytest.raises(ValueError):
        evaluate(p, g, flip="best")


def test_joint_accuracy_follows_the_iou_orientation():
    preds = torch.cat([blob_masks(6, 24, 20, 30), noise_masks(6, 24, 20, 31, 0.3)])
    gts = torch.cat([blob_masks(6, 24, 20, 32, 0.2), noise_masks(6, 24, 20, 33, 0.6)])
    s = evaluate(preds, gts.to(torch.uint8))
    for i in range(len(preds)):
        p, g = preds[i, 0].numpy(), gts[i, 0].numpy()
        iou_p = (p & g).sum() / (p | g).sum()
        iou_q = (~p & g).sum() / (~p | g).sum()
        chosen = p if iou_p >= iou_q else ~p
        assert s.acc[i] == pytest.approx(np.mean(chosen == g), abs=1e-12)
        assert s.dice[i] == pytest.approx(2 * (chosen & g).sum() / (chosen.sum() + g.sum()), abs=1e-12)


@pytest.mark.parametrize("flip", ["joint", "per_metric"])
def test_inverted_mask_scores_100(flip):
    gt = blob_masks(3, 32, 32, 0)
    s = evaluate(~gt, gt.to(torch.uint8), flip=flip)
    np.testing.assert_allclose(s.acc, 1.0)
    np.testing.assert_allclose(s.iou, 1.0)
    np.testing.assert_allclose(s.dice, 1.0)
    np.testing.assert_allclose(s.iou_direct, 0.0)
    np.testing.assert_allclose(s.miou, 1.0)
    out = s.summary()
    assert out["acc"] == out["iou"] == out["dice"] == 100.0
    assert out["iou_direct"] == 0.0
    exact = evaluate(gt, gt.to(torch.uint8))
    np.testing.assert_allclose(exact.iou_direct, 1.0)


def test_unknown_pixels_are_excluded():
    gt = blob_masks(4, 40, 36, 1).to(torch.uint8)
    unknown = noise_masks(4, 40, 36, 2, 0.3)
    gt[unknown] = UNKNOWN
    pred = noise_masks(4, 40, 36, 3, 0.5)
    # anything predicted on unknown pixels is ignored, under either flip convention
    for flip in ("joint", "per_metric"):
        base = evaluate(pred, gt, flip=flip)
        for other in (pred | unknown, pred & ~unknown, pred ^ unknown):
            s = evaluate(other, gt, flip=flip)
            for k in ("acc", "iou", "dice", "iou_direct", "miou"):
                np.testing.assert_array_equal(getattr(s, k), getattr(base, k))
    # and the scores are those of the known pixels alone
    base = evaluate(pred, gt, flip="per_metric")
    for i in range(4):
        known = ~unknown[i, 0].numpy()
        p = pred[i, 0].numpy()[known]
        g = gt[i, 0].numpy()[known] == 1
        acc, iou, dice = authors_compute_performance(p, g)
        assert base.acc[i] == pytest.approx(acc)
        assert base.iou[i] == pytest.approx(iou)
        assert base.dice[i] == pytest.approx(dice)
        assert base.iou_direct[i] == pytest.approx((p & g).sum() / (p | g).sum())


def test_hand_example_with_unknown_pixels():
    g = torch.tensor([[1, 1, 0, UNKNOWN]], dtype=torch.uint8).view(1, 1, 1, 4)
    p = torch.tensor([[1, 0, 0, 1]], dtype=torch.bool).view(1, 1, 1, 4)
    s = evaluate(p, g)
    assert s.acc[0] == pytest.approx(2 / 3)          # complement: 1 / 3
    assert evaluate(p, g, flip="per_metric").acc[0] == pytest.approx(2 / 3)
    assert s.iou_direct[0] == pytest.approx(1 / 2)
    assert s.iou[0] == pytest.approx(1 / 2)          # complement: 1 / 3
    assert s.dice[0] == pytest.approx(2 / 3)         # complement: 2 / 4


def test_float_masks_are_thresholded_at_one_half():
    gt = blob_masks(3, 24, 24, 4).to(torch.uint8)
    g = torch.Generator().manual_seed(5)
    prob = torch.rand(3, 1, 24, 24, generator=g)
    prob[(prob - 0.5).abs() < 1e-3] = 0.9         # stay clear of the threshold itself
    s_float = evaluate(prob, gt)
    s_bool = evaluate(prob > 0.5, gt)
    for k in ("acc", "iou", "dice", "iou_direct", "miou"):
        np.testing.assert_array_equal(getattr(s_float, k), getattr(s_bool, k))
    s64 = evaluate(prob.double(), gt)
    np.testing.assert_array_equal(s64.iou_direct, s_bool.iou_direct)


def test_accepts_numpy_and_three_or_two_dimensional_inputs():
    p, g = example()
    ref = evaluate(p, g)
    for pp, gg in ((p.numpy(), g.numpy()), (p[:, 0], g[:, 0]), (p[0, 0], g[0, 0]),
                   (p[:, 0].numpy(), g[:, 0].numpy())):
        s = evaluate(pp, gg)
        assert len(s) == 1
        np.testing.assert_array_equal(s.iou, ref.iou)
        np.testing.assert_array_equal(s.acc, ref.acc)


def test_shape_mismatch_raises():
    p, g = example()
    with pytest.raises(ValueError):
        evaluate(p, g[..., :3])
    with pytest.raises(ValueError):
        evaluate(torch.cat([p, p]), g)
    with pytest.raises(ValueError):
        evaluate(p.expand(1, 2, 4, 4), g)                # two channels
    with pytest.raises(ValueError):
        evaluate(p[None], g[None])                       # five dimensions


def test_matches_authors_formula_on_random_masks():
    n, h, w = 12, 32, 28
    preds = torch.cat([blob_masks(n // 2, h, w, 6), noise_masks(n // 2, h, w, 7, 0.3)])
    gts = torch.cat([blob_masks(n // 2, h, w, 8), noise_masks(n // 2, h, w, 9, 0.6)])
    s = evaluate(preds, gts.to(torch.uint8), flip="per_metric")
    for i in range(n):
        acc, iou, dice = authors_compute_performance(preds[i, 0].numpy(), gts[i, 0].numpy())
        assert s.acc[i] == pytest.approx(acc, abs=1e-12)
        assert s.iou[i] == pytest.approx(iou, abs=1e-12)
        assert s.dice[i] == pytest.approx(dice, abs=1e-12)
    assert s.summary()["iou"] == pytest.approx(100 * s.iou.mean())


def test_miou_is_mean_of_iou_against_truth_and_inverted_truth():
    preds = blob_masks(5, 30, 30, 10)
    gts = blob_masks(5, 30, 30, 11)
    s = evaluate(preds, gts.to(torch.uint8))
    s_inv = evaluate(preds, (~gts).to(torch.uint8))
    np.testing.assert_allclose(s.miou, (s.iou + s_inv.iou) / 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s_inv.miou, s.miou, rtol=0, atol=1e-15)


def test_real_ground_truth(load_horses):
    _, y = load_horses([0, 1, 2])
    assert (y == UNKNOWN).any() or set(np.unique(y.numpy())) <= {0, 1}
    s = evaluate(y == 1, y)
    np.testing.assert_allclose(s.iou_direct, 1.0)
    np.testing.assert_allclose(s.acc, 1.0)


def test_image_without_labelled_pixels_is_left_out_of_the_means():
    """An all-unknown ground truth has nothing to score: it must not count as a perfect
    image (which would raise every mean), but be counted and reported apart."""
    p, g = example()
    blank = torch.full_like(g, UNKNOWN)
    both = evaluate(torch.cat([p, p]), torch.cat([g, blank]))
    alone = evaluate(p, g)
    assert both.labelled.tolist() == [True, False]
    assert np.isnan(both.iou[1]) and np.isnan(both.acc[1]) and np.isnan(both.dice[1])
    s = both.summary()
    assert s["n"] == 1 and s["unlabelled"] == 1
    for k in ("acc", "iou", "dice", "iou_direct", "miou"):
        assert s[k] == pytest.approx(alone.summary()[k])
    assert "1 without labelled pixels" in str(both)
    assert alone.summary()["unlabelled"] == 0 and "labelled" not in str(alone)


def test_all_images_unlabelled_gives_nan_means():
    blank = torch.full((2, 1, 4, 4), UNKNOWN, dtype=torch.uint8)
    s = evaluate(torch.zeros(2, 1, 4, 4, dtype=torch.bool), blank).summary()
    assert s["n"] == 0 and s["unlabelled"] == 2 and np.isnan(s["iou"])
