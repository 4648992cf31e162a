"""The weights shipped with iemlib: where they are found, what they hold, how they fail."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from iemlib import weights
from iemlib.checkpoints import WEIGHTS, CheckpointError, load
from iemlib.cli import main
from iemlib.gatedconv_inpainter import GatedConvInpainter, load_generator, weights_path

BUDGET = 5_000_000     # bytes: every shipped weights file together


@pytest.mark.parametrize("name", sorted(weights.SHIPPED))
def test_shipped_weights_load_and_carry_their_provenance(name):
    path = weights.shipped_path(name)
    data = load(path, task="gatedconv")
    assert data["format"] == WEIGHTS and set(data["models"]) == {"generator"}
    assert all(v.dtype == torch.float16 for v in data["models"]["generator"].values()
               if torch.is_floating_point(v))
    meta = weights.provenance(name)
    for key in ("command", "data", "steps", "seed", "final_losses", "commit", "batch_size"):
        assert key in meta, f"{path.name}.json lacks {key}"
    assert meta["command"].startswith("iem train-inpainter ") and "--export" in meta["command"]
    assert "+dirty" not in meta["commit"] and meta["commit"] != "unknown"
    assert meta["task_config"] == data["task_config"]
    loss = "l1+gan" if name == "gatedconv" else "l1"
    assert meta["task_config"]["loss"] == loss and f"--loss {loss}" in meta["command"]
    # the training log covers the whole run, step by step up to the exported step
    with open(weights.training_log(name), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["step"]) == meta["steps"]
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})
    net, _ = load_generator(name)
    out = GatedConvInpainter(net)(torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def test_the_shipped_weights_fit_the_budget():
    total = sum(weights.shipped_path(n).stat().st_size for n in weights.SHIPPED)
    assert total <= BUDGET, f"shipped weights take {total / 1e6:.2f} MB, more than {BUDGET / 1e6} MB"


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gatedconv").write_bytes(b"not weights")
    assert weights.resolve("gatedconv") == Path("gatedconv")
    with pytest.raises(CheckpointError, match=r"^gatedconv: not (a readable PyTorch file|an iemlib checkpoint)"):
        load_generator("gatedconv")


def test_unknown_names_are_paths_and_missing_files_say_so(tmp_path, monkeypatch, capsys):
    assert weights.resolve("no-such-name").name == "no-such-name"
    with pytest.raises(KeyError):
        weights.shipped_path("no-such-name")
    monkeypatch.setattr(weights, "HERE", tmp_path)           # an installation without the files
    with pytest.raises(CheckpointError) as err:
        weights_path("gatedconv-l1")
    assert "gatedconv_c24_l1.pt" in str(err.value) and "missing" in str(err.value)
    assert "\n" not in str(err.value)
    (tmp_path / "sets" / "s" / "images").mkdir(parents=True)
    code = main(["evaluate", str(tmp_path / "sets" / "s"), "--inpainter", "gatedconv-l1", "--json"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err


def test_the_package_data_lists_the_weights():
    text = (weights.HERE.parent.parent / "pyproject.toml").read_text()
    assert '"weights/*.pt"' in text and '"weights/*.json"' in text and '"weights/*.csv"' in text
    for name, (file, _) in weights.SHIPPED.items():
        assert json.loads((weights.HERE / (file + ".json")).read_text())["steps"] > 0
