"""The iem commands for learned networks: train-inpainter, --inpainter on evaluate and
segment, refine; and evaluate under torchrun giving one process's JSON."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iemlib import checkpoints as ck
from iemlib.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _set(root: Path, n: int, name: str = "tiny", size: int = 96, seed: int = 0) -> Path:
    """n images with a bright disc on a dark textured background, 0/255 masks."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(size // 3, 2 * size // 3, size=2)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 4) ** 2
        img = np.where(m[..., None], rng.uniform(0.6, 1, 3), rng.uniform(0, 0.4, 3))
        img = img + rng.normal(0, 0.05, img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / "images" / f"p{i:02d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / "masks" / f"p{i:02d}.png")
    return folder


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny gated-convolution checkpoint and its float16 export, made by the command."""
    root = tmp_path_factory.mktemp("inp")
    data = _set(root, 6)
    ckpt, weights = root / "g.pt", root / "w.pt"
    assert main(["train-inpainter", str(data), "--out", str(ckpt), "--width", "4", "--steps", "2",
                 "--batch-size", "2", "--loss", "l1", "--quiet", "--export", str(weights)]) == 0
    return data, ckpt, weights


def test_train_inpainter_resumes_to_the_total_and_exports_provenance(trained, capsys, tmp_path):
    data, ckpt, weights = trained
    assert ck.load(ckpt, task="gatedconv")["step"] == 2
    meta = json.loads(ck.sidecar(weights).read_text())
    for key in ("command", "data", "steps", "seed", "final_losses", "commit", "task_config"):
        assert key in meta, key
    assert meta["steps"] == 2 and meta["data"]["images"] == 6 and "train-inpainter" in meta["command"]
    assert set(meta["final_losses"]) == {"l1_coarse", "l1_refined", "g"}
    floats = [v for v in ck.load(weights)["models"]["generator"].values() if torch.is_floating_point(v)]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    copy = tmp_path / "g.pt"
    copy.write_bytes(ckpt.read_bytes())
    code, _, err = _run(["train-inpainter", data, "--out", copy, "--width", "4", "--steps", "3",
                         "--batch-size", "2", "--loss", "l1", "--quiet", "--resume"], capsys)
    assert code == 0 and "step 3 of 3" in err
    assert ck.load(copy)["step"] == 3
    # without --resume an existing checkpoint is refused, in one line naming it
    code, _, err = _run(["train-inpainter", data, "--out", copy, "--width", "4", "--steps", "3",
                         "--batch-size", "2", "--loss", "l1", "--quiet"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("iem: error")]
    assert code == 1 and len(errors) == 1 and str(copy) in errors[0] and "Traceback" not in err


def test_exported_gan_weights_hold_the_generator_only(trained, capsys, tmp_path):
    """The discriminator only trains the generator; shipping it would double the file."""
    data, _, _ = trained
    weights = tmp_path / "gan.w.pt"
    code, _, err = _run(["train-inpainter", data, "--out", tmp_path / "gan.pt", "--width", "4",
                         "--steps", "1", "--batch-size", "2", "--loss", "l1+gan", "--quiet",
                         "--export", weights], capsys)
    assert code == 0, err
    assert set(ck.load(tmp_path / "gan.pt")["models"]) == {"generator", "discriminator"}
    assert set(ck.load(weights)["models"]) == {"generator"}
    assert json.loads(ck.sidecar(weights).read_text())["models"] == ["generator"]


@pytest.mark.parametrize("argv, problem", [
    (["--width", "6"], "multiple of 4"),
    (["--steps", "0"], "at least 1"),
])
def test_train_inpainter_bad_settings(trained, capsys, tmp_path, argv, problem):
    data, _, _ = trained
    code, _, err = _run(["train-inpainter", data, "--out", tmp_path / "x.pt", "--quiet", *argv], capsys)
    assert code == 1 and problem in err and "Traceback" not in err


def test_train_inpainter_on_an_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = _run(["train-inpainter", tmp_path / "empty", "--out", tmp_path / "x.pt", "--quiet"], capsys)
    assert code == 1 and "empty" in err and "Traceback" not in err


def test_evaluate_with_a_learned_inpainter(trained, capsys):
    data, ckpt, weights = trained
    outs = {}
    for path, output in ((ckpt, "refined"), (weights, "refined"), (ckpt, "coarse")):
        code, out, err = _run(["evaluate", data, "--iters", "3", "--json", "--inpainter", path,
                               "--inpainter-output", output], capsys)
        assert code == 0, err
        outs[(path.name, output)] = json.loads(out)
    assert set(outs[("g.pt", "refined")]) == {"n", "unlabelled", "acc", "iou", "dice", "seconds"}
    code, out, _ = _run(["evaluate", data, "--iters", "3", "--json"], capsys)
    gaussian = json.loads(out)
    assert any(v["iou"] != gaussian["iou"] for v in outs.values()), "the inpainter was not used"


def test_bad_checkpoints_are_one_line(trained, capsys, tmp_path):
    data, _, _ = trained
    from iemlib.segnet_task import SegNetTask
    segnet = tmp_path / "segnet.pt"
    ck.save({"format": ck.CHECKPOINT, "task": "segnet", "task_config": SegNetTask().config(),
             "models": {"segnet": {}}}, segnet)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for path, problem in ((tmp_path / "missing.pt", "no such file"), (bad, "not an iemlib"),
                          (segnet, "expected 'gatedconv'")):
        code, out, err = _run(["evaluate", data, "--iters", "2", "--json", "--inpainter", path], capsys)
        assert code == 1 and out == "" and str(path) in err and problem in err, err
        assert err.count("\n") == 1
    code, _, err = _run(["evaluate", data, "--iters", "2", "--finetune-steps", "1"], capsys)
    assert code == 1 and "needs --inpainter" in err


def test_segment_with_a_learned_inpainter_records_it(trained, capsys, tmp_path):
    data, ckpt, weights = trained
    out = tmp_path / "masks"
    code, _, err = _run(["segment", data / "images", out, "--iters", "2", "--quiet",
                         "--inpainter", weights], capsys)
    assert code == 0, err
    assert len(list(out.glob("*.png"))) == 6
    manifest = json.loads((out / "iem.json").read_text())
    assert manifest["settings"]["inpainter"]["file"] == "w.pt"
    # another inpainter is another setting: refused without --overwrite
    code, _, err = _run(["segment", data / "images", out, "--iters", "2", "--quiet",
                         "--inpainter", ckpt], capsys)
    assert code == 1 and "--overwrite" in err


def test_refine_json(trained, capsys, tmp_path):
    data, _, _ = trained
    code, out, err = _run(["refine", data, "--iters", "4", "--epochs", "1", "--batch-size", "2",
                           "--then-iem", "--out", tmp_path / "run", "--json", "--top", "4"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert set(got) == {"n", "pseudo_labels", "seconds", "iem", "segnet", "segnet_iem", "protocol"}
    assert got["n"] == 6 and got["pseudo_labels"] == 4 and "transductive" in got["protocol"]
    for k in ("iem", "segnet", "segnet_iem"):
        assert set(got[k]) == {"acc", "iou", "dice"}
    code, out, _ = _run(["refine", data, "--iters", "4", "--epochs", "1", "--batch-size", "2",
                         "--out", tmp_path / "run", "--json", "--top", "4"], capsys)
    assert "segnet_iem" not in json.loads(out)


@pytest.mark.parametrize("top", ["0", "1.5", "abc"])
def test_refine_bad_top(trained, capsys, tmp_path, top):
    data, _, _ = trained
    code, _, err = _run(["refine", data, "--top", top, "--out", tmp_path / "r"], capsys)
    assert code == 1 and "top" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()      # refused before any work


def _torchrun(args, env, nproc=2):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "iemlib.cli",
                           *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def test_evaluate_under_torchrun_prints_one_process_json(trained, tmp_path):
    data, _, _ = trained
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    args = ["evaluate", data, "--iters", "15", "--paper", "--select", "dataset", "--json",
            "--batch-size", "6"]
    one = subprocess.run([sys.executable, "-m", "iemlib.cli", *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=300)
    two = _torchrun(args, env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    assert len(two.stdout.strip().splitlines()) == 1, two.stdout   # rank 0 alone prints
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_refine_under_torchrun_matches_one_process(trained, tmp_path):
    data, _, _ = trained
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    common = ["refine", data, "--iters", "6", "--epochs", "2", "--batch-size", "4", "--json", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "iemlib.cli", *map(str, common), "--out", tmp_path / "one"],
                         env=env, capture_output=True, text=True, timeout=300)
    two = _torchrun([*common, "--out", tmp_path / "two"], env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["iem"] == b["iem"]                               # IEM masks: bit for bit
    for k in ("acc", "iou", "dice"):                          # the network: float rounding
        assert abs(a["segnet"][k] - b["segnet"][k]) < 1.0, (a, b)
    # only rank 0 wrote: one checkpoint, one log, no stray temporary files
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert len([f for f in files if f.endswith(".pt") and f.startswith("segnet-")]) == 1
    assert not [f for f in files if f.startswith(".")], files


def test_train_inpainter_under_torchrun_matches_one_process(trained, tmp_path):
    """The gated-convolution task over 2 gloo processes follows one process at the same
    global batch: the logged losses agree within float rounding, step by step."""
    import csv
    data, _, _ = trained
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    common = ["train-inpainter", data, "--width", "4", "--steps", "3", "--batch-size", "4",
              "--loss", "l1", "--log-every", "1", "--quiet", "--lr", "0.01"]
    one = subprocess.run([sys.executable, "-m", "iemlib.cli", *map(str, common), "--out", tmp_path / "one.pt"],
                         env=env, capture_output=True, text=True, timeout=300)
    two = _torchrun([*common, "--out", tmp_path / "two.pt"], env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]

    def losses(path):
        with open(path) as f:
            return [(int(r["step"]), float(r["l1_coarse"]), float(r["l1_refined"])) for r in csv.DictReader(f)]
    a, b = losses(tmp_path / "one.log.csv"), losses(tmp_path / "two.log.csv")
    assert [r[0] for r in a] == [r[0] for r in b] == [1, 2, 3]
    # a large learning rate makes the losses depend on every update (so the comparison
    # below sees a wrong gradient), far beyond the tolerance
    assert abs(a[2][1] - a[0][1]) > 1e-3, a
    for ra, rb in zip(a, b):
        assert abs(ra[1] - rb[1]) < 1e-5 and abs(ra[2] - rb[2]) < 1e-5, (a, b)
