"""The training loop: batches and random streams independent of the world size, exact resume
(clean stop, mid-epoch, signal, killed process), the CSV log, checkpoints, refusals, and a
two-process torchrun run equal to one process; the image corpus."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iemlib import checkpoints as ck
from iemlib import training
from iemlib.corpus import ImageCorpus, find_images
from iemlib.images import ImageError, image_to_array, read_image
from iemlib.segnet_task import load_segnet
from iemlib.training import (TrainConfig, TrainingError, TrainingInterrupted, batch_indices,
                             sample_generator, steps_per_epoch, train)

from training_toys import ToyData, ToyTask, segnet_data, tiny_segnet_task

TOYS = Path(__file__).with_name("training_toys.py")
ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, name="run", **kw):
    base = dict(out=tmp_path / f"{name}.pt", steps=11, batch_size=4, log_every=3,
                checkpoint_every=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _losses(history):
    return [(h["step"], h["mse"], h["critic"]) for h in history]


def _log_rows(path, timing=False):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not timing:
        for r in rows:
            r.pop("seconds"), r.pop("samples_per_s")
    return rows


def _states_equal(a: Path, b: Path) -> None:
    da, db = ck.load(a), ck.load(b)
    assert da["step"] == db["step"]
    for name in da["models"]:
        for k, v in da["models"][name].items():
            assert torch.equal(v, db["models"][name][k]), f"{name}.{k}"

    def walk(x, y, where):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        else:
            assert x == y, where
    walk(da["optimizers"], db["optimizers"], "optimizers")


@pytest.fixture
def reference(tmp_path):
    """An uninterrupted 11-step toy run: (result, config)."""
    cfg = _config(tmp_path, "reference")
    return train(ToyTask(), ToyData(), cfg), cfg


# --------------------------------------------------------------------------------------
# Batches and random streams.

@pytest.mark.parametrize("n, batch, world", [(18, 4, 2), (17, 4, 2), (25, 6, 3), (20, 8, 4)])
def test_ranks_batches_together_are_one_process_batches(n, batch, world):
    for epoch in range(3):
        one = batch_indices(n, batch, seed=5, epoch=epoch)
        ranks = [batch_indices(n, batch, 5, epoch, world, r) for r in range(world)]
        assert len(one) == steps_per_epoch(n, batch) == n // batch
        assert all(len(rb) == len(one) for rb in ranks)
        for i, b in enumerate(one):
            assert len(b) == batch
            assert all(len(rb[i]) == batch // world for rb in ranks)
            assert sorted(b) == sorted(j for rb in ranks for j in rb[i])
        flat = [j for b in one for j in b]
        assert len(set(flat)) == len(flat) and set(flat) <= set(range(n))
    # epochs are different permutations, and the seed matters
    assert batch_indices(n, batch, 5, 0) != batch_indices(n, batch, 5, 1)
    assert batch_indices(n, batch, 5, 0) != batch_indices(n, batch, 6, 0)


def test_sample_generator_is_a_pure_function_of_seed_epoch_index():
    draw = lambda *a: torch.rand(3, generator=sample_generator(*a))  # noqa: E731
    assert torch.equal(draw(0, 1, 2), draw(0, 1, 2))
    others = [draw(1, 1, 2), draw(0, 2, 2), draw(0, 1, 3), draw(0, 2, 1)]
    assert all(not torch.equal(draw(0, 1, 2), o) for o in others)
    # a sample drawn by the loop's view of the data is the same whoever draws it
    data = ToyData()
    s = training._Samples(data, seed=3)
    assert torch.equal(s[(1, 7)]["x"], data.get(7, sample_generator(3, 1, 7))["x"])


def test_global_batch_must_divide_by_world_size(tmp_path, monkeypatch):
    monkeypatch.setattr(training.dist, "world_size", lambda: 2)
    monkeypatch.setattr(training.dist, "init", lambda *a: torch.device("cpu"))
    with pytest.raises(TrainingError, match=r"batch size 5 does not divide by 2 processes"):
        train(ToyTask(), ToyData(), _config(tmp_path, batch_size=5))
    with pytest.raises(TrainingError, match="does not divide"):
        batch_indices(18, 5, 0, 0, world=2, rank=0)


# --------------------------------------------------------------------------------------
# Training does something, and exactly the same thing when resumed.

def test_a_few_steps_lower_the_loss_and_the_log_has_every_row(tmp_path):
    cfg = _config(tmp_path, steps=60, batch_size=6, log_every=20)
    result = train(ToyTask(), ToyData(), cfg)
    first = np.mean([h["mse"] for h in result.history[:10]])
    final = np.mean([h["mse"] for h in result.history[-10:]])
    assert final < 0.8 * first  # dropout keeps a floor under this toy loss; it must fall clearly
    rows = _log_rows(cfg.log_path, timing=True)
    assert [int(r["step"]) for r in rows] == [20, 40, 60]
    assert set(rows[0]) == {"step", "mse", "critic", "lr_net", "lr_critic", "seconds", "samples_per_s"}
    # a row is the mean of its steps' losses
    assert float(rows[1]["mse"]) == pytest.approx(np.mean([h["mse"] for h in result.history[20:40]]), rel=1e-6)
    assert float(rows[0]["lr_net"]) == 1e-2 and float(rows[2]["samples_per_s"]) > 0


@pytest.mark.parametrize("stop", [4, 7], ids=["epoch-boundary", "mid-epoch-mid-row"])
def test_resume_equals_an_uninterrupted_run(tmp_path, reference, stop):
    ref, ref_cfg = reference
    cfg = _config(tmp_path, steps=stop)
    first = train(ToyTask(), ToyData(), cfg)
    assert first.step == stop
    data = ToyData()
    second = train(ToyTask(), data, _config(tmp_path), resume=True)
    assert second.start_step == stop and second.step == 11
    assert _losses(first.history + second.history) == _losses(ref.history)  # bit for bit
    _states_equal(cfg.out, ref_cfg.out)
    assert _log_rows(cfg.log_path) == _log_rows(ref_cfg.log_path)
    # consumed batches were skipped without being loaded: exactly the remaining steps' samples
    per_epoch = steps_per_epoch(len(data), 4)
    expected = [i for s in range(stop, 11)
                for i in batch_indices(len(data), 4, 0, s // per_epoch)[s % per_epoch]]
    assert data.loaded == expected


def test_dataloader_workers_change_nothing(tmp_path, reference):
    ref, ref_cfg = reference
    cfg = _config(tmp_path, workers=2)
    assert _losses(train(ToyTask(), ToyData(), cfg).history) == _losses(ref.history)
    _states_equal(cfg.out, ref_cfg.out)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_checkpoint_and_resume_is_exact(tmp_path, reference, capsys, signum):
    ref, ref_cfg = reference
    cfg = _config(tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as e:
        train(ToyTask(signal_at=5, signum=signum), ToyData(), cfg)
    assert e.value.code == 128 + signum
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(str(cfg.out))
    assert signal.Signals(signum).name in err and "step 5" in err
    assert ck.load(cfg.out)["step"] == 5
    assert signal.getsignal(signal.SIGINT) is handler  # the loop's handlers are gone
    second = train(ToyTask(), ToyData(), cfg, resume=True)
    assert _losses(second.history) == _losses(ref.history)[5:]
    _states_equal(cfg.out, ref_cfg.out)
    assert _log_rows(cfg.log_path) == _log_rows(ref_cfg.log_path)


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(torch.get_num_threads()))
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


def test_a_killed_run_resumes_exactly_and_its_log_is_cut_back(tmp_path, reference):
    ref, ref_cfg = reference
    cfg = _config(tmp_path, log_every=1, checkpoint_every=4)
    ref_cfg1 = _config(tmp_path, "reference1", log_every=1)
    ref1 = train(ToyTask(), ToyData(), ref_cfg1)
    proc = subprocess.Popen([sys.executable, str(TOYS), "train", "--out", str(cfg.out),
                             "--steps", "11", "--checkpoint-every", "4", "--stall-at", "8"],
                            env=_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # step 7 logged: the process now hangs in step 8
            if cfg.log_path.exists() and "\n7," in cfg.log_path.read_text():
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the training subprocess never reached step 7")
    finally:
        proc.kill()
        proc.wait()
    assert ck.load(cfg.out)["step"] == 4
    with open(cfg.log_path, "a") as f:
        f.write("8,0.1")  # a row cut short by the crash
    second = train(ToyTask(), ToyData(), cfg, resume=True)
    assert second.start_step == 4
    assert _losses(second.history) == _losses(ref.history)[4:]
    _states_equal(cfg.out, ref_cfg.out)
    assert _log_rows(cfg.log_path) == _log_rows(ref_cfg1.log_path)
    assert [int(r["step"]) for r in _log_rows(cfg.log_path)] == list(range(1, 12))


def test_an_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, reference, monkeypatch):
    ref, ref_cfg = reference
    cfg = _config(tmp_path, checkpoint_every=4)
    real_save, calls = torch.save, []

    def failing_save(obj, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:  # the checkpoint of step 8 dies half-written
            Path(path).write_bytes(b"PK\x03\x04 half a file")
            raise KeyboardInterrupt
        return real_save(obj, path, *a, **k)
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        train(ToyTask(), ToyData(), cfg)
    monkeypatch.setattr(torch, "save", real_save)
    assert ck.load(cfg.out)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["reference.log.csv", "reference.pt", "run.log.csv", "run.pt"]  # no temporary file left
    second = train(ToyTask(), ToyData(), cfg, resume=True)
    assert _losses(second.history) == _losses(ref.history)[4:]
    _states_equal(cfg.out, ref_cfg.out)


# --------------------------------------------------------------------------------------
# Refusals and no-ops.

@pytest.mark.parametrize("change, problem", [
    (lambda: (ToyTask(hidden=16), ToyData(), {}), 'another toy configuration (hidden: 8 in the checkpoint, 16 now)'),
    (lambda: (ToyTask(), ToyData(), {"batch_size": 6}), "batch size 6; the checkpoint was trained with 4"),
    (lambda: (ToyTask(), ToyData(), {"seed": 1}), "seed 1; the checkpoint was trained with 0"),
    (lambda: (ToyTask(), ToyData(20), {}), "on 20 training samples; the checkpoint was trained on 18"),
])
def test_resume_refuses_a_different_run_in_one_line(tmp_path, change, problem):
    cfg = _config(tmp_path, steps=4)
    train(ToyTask(), ToyData(), cfg)
    before = cfg.out.read_bytes()
    task, data, kw = change()
    with pytest.raises(ck.CheckpointError) as e:
        train(task, data, _config(tmp_path, **kw), resume=True)
    msg = str(e.value)
    assert msg.startswith(str(cfg.out)) and problem in msg and "\n" not in msg
    assert cfg.out.read_bytes() == before


def test_bad_outputs_are_refused_in_one_line(tmp_path):
    cfg = _config(tmp_path, steps=4)
    train(ToyTask(), ToyData(), cfg)
    with pytest.raises(TrainingError, match=r"run\.pt: a checkpoint is already there; resume it"):
        train(ToyTask(), ToyData(), cfg)
    weights = ck.export_weights(cfg.out, tmp_path / "w.pt", {"command": "test"})
    with pytest.raises(ck.CheckpointError, match=r"w\.pt: a weights file, not a checkpoint"):
        train(ToyTask(), ToyData(), _config(tmp_path, out=weights), resume=True)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ck.CheckpointError, match=r"junk\.pt: not an iemlib checkpoint"):
        train(ToyTask(), ToyData(), _config(tmp_path, out=junk), resume=True)
    with pytest.raises(TrainingError, match="18 training samples are fewer than one batch of 32"):
        train(ToyTask(), ToyData(), _config(tmp_path, "small", batch_size=32))
    with pytest.raises(TrainingError, match="steps must be an integer >= 1"):
        _config(tmp_path, steps=0)


def test_resume_of_a_finished_run_says_so_and_does_nothing(tmp_path, capsys):
    cfg = _config(tmp_path, steps=5)
    done = train(ToyTask(), ToyData(), cfg)
    files = {p: p.read_bytes() for p in (cfg.out, cfg.log_path)}
    capsys.readouterr()
    data = ToyData()
    again = train(ToyTask(), data, cfg, resume=True)
    err = capsys.readouterr().err.strip()
    assert err == f"{cfg.out}: already at step 5 (of 5 asked for); nothing to do"
    assert again.history == [] and again.step == 5 and again.losses == done.losses
    assert data.loaded == [] and all(p.read_bytes() == b for p, b in files.items())


def test_resume_without_a_checkpoint_starts_afresh(tmp_path, capsys):
    cfg = _config(tmp_path, steps=3)
    fresh = train(ToyTask(), ToyData(), _config(tmp_path, "fresh", steps=3))
    result = train(ToyTask(), ToyData(), cfg, resume=True)
    assert "no checkpoint yet; training from step 0" in capsys.readouterr().err
    assert _losses(result.history) == _losses(fresh.history)


def test_progress_bar_shows_running_losses_on_stderr(tmp_path, capsys):
    train(ToyTask(), ToyData(), _config(tmp_path, steps=3, progress=True))
    err = capsys.readouterr().err
    assert "toy" in err and "mse=" in err and "critic=" in err and "3/3" in err


# --------------------------------------------------------------------------------------
# Two processes under torchrun.

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one_at_the_same_global_batch(tmp_path):
    """SegNet (instance norm, so no statistic crosses the batch) on a two-colour set,
    global batch 8 = 2 x 4; one process in this test, two under torchrun with gloo."""
    steps = 6
    one_cfg = TrainConfig(out=tmp_path / "one.pt", steps=steps, batch_size=8, log_every=1,
                          checkpoint_every=0, progress=False)
    one = train(tiny_segnet_task(), segnet_data(), one_cfg)
    out, js = tmp_path / "two.pt", tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(TOYS), "train",
           "--task", "segnet", "--out", str(out), "--steps", str(steps), "--batch-size", "8",
           "--json", str(js)]
    env = dict(_env(), OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    two = json.loads(js.read_text())
    assert two["world"] == 2 and two["wrapped"] == ["DistributedDataParallel"]
    a = np.array([h["bce"] for h in one.history])
    b = np.array([h["bce"] for h in two["history"]])
    assert len(b) == steps and np.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
    assert not np.allclose(a[0], a[-1])  # the weights moved, so equality is not trivial
    # The networks compute the same function. Single weights may differ by up to about one
    # Adam step (lr): Adam divides by sqrt(v), so a gradient that is rounding noise (the
    # residual conv's bias, which the instance norm after it cancels exactly) moves its
    # weight by ~lr whatever its sign, and the sign follows the rounding.
    net1, net2 = load_segnet(one_cfg.out), load_segnet(out)
    x = segnet_data().images
    with torch.no_grad():
        assert torch.allclose(net1(x, logits=True), net2(x, logits=True), rtol=1e-4, atol=1e-4)
    w1, w2 = ck.load(one_cfg.out)["models"]["segnet"], ck.load(out)["models"]["segnet"]
    lr = tiny_segnet_task().lr
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < lr
    rows1, rows2 = _log_rows(one_cfg.log_path), _log_rows(tmp_path / "two.log.csv")
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2]
    # a checkpoint written by two processes resumes in one
    more = train(tiny_segnet_task(), segnet_data(), TrainConfig(
        out=out, steps=steps + 1, batch_size=8, log_every=1, progress=False), resume=True)
    assert more.start_step == steps and more.step == steps + 1


# --------------------------------------------------------------------------------------
# The image corpus.

def _write(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def test_corpus_finds_images_recursively_but_never_ground_truth(tmp_path):
    s = tmp_path / "set"
    _write(s / "images" / "b.jpg", 40, 30)
    _write(s / "images" / "sub" / "a.png", 40, 30)
    _write(s / "masks" / "b.png", 40, 30)
    _write(s / "images" / "masks" / "x.png", 40, 30)
    _write(s / "images" / ".hidden" / "y.png", 40, 30)
    (s / "images" / "notes.txt").write_text("not an image")
    plain = tmp_path / "plain"
    _write(plain / "z.BMP", 30, 40)
    _write(plain / "segmentations" / "z.png", 30, 40)
    _write(plain / "deep" / "er" / "w.jpeg", 30, 40)
    c = ImageCorpus([s, plain, s / "images"], size=16)  # overlapping folders count once
    rel = [str(p.relative_to(tmp_path)) for p in c.files]
    assert rel == ["set/images/b.jpg", "set/images/sub/a.png", "plain/z.BMP", "plain/deep/er/w.jpeg"]
    assert find_images(s) == c.files[:2]


@pytest.mark.parametrize("make, problem", [
    (lambda d: (d / "bad.jpg").write_text("text"), "bad.jpg: not a readable image"),
    (lambda d: _write(d / "tiny.png", 8, 40), "tiny.png: image is 8x40, smaller than 16"),
    (lambda d: Image.fromarray(np.zeros((20, 20), np.uint16)).save(d / "deep.png"), "deep.png: 16-bit image"),
])
def test_corpus_refuses_unreadable_files_in_one_line_naming_them(tmp_path, make, problem):
    _write(tmp_path / "good.jpg", 40, 30)
    make(tmp_path)
    with pytest.raises(ImageError) as e:
        ImageCorpus(tmp_path, size=16)
    assert problem in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImageError, match="no such folder"):
        ImageCorpus(tmp_path / "missing")
    with pytest.raises(ImageError, match="no images found"):
        ImageCorpus((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_corpus_samples_are_random_crops_and_flips_of_the_papers_resize(tmp_path):
    path = _write(tmp_path / "a.jpg", 90, 60, seed=3)
    size = 24
    full = torch.from_numpy(image_to_array(read_image(path), size, crop=False))  # (3, 24, 36)
    c = ImageCorpus(tmp_path, size=size)
    offsets, flips = set(), set()
    for seed in range(40):
        x = c.get(0, torch.Generator().manual_seed(seed))["image"]
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        hits = [(left, flip) for left in range(full.shape[2] - size + 1) for flip in (False, True)
                if torch.equal(x, (lambda w: w.flip(-1) if flip else w)(full[:, :, left:left + size]))]
        assert hits, "a sample is not a crop of the resized image"
        offsets.add(hits[0][0]), flips.add(hits[0][1])
        again = c.get(0, torch.Generator().manual_seed(seed))["image"]
        assert torch.equal(x, again)
    assert len(offsets) > 5 and flips == {False, True}


def test_corpus_skips_a_file_broken_inside_with_one_warning(tmp_path, capsys):
    _write(tmp_path / "a.jpg", 200, 150, seed=1)
    good = _write(tmp_path / "b.jpg", 40, 30, seed=2)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[:len(data) // 3])  # header intact, pixels cut
    c = ImageCorpus(tmp_path, size=16, flip=False)
    assert len(c) == 2
    x = c.get(0, torch.Generator().manual_seed(0))["image"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a.jpg" in err[0] and err[0].startswith("warning: skipping")
    assert c.resized(0) is c.resized(1)  # the next image took its place (cached once)
    assert x.shape == (3, 16, 16)
    c.get(0, torch.Generator().manual_seed(1))
    assert capsys.readouterr().err == ""  # warned once
    assert np.array_equal(c.resized(1), np.asarray(read_image(good).resize((21, 16), Image.NEAREST)))


def test_corpus_on_the_shared_sets(shared_dir):
    sets = [shared_dir / "data" / s for s in ("weizmann_horse", "grabcut", "coco_mval")]
    sets = [s for s in sets if (s / "images").is_dir()]
    if not sets:
        pytest.skip("no shared image sets")
    c = ImageCorpus(sets)
    assert len(c) == sum(len(list((s / "images").iterdir())) for s in sets)
    x = c.get(len(c) - 1, torch.Generator().manual_seed(0))["image"]
    assert x.shape == (3, 128, 128) and -1 <= x.min() < x.max() <= 1
