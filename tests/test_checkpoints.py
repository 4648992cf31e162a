"""Checkpoint / weights files: round trip, float16 export, and one-line errors naming the file."""
import json

import pytest
import torch

from iemlib import checkpoints as ck


def _payload(net, task="toy"):
    return {"format": ck.CHECKPOINT, "task": task, "task_config": {"width": 4}, "step": 7,
            "models": {"net": net.state_dict()}}


def test_round_trip_and_half_export(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    path = ck.save(_payload(net), tmp_path / "a.pt")
    data = ck.load(path, task="toy")
    assert data["step"] == 7 and data["version"] == ck.VERSION
    other = torch.nn.Linear(3, 2)
    ck.load_state(other, data["models"]["net"], path, "net")
    assert torch.equal(other.weight, net.weight)

    out = ck.export_weights(path, tmp_path / "w.pt", {"command": "train", "seed": 0})
    w = ck.load(out, task="toy")
    assert w["format"] == ck.WEIGHTS and w["models"]["net"]["weight"].dtype == torch.float16
    meta = json.loads(ck.sidecar(out).read_text())
    assert meta["seed"] == 0 and meta["dtype"] == "float16" and meta["task_config"] == {"width": 4}
    half = torch.nn.Linear(3, 2)
    ck.load_state(half, w["models"]["net"], out, "net")       # float16 loads into float32
    assert half.weight.dtype == torch.float32
    assert torch.allclose(half.weight, net.weight, atol=1e-3)


def test_export_keeps_only_the_models_named(tmp_path):
    torch.manual_seed(0)
    payload = _payload(torch.nn.Linear(3, 2))
    payload["models"]["critic"] = torch.nn.Linear(5, 5).state_dict()
    path = ck.save(payload, tmp_path / "a.pt")
    out = ck.export_weights(path, tmp_path / "w.pt", {"command": "train"}, keep=("net",))
    assert set(ck.load(out)["models"]) == {"net"}
    assert json.loads(ck.sidecar(out).read_text())["models"] == ["net"]
    assert set(ck.load(ck.export_weights(path, tmp_path / "all.pt", {}))["models"]) == {"net", "critic"}
    with pytest.raises(ck.CheckpointError, match=r"a\.pt: holds no model 'generator'"):
        ck.export_weights(path, tmp_path / "x.pt", {}, keep=("generator",))
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("make, problem", [
    (lambda p: None, "no such file"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b""), "not a readable PyTorch file"),
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "not a readable PyTorch file"),
    (lambda p: torch.save({"a": 1}, p), "not an iemlib checkpoint"),
    (lambda p: torch.save([1, 2], p), "not an iemlib checkpoint"),
    (lambda p: torch.save({"format": ck.CHECKPOINT, "version": 99, "task": "toy",
                           "models": {"n": {}}}, p), "newer iemlib"),
    (lambda p: torch.save({"format": ck.CHECKPOINT, "version": 1, "task": "segnet",
                           "models": {"n": {}}}, p), "expected 'toy'"),
    (lambda p: torch.save({"format": ck.CHECKPOINT, "version": 1, "task": "toy",
                           "models": {}}, p), "no model weights"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(ck.CheckpointError) as e:
        ck.load(path, task="toy")
    msg = str(e.value)
    assert msg.startswith(str(path)) and problem in msg and "\n" not in msg


def test_mismatched_network_names_the_file(tmp_path):
    path = ck.save(_payload(torch.nn.Linear(3, 2)), tmp_path / "a.pt")
    data = ck.load(path)
    with pytest.raises(ck.CheckpointError, match=r"a\.pt: model 'net' does not match"):
        ck.load_state(torch.nn.Linear(5, 2), data["models"]["net"], path, "net")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = ck.save(_payload(torch.nn.Linear(3, 2)), tmp_path / "a.pt")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ck.save(_payload(torch.nn.Linear(3, 2)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
