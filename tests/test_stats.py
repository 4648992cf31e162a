import numpy as np
import pytest
import torch

from iemlib.stats import bootstrap_mean, paired_difference


def test_interval_holds_the_mean_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    small, large = rng.normal(50, 10, 20), rng.normal(50, 10, 2000)
    a, b = bootstrap_mean(small), bootstrap_mean(large)
    assert a.lo < a.mean < a.hi and b.lo < b.mean < b.hi
    assert (b.hi - b.lo) < (a.hi - a.lo) / 5
    # the width follows the standard error: 2 x 1.96 x sd / sqrt(n)
    assert (b.hi - b.lo) == pytest.approx(2 * 1.96 * 10 / np.sqrt(2000), rel=0.15)


def test_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for k in range(200):
        iv = bootstrap_mean(rng.normal(0, 1, 40), draws=500, seed=k)
        covered += iv.lo < 0 < iv.hi
    assert 0.88 <= covered / 200 <= 0.99


def test_pairing_cancels_shared_difficulty():
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0, 1, 100)
    before, after = difficulty, difficulty + 0.02 + rng.normal(0, 0.005, 100)
    d = paired_difference(before, after)
    assert d.lo > 0 and d.mean == pytest.approx(0.02, abs=0.002)
    # unpaired intervals overlap: they could not tell the two apart
    assert bootstrap_mean(after).lo < bootstrap_mean(before).hi


def test_nan_left_out_deterministic_and_tensors_accepted():
    v = torch.tensor([1.0, float("nan"), 3.0])
    assert bootstrap_mean(v).n == 2 and bootstrap_mean(v).mean == 2.0
    assert bootstrap_mean([1, 2, 3, 9]) == bootstrap_mean(np.array([1, 2, 3, 9]))
    d = paired_difference([1.0, float("nan"), 2.0], [2.0, 5.0, 2.0])
    assert d.n == 2 and d.mean == 0.5
    assert str(bootstrap_mean([1.0, 1.0])) == "1.0 [1.0, 1.0]"
    assert paired_difference([0.0], [1.0]).signed() == "+1.0 [+1.0, +1.0]"
    with pytest.raises(ValueError, match="one value per image"):
        paired_difference([1, 2], [1, 2, 3])
    assert np.isnan(bootstrap_mean([]).mean)

