"""iemlib.distributed: one process without torchrun; shards that rebuild the input; two
processes under torchrun giving one process's results."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iemlib import IEMConfig, distributed as dist, segment
from iemlib.data import DemoSet

TOYS = Path(__file__).with_name("training_toys.py")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_without_torchrun_everything_is_one_process(no_torchrun):
    assert dist.init() == dist.device()
    assert not dist.active()
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (0, 1, 0, True)
    items = list("abcde")
    assert dist.shard(items) == items
    assert dist.gather({"a": 1}) == [{"a": 1}]
    assert dist.broadcast("x") == "x"
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(dist.all_reduce_mean(t), t)
    dist.barrier()
    dist.cleanup()


@pytest.mark.parametrize("n", range(0, 10))
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_contiguous_shards_concatenate_to_the_input(monkeypatch, n, world):
    items = list(range(100, 100 + n))
    parts = []
    for r in range(world):
        monkeypatch.setenv("RANK", str(r))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        parts.append(dist.shard(items))
    assert [x for p in parts for x in p] == items
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    x = torch.arange(n * 2).view(n, 2)  # tensors slice the same way
    monkeypatch.setenv("RANK", "0")
    assert torch.equal(dist.shard(x), x[:sizes[0]])


def test_a_bad_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"^environment variable WORLD_SIZE='two' is not an integer$"):
        dist.world_size()


def test_torchrun_shard_and_gather_give_one_process_result(tmp_path):
    """Two gloo processes: gathered shards rebuild the list, IEM on sharded images gives one
    process's masks bit for bit, broadcast and mean reach every rank."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "shard.json"
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_addr=127.0.0.1", f"--master_port={port}", str(TOYS), "shard",
                          "--json", str(out)], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["world"] == 2
    assert got["parts"] == [[[i, i * i] for i in range(4)], [[i, i * i] for i in range(4, 7)]]
    assert got["token"] == "from rank 0" and got["mean"] == 0.5
    x, _ = DemoSet(5, size=64).load()
    masks = segment(x, IEMConfig(iters=20)).masks
    assert got["masks"] == masks.flatten().tolist()
