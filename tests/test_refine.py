"""The refinement phase (IEM + SegNet): protocols, pseudo-label ranking, the pipeline on a
tiny synthetic set, caching and resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iemlib import IEMConfig
from iemlib import refine as rf


def _blob_set(root: Path, n: int, size: int = 64, seed: int = 0, name: str = "blobs") -> Path:
    """A labelled set of n images: a bright disc of random centre and radius on a darker
    textured background (0/255 masks), in the simple layout."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
        r = rng.integers(size // 6, size // 3)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        fg, bg = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.4, 3)
        img = np.where(m[..., None], fg, bg) + rng.normal(0, 0.03, (size, size, 3))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / "images" / f"im{i:03d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / "masks" / f"im{i:03d}.png")
    return folder


FAST = rf.RefineConfig(iem=IEMConfig.paper(iters=8, device="cpu"), epochs=2, batch_size=4,
                       device="cpu", checkpoint_every=2)


def test_rank_pseudo_labels_highest_first_ties_in_image_order():
    errors = torch.tensor([0.5, 0.9, 0.5, 0.9, 0.1])
    assert rf.rank_pseudo_labels(errors, 3).tolist() == [1, 3, 0]
    assert rf.rank_pseudo_labels(errors, 5).tolist() == [1, 3, 0, 2, 4]


@pytest.mark.parametrize("top, available, k", [(None, 20, 20), (None, 9000, 8000), (5, 20, 5),
                                               (50, 20, 20), (0.25, 20, 5), (1.0, 7, 7)])
def test_pseudo_label_count(top, available, k):
    assert rf.RefineConfig(top=top).pseudo_label_count(available) == k


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, True, "8"])
def test_bad_top_is_refused(bad):
    with pytest.raises(rf.RefineError):
        rf.RefineConfig(top=bad)


def test_protocols(tmp_path):
    folder = _blob_set(tmp_path, 6)
    p = rf.protocol_for(folder)
    assert p.transductive and len(p.train_names) == len(p.test_names) == 6
    assert "transductive" in p.description
    (folder / "test.txt").write_text("im001\nim004\n")
    p = rf.protocol_for(folder)
    assert not p.transductive and p.test_names == ["im001.png", "im004.png"]
    assert p.train_names == ["im000.png", "im002.png", "im003.png", "im005.png"]
    assert p.test_y.shape == (2, 1, 128, 128) and p.train_x.shape == (4, 3, 128, 128)
    # --limit keeps the first N images in file-name order, before the split
    p = rf.protocol_for(folder, limit=3)
    assert p.test_names == ["im001.png"] and p.train_names == ["im000.png", "im002.png"]
    (folder / "test.txt").write_text("im001\nnot_there\n")
    with pytest.raises(rf.RefineError, match="not_there"):
        rf.protocol_for(folder)
    (folder / "test.txt").unlink()
    other = _blob_set(tmp_path, 3, seed=1, name="other")
    p = rf.protocol_for(folder, train_dir=other)
    assert not p.transductive and len(p.train_names) == 3 and len(p.test_names) == 6


def test_weizmann_split_is_packaged():
    stems = rf._stems(rf.WEIZMANN_TEST)
    assert len(stems) == 49 and stems[0] == "horse279" and len(set(stems)) == 49


def test_training_images_are_read_without_their_masks(tmp_path, monkeypatch):
    folder = _blob_set(tmp_path, 5)
    (folder / "test.txt").write_text("im004\n")
    read = []
    import iemlib.images as images
    real = images.load_pair

    def spy(image, mask, size=128):
        read.append((Path(image).stem, mask is not None))
        return real(image, mask, size)
    monkeypatch.setattr("iemlib.data.load_pair", spy)
    opened = []
    real_read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda p, *a, **k: opened.append(Path(p).parent.name) or real_read(p, *a, **k))
    rf.protocol_for(folder)
    # only the test image's mask is opened (through load_pair); training images alone
    assert read == [("im004", True)], read
    assert "masks" not in opened and opened.count("images") == 5, opened   # 4 train + 1 test


