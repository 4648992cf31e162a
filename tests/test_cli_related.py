"""``iem evaluate --method M`` and ``iem segment --method M``: every method of the field
through the command line, and the options that do not apply to a method refused in one
line.

The sets are two synthetic 32 x 32 images (a red disc on blue; ``iem evaluate`` brings
every image to 128 x 128, ReDO's size); the methods that train run one or two steps on
one CPU thread.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from iemlib.cli import main
from iemlib.related import METHODS


# tensors this small are fastest on one thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv) -> tuple[int, str, str]:
    """``iem ARGV`` in-process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *names: str) -> str:
    """A clean refusal: status 1, exactly one line on stderr naming each of ``names``, no
    traceback."""
    assert status == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("iem: error:")
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    return lines[0]


def disc(size: int = 32, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A red disc (radius 3/8 of the side) on blue with a little noise; its mask (bool)."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    inside = (yy - c) ** 2 + (xx - c) ** 2 <= (0.375 * size) ** 2
    rng = np.random.default_rng(seed)
    arr = np.where(inside[..., None], [200, 50, 60], [60, 120, 200]) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)), inside


@pytest.fixture(scope="module")
def disc_set(tmp_path_factory):
    """A labelled set ``images/*.png`` + ``masks/*.png`` (0 / 255) of three discs."""
    root = tmp_path_factory.mktemp("related") / "discs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        img, inside = disc(seed=i)
        img.save(root / "images" / f"d{i}.png")
        Image.fromarray(inside.astype(np.uint8) * 255).save(root / "masks" / f"d{i}.png")
    return root


def read_binary_mask(path, size) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == size
        arr = np.asarray(img)
    assert set(np.unique(arr).tolist()) <= {0, 255}
    return arr == 255


# ----------------------------------------------------------------------------- evaluate
#: one or two steps of every method; the methods trained on the set (iic at its full
#: width, redo at its CPU budget) one step each, as they are the slowest
EVALUATE = {
    "iem": ["--train-steps", "2", "--iters", "5"],
    "grabcut": ["--train-steps", "2"],
    "kmeans": ["--train-steps", "2"],
    "kanezaki": ["--train-steps", "2"],
    "kanezaki-tip": ["--train-steps", "2"],
    "mmt": ["--train-steps", "2"],
    "iic": ["--train-steps", "1"],
    "redo": ["--train-steps", "1", "--cpu-budget"],
}


def test_evaluate_options_cover_every_method():
    assert set(EVALUATE) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_every_method_prints_one_json_line(capsys, disc_set, method):
    status, stdout, err = run(capsys, "evaluate", disc_set, "--method", method, "--limit", "2",
                              "--json", "--device", "cpu", *EVALUATE[method])
    assert status == 0, err
    assert "Traceback" not in err and "error" not in err
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    result = json.loads(lines[0])
    assert set(result) == {"n", "unlabelled", "acc", "iou", "dice", "seconds"}
    assert result["n"] == 2 and result["unlabelled"] == 0
    for key in ("acc", "iou", "dice"):
        assert 0 <= result[key] <= 100, result
    assert result["seconds"] >= 0
    if method in ("grabcut", "kmeans"):
        # two flat colours: the colour clusters are the discs; a note says steps are ignored
        assert result["iou"] >= 90, result
        assert "does not train, so it is ignored" in err
    if method == "iem":
        assert "learning-free" in err


def test_evaluate_kmeans_json_matches_the_library(capsys, disc_set):
    """The CLI's numbers are the library's, on the set as iem evaluate loads it."""
    from iemlib import related
    from iemlib.data import open_dataset
    from iemlib.metrics import evaluate

    status, stdout, err = run(capsys, "evaluate", disc_set, "--method", "kmeans", "--json",
                              "--device", "cpu")
    assert status == 0, err
    got = json.loads(stdout)
    ds = open_dataset(str(disc_set))
    pairs = [ds[i] for i in range(len(ds))]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
    assert x.shape == (3, 3, 128, 128)
    s = evaluate(related.segment(x, "kmeans").masks, y).summary()
    assert got["n"] == 3
    for key in ("acc", "iou", "dice"):
        assert got[key] == round(s[key], 3)


def test_evaluate_plain_output_names_the_method(capsys, disc_set):
    status, stdout, err = run(capsys, "evaluate", disc_set, "--method", "kmeans", "--limit", "1",
                              "--device", "cpu", "--quiet")
    assert status == 0, err
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert "kmeans," in lines[1] and "per image" in lines[1]


# ------------------------------------------------------------------------------ segment
@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    truth = {}
    for i, size in enumerate((32, 40)):
        img, inside = disc(size, seed=i)
        img.save(src / f"s{size}.png")
        truth[f"s{size}"] = (img.size, inside)
    return src, truth


def test_segment_kmeans_writes_one_mask_per_image(capsys, folder, tmp_path):
    src, truth = folder
    out = tmp_path / "out"
    status, stdout, err = run(capsys, "segment", src, out, "--method", "kmeans", "--quiet")
    assert status == 0, err
    assert stdout == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("kmeans: segmented 2, skipped 0 already done, failed 0"), err
    for stem, (size, inside) in truth.items():
        m = read_binary_mask(out / f"{stem}.png", size)
        agree = float(np.mean(m == inside))
        assert max(agree, 1 - agree) >= 0.95, stem
    settings = json.loads((out / "iem.json").read_text())["settings"]
    assert settings["method"] == "kmeans" and settings["size"] == 128

    # again: both found done
    status, _, err = run(capsys, "segment", src, out, "--method", "kmeans", "--quiet")
    assert status == 0, err
    assert "segmented 0, skipped 2 already done" in err.strip().splitlines()[-1]
    # IEM into the same folder refuses to mix its masks with k-means'
    status, _, err = run(capsys, "segment", src, out, "--quiet", "--iters", "5")
    assert_one_line_error(status, err, "method")


