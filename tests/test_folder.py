"""Streaming a folder (iemlib.folder) and the per-image hook of iem.segment it relies on:
memory bounded by the batch, masks saved as soon as their image settles, and the hook's
masks equal to the result's."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import iemlib.iem
from iemlib import IEMConfig, segment
from iemlib.cli import main
from iemlib.images import image_to_array

from test_cli import synthetic


# tensors this small are fastest on one thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def noise(width: int, height: int, seed: int) -> Image.Image:
    """Pixel noise: IEM's mask on it keeps moving for many iterations."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3),
                                                                dtype=np.uint8))


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n synthetic images, one shape: (n, 3, size, ~1.1 size)."""
    return torch.from_numpy(np.stack([image_to_array(synthetic(40, 36, seed=seed + i), size,
                                                     crop=False) for i in range(n)]))


# ------------------------------------------------------------------- the segment hook
@pytest.mark.parametrize("cfg", [
    IEMConfig(iters=20, device="cpu"),
    IEMConfig(iters=20, device="cpu", init_sizes=(44, 78, 92), batch_size=4),  # split images
    IEMConfig(iters=20, device="cpu", init_sizes=(44, 92), impl="reference", batch_size=3),
    IEMConfig(iters=20, device="cpu", init_sizes=(44, 78, 92), select="dataset"),
    IEMConfig(iters=20, device="cpu", early_exit=False, init_sizes=(44, 78)),
], ids=["fast", "three-squares-split", "reference", "dataset", "no-early-exit"])
def test_on_mask_reports_each_image_once_with_its_final_mask(cfg):
    x = torch.cat([images(5), torch.from_numpy(image_to_array(noise(40, 36, 1), 32, crop=False))[None]])
    calls = {}

    def on_mask(i, mask):
        assert i not in calls
        calls[i] = mask.clone()

    result = segment(x, cfg, on_mask=on_mask)
    assert sorted(calls) == list(range(len(x)))
    for i, mask in calls.items():
        assert mask.shape == result.masks[i].shape and mask.dtype == torch.bool
        assert torch.equal(mask, result.masks[i]), i
    plain = segment(x, cfg)
    assert torch.equal(plain.masks, result.masks)
    assert torch.equal(plain.all_errors, result.all_errors)


def test_settled_image_is_reported_before_its_batch_ends(monkeypatch):
    """One batch: a clean ellipse settles at about iteration 11, pixel noise keeps moving.
    The ellipse's mask must reach the caller while the noise is still being iterated."""
    x = torch.from_numpy(np.stack([image_to_array(synthetic(140, 130, seed=0), 128, crop=False),
                                   image_to_array(noise(140, 130, seed=1), 128, crop=False)]))
    real = iemlib.iem.iem_value_and_grad
    count = [0]

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(iemlib.iem, "iem_value_and_grad", counting)
    when = {}
    result = segment(x, IEMConfig(iters=60, device="cpu"), on_mask=lambda i, m: when.setdefault(i, count[0]))
    assert int(result.settled_at[0, 0]) < 20 and int(result.period[1, 0]) == 0
    assert when[0] < 25 < when[1] == count[0]


# ------------------------------------------------------------------- streaming a folder
def test_segment_memory_is_bounded_by_the_batch_not_the_folder(tmp_path, capsys):
    """60 small images of 60 different shapes (24 px high, 24 to 83 wide), so no two
    share a batch: pre-processed to a shorter side of 128 (float32) they take 26 MiB
    together. A run must hold about one batch (here 4 x 128 x 128 pixels) whatever the
    folder: the traced peak (numpy's buffers are traced; torch's own are not, and are
    batch-sized) must stay far below the folder's total."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    n = 60
    for i in range(n):
        synthetic(24 + i, 24, seed=i).save(src / f"img_{i:03d}.png")
    folder_bytes = sum(3 * 128 * round(128 * (24 + i) / 24) * 4 for i in range(n))
    argv = ["segment", str(src), str(out), "--iters", "1", "--device", "cpu", "--quiet",
            "--batch-size", "4"]
    main(argv)  # warm-up: imports and caches are not what is measured
    capsys.readouterr()
    tracemalloc.start()
    try:
        status = main(argv + ["--overwrite"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert status == 0, err
    assert len(list(out.glob("*.png"))) == n
    bound = 4 * 2**20  # a few of the largest images; the folder is six times more
    assert folder_bytes > 6 * bound
    assert peak < bound, f"traced peak {peak / 2**20:.1f} MiB"


def test_interrupt_keeps_the_mask_of_a_settled_image_of_an_unfinished_batch(
        tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    synthetic(140, 130, seed=0).save(src / "a_settles.png")
    noise(140, 130, seed=1).save(src / "b_keeps_moving.png")  # same shape: one batch
    real = iemlib.iem.iem_value_and_grad
    count = [0]

    def interrupt_later(*args, **kwargs):
        count[0] += 1
        if count[0] == 30:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(iemlib.iem, "iem_value_and_grad", interrupt_later)
    status = main(["segment", str(src), str(out), "--iters", "60", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert status == 130 and "interrupted" in err
    assert sorted(p.name for p in out.glob("*.png")) == ["a_settles.png"]
    with Image.open(out / "a_settles.png") as m:
        assert m.size == (140, 130)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