def test_pipeline_end_to_end_caches_and_resumes(tmp_path, monkeypatch):
    folder = _blob_set(tmp_path, 10)
    p = rf.protocol_for(folder)
    out = tmp_path / "run"
    res = rf.refine(p, FAST.replace(top=8, then_iem=True), out, progress=False)
    assert res.n == 10 and res.pseudo_labels == 8 and res.batch_size == 4 and res.steps == 4
    assert set(res.scores) == {"iem", "segnet", "segnet_iem"}
    for s in res.scores.values():
        assert set(s) == {"acc", "iou", "dice"} and 0 <= s["iou"] <= 100
    # the pseudo-labels are the 8 highest errors
    ranked = torch.argsort(res.train_errors, descending=True, stable=True)[:8]
    assert sorted(res.pseudo_label_names) == sorted(p.train_names[i] for i in ranked)
    saved = json.loads((out / "pseudo_labels.json").read_text())
    assert saved["names"] == res.pseudo_label_names
    assert res.masks["segnet"].shape == (10, 1, 128, 128) and res.masks["segnet"].dtype == torch.bool

    # a rerun recomputes nothing: IEM and training are not called again
    calls = []
    import iemlib.sharded as sh
    monkeypatch.setattr(rf, "segment_sharded", lambda *a, **k: calls.append(1) or sh.segment_sharded(*a, **k))
    again = rf.refine(p, FAST.replace(top=8, then_iem=True), out, progress=False)
    assert calls == [] and again.scores == res.scores
    # other settings: the IEM cache is stale and is recomputed
    rf.refine(p, FAST.replace(top=8, iem=IEMConfig.paper(iters=6, device="cpu")), out, progress=False)
    assert len(calls) == 1


@pytest.mark.slow
def test_a_good_pseudo_label_set_teaches_the_network(tmp_path):
    """On discs the network, trained on IEM's masks, must segment better than chance."""
    folder = _blob_set(tmp_path, 16)
    p = rf.protocol_for(folder)
    res = rf.refine(p, FAST.replace(iem=IEMConfig.paper(iters=40, device="cpu"), epochs=15),
                    tmp_path / "run", progress=False)
    assert res.scores["iem"]["iou"] > 60, res.scores
    assert res.scores["segnet"]["iou"] > 50, res.scores


def test_more_epochs_continue_the_shorter_run_exactly(tmp_path):
    """A 4-epoch run started from a 2-epoch run of the same settings equals a fresh 4-epoch
    run: same weights, same log, same masks (constant lr, randomness a function of the step)."""
    from iemlib.checkpoints import load

    p = rf.protocol_for(_blob_set(tmp_path, 6))
    cfg = FAST.replace(iem=IEMConfig.paper(iters=4, device="cpu"), top=4, checkpoint_every=0)
    short = rf.refine(p, cfg.replace(epochs=2), tmp_path / "a", progress=False)
    longer = rf.refine(p, cfg.replace(epochs=4), tmp_path / "a", progress=False)
    fresh = rf.refine(p, cfg.replace(epochs=4), tmp_path / "b", progress=False)
    assert (short.steps, longer.steps, fresh.steps) == (2, 4, 4)
    assert longer.start_step == 2 and fresh.start_step == 0 and short.start_step == 0
    assert longer.checkpoint != short.checkpoint and short.checkpoint.exists()
    a, b = load(longer.checkpoint, task="segnet"), load(fresh.checkpoint, task="segnet")
    assert a["step"] == b["step"] == 4
    for name, t in a["models"]["segnet"].items():
        assert torch.equal(t, b["models"]["segnet"][name]), name

    def losses(path):
        return [line.split(",")[:2] for line in path.read_text().splitlines()]
    assert losses(longer.log) == losses(fresh.log) and len(losses(fresh.log)) == 5  # header + 4
    assert torch.equal(longer.masks["segnet"], fresh.masks["segnet"])
    # the shorter run is still there, and a rerun of it trains nothing
    again = rf.refine(p, cfg.replace(epochs=2), tmp_path / "a", progress=False)
    assert again.start_step == again.steps == 2 and again.scores == short.scores
    # a longer run is never started from: 3 epochs start afresh from the 2-epoch run
    three = rf.refine(p, cfg.replace(epochs=3), tmp_path / "a", progress=False)
    assert three.start_step == 2


def test_head_keeps_the_split_and_a_transductive_protocol_its_identity(tmp_path):
    folder = _blob_set(tmp_path, 8)
    (folder / "test.txt").write_text("im005\nim006\nim007\n")
    p = rf.protocol_for(folder).head(2, 1)
    assert p.train_names == ["im000.png", "im001.png"] and p.test_names == ["im005.png"]
    assert p.train_x.shape[0] == 2 and p.test_x.shape[0] == p.test_y.shape[0] == 1
    assert not p.transductive and "first 2 of 5 training and 1 of 3 test" in p.description
    (folder / "test.txt").unlink()
    t = rf.protocol_for(folder).head(3, 5)
    assert t.transductive and t.train_names == t.test_names == ["im000.png", "im001.png", "im002.png"]
    assert torch.equal(t.train_x, t.test_x)
    with pytest.raises(rf.RefineError):
        rf.protocol_for(folder).head(0)


def test_no_progress_means_no_bars_only_one_line_per_stage(tmp_path, capfd):
    p = rf.protocol_for(_blob_set(tmp_path, 4))
    rf.refine(p, FAST.replace(iem=IEMConfig.paper(iters=2, device="cpu"), epochs=1, top=4),
              tmp_path / "run", progress=False)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert lines and all(line.startswith("refine: ") for line in lines), lines