def test_segment_kanezaki_with_train_steps(capsys, folder, tmp_path):
    src, truth = folder
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", src, out, "--method", "kanezaki", "--train-steps", "2",
                         "--size", "32", "--quiet", "--device", "cpu")
    assert status == 0, err
    assert "kanezaki: segmented 2" in err
    for stem, (size, _) in truth.items():
        read_binary_mask(out / f"{stem}.png", size)
    settings = json.loads((out / "iem.json").read_text())["settings"]
    assert settings["method"] == "kanezaki" and settings["max_iters"] == 2
    assert settings["size"] == 32


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_inpainter_with_another_method_is_refused(capsys, folder, disc_set, tmp_path, command):
    where = [folder[0], tmp_path / "out"] if command == "segment" else [disc_set]
    status, stdout, err = run(capsys, command, *where, "--inpainter", "X", "--method", "kmeans")
    assert_one_line_error(status, err, "--inpainter", "kmeans")
    assert stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, method, named", [
    (["--work-dir", "WORK"], "kmeans", "--work-dir"),
    (["--work-dir", "WORK"], "kanezaki", "--work-dir"),
    (["--cpu-budget"], "iic", "--cpu-budget"),
    (["--cpu-budget"], "kmeans", "--cpu-budget"),
    (["--train-steps", "0"], "kanezaki", "at least 1"),
    (["--train-steps", "-3"], "redo", "at least 1"),
    (["--cpu-budget"], "iem", "--cpu-budget"),
    (["--work-dir", "WORK"], "iem", "--work-dir"),
    (["--train-steps", "0"], "iem", "--train-steps"),
])
@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_options_that_do_not_apply_are_refused_in_one_line(capsys, folder, disc_set, tmp_path,
                                                           command, option, method, named):
    option = [str(tmp_path / "work") if a == "WORK" else a for a in option]
    where = [folder[0], tmp_path / "out"] if command == "segment" else [disc_set]
    status, stdout, err = run(capsys, command, *where, "--method", method, *option,
                              "--iters", "5", "--device", "cpu")
    assert_one_line_error(status, err, named)
    assert stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_train_steps_zero_with_a_method_that_does_not_train_is_an_error(capsys, folder, disc_set,
                                                                        tmp_path, command):
    where = [folder[0], tmp_path / "out"] if command == "segment" else [disc_set]
    status, stdout, err = run(capsys, command, *where, "--method", "kmeans", "--train-steps", "0")
    assert status == 1
    assert "Traceback" not in err and stdout == ""
    errors = [line for line in err.splitlines() if line.startswith("iem: error:")]
    assert len(errors) == 1 and "at least 1" in errors[0]
    assert not (tmp_path / "out").exists()


def test_seed_of_a_method_without_one_is_refused(capsys, disc_set):
    status, _, err = run(capsys, "evaluate", disc_set, "--method", "kmeans", "--seed", "3")
    assert_one_line_error(status, err, "seed")


def test_seed_reaches_the_method(capsys, folder, tmp_path):
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", folder[0], out, "--method", "kanezaki", "--seed", "4",
                         "--train-steps", "1", "--size", "32", "--quiet", "--device", "cpu")
    assert status == 0, err
    assert json.loads((out / "iem.json").read_text())["settings"]["seed"] == 4


@pytest.mark.parametrize("command", ["segment", "evaluate"])
@pytest.mark.parametrize("method", [[], ["--method", "iem"]], ids=["default", "explicit"])
def test_seed_with_iem_is_refused(capsys, folder, disc_set, tmp_path, command, method):
    if command == "segment":
        argv = ["segment", folder[0], tmp_path / "out", "--size", "32", "--quiet"]
    else:
        argv = ["evaluate", disc_set, "--limit", "1", "--json"]
    status, _, err = run(capsys, *argv, *method, "--seed", "3", "--iters", "2", "--device", "cpu")
    assert_one_line_error(status, err, "--seed")


@pytest.mark.parametrize("method, extra", [("iic", []), ("redo", ["--cpu-budget"])])
def test_set_trained_methods_train_under_torchrun(disc_set, tmp_path, method, extra):
    """Two gloo processes: the method trains with DistributedDataParallel in the shared
    work folder, and rank 0 alone prints the one JSON line."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "iemlib.cli",
                          "evaluate", str(disc_set), "--method", method, "--limit", "2",
                          "--train-steps", "2", "--work-dir", str(work), "--device", "cpu",
                          "--json", *extra], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, run.stdout
    assert set(json.loads(lines[0])) == {"n", "unlabelled", "acc", "iou", "dice", "seconds"}
    logs = list(work.glob("*.log.csv"))
    assert logs, list(work.iterdir())
    assert logs[0].read_text().strip().splitlines()[-1].startswith("2,")


def test_torchrun_refuses_a_set_method_without_a_shared_folder(disc_set, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    status, _, err = run(capsys, "evaluate", disc_set, "--method", "iic", "--limit", "2", "--json")
    assert_one_line_error(status, err, "--work-dir")
    status, _, err = run(capsys, "evaluate", disc_set, "--method", "kmeans", "--limit", "2", "--json")
    assert_one_line_error(status, err, "one process")
