"""Tiny tasks and data for the training-loop tests, and a program the tests launch as a
subprocess or under torchrun:

    python tests/training_toys.py train --task toy|segnet --out CKPT --steps N ... [--json F]
    python tests/training_toys.py shard --json F

The toy task has what makes exact resume hard: two models with two optimisers of
different kinds (Adam and SGD with momentum), dropout and noise drawn inside the step
from the global generator, and data with random draws of their own.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # when launched as a script, import this worktree's iemlib
    sys.path.insert(0, str(ROOT))

from iemlib import distributed as dist  # noqa: E402
from iemlib.nets.segnet import SegNetConfig  # noqa: E402
from iemlib.segnet_task import MaskedImages, SegNetTask  # noqa: E402
from iemlib.training import TrainConfig, TrainingInterrupted, train  # noqa: E402


class ToyData:
    """``n`` samples {"x": (4,), "y": (1,)}: a fixed point per index plus noise from ``rng``.
    ``loaded`` records every index asked for."""

    def __init__(self, n: int = 18):
        g = torch.Generator().manual_seed(123)
        self.base = torch.randn(n, 4, generator=g)
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return self.base.shape[0]

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        self.loaded.append(index)
        x = self.base[index] + 0.1 * torch.randn(4, generator=rng)
        return {"x": x, "y": x.sum(0, keepdim=True).sin()}


class ToyTask:
    """A small regressor ("net", Adam, dropout) and a linear critic ("critic", SGD with
    momentum) trained on noisy inputs, one step each per batch."""

    name = "toy"

    def __init__(self, hidden: int = 8, signal_at: int | None = None, signum=signal.SIGINT,
                 stall_at: int | None = None):
        self.hidden = hidden
        self.signal_at, self.signum, self.stall_at = signal_at, signum, stall_at
        self.calls = 0
        self.wrapped_types: set[str] = set()

    def config(self) -> dict:
        return {"hidden": self.hidden}

    def build(self) -> dict[str, nn.Module]:
        net = nn.Sequential(nn.Linear(4, self.hidden), nn.ReLU(), nn.Dropout(0.3),
                            nn.Linear(self.hidden, 1))
        return {"net": net, "critic": nn.Linear(4, 1)}

    def make_optimizers(self, models):
        return {"net": torch.optim.Adam(models["net"].parameters(), lr=1e-2),
                "critic": torch.optim.SGD(models["critic"].parameters(), lr=1e-2, momentum=0.9)}

    def train_step(self, models, optimizers, batch):
        self.calls += 1
        self.wrapped_types.update(type(m).__name__ for m in models.values())
        if self.stall_at is not None and self.calls == self.stall_at:
            time.sleep(600)  # the test kills the process here
        x = batch["x"] + 0.05 * torch.randn_like(batch["x"])
        optimizers["critic"].zero_grad()
        critic = F.mse_loss(models["critic"](x), batch["y"])
        critic.backward()
        optimizers["critic"].step()
        optimizers["net"].zero_grad()
        loss = F.mse_loss(models["net"](x), batch["y"])
        loss.backward()
        optimizers["net"].step()
        if self.signal_at is not None and self.calls == self.signal_at:
            os.kill(os.getpid(), self.signum)
        return {"mse": loss.detach(), "critic": critic.detach()}


def two_colour_set(n: int, size: int, seed: int = 0):
    """Synthetic segmentation data: a disc of one colour on a background of another (the
    two colours drawn per image): images (n, 3, size, size) in [-1, 1], masks (n, 1, size,
    size) bool (True = disc)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * 0.5 + 0.25) * size
        r = (torch.rand((), generator=g) * 0.2 + 0.15) * size
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        fg, bg = torch.rand(2, 3, generator=g) * 2 - 1
        images.append(torch.where(m, fg[:, None, None], bg[:, None, None]))
        masks.append(m[None])
    return torch.stack(images), torch.stack(masks)


class RecordingSegNetTask(SegNetTask):
    """SegNet's task, noting what kind of models its steps received (DDP or plain)."""

    wrapped_types: set[str] = set()

    def train_step(self, models, optimizers, batch):
        self.wrapped_types = self.wrapped_types | {type(m).__name__ for m in models.values()}
        return super().train_step(models, optimizers, batch)


def tiny_segnet_task() -> SegNetTask:
    return RecordingSegNetTask(net=SegNetConfig(width=8, blocks=1, size=32))


def segnet_data() -> MaskedImages:
    x, m = two_colour_set(24, 32, seed=1)
    return MaskedImages(x, m)


def _train(args) -> int:
    if args.task == "toy":
        task, data = ToyTask(stall_at=args.stall_at), ToyData(args.samples)
    else:
        task, data = tiny_segnet_task(), segnet_data()
    config = TrainConfig(out=args.out, steps=args.steps, batch_size=args.batch_size,
                         checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                         seed=args.seed, progress=False)
    try:
        result = train(task, data, config, resume=args.resume)
    except TrainingInterrupted as e:
        return e.code
    except (ValueError, OSError) as e:
        if dist.is_main():
            print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json and dist.is_main():
        Path(args.json).write_text(json.dumps({
            "world": dist.world_size(), "history": result.history,
            "wrapped": sorted(task.wrapped_types), "samples_per_s": result.samples_per_s}))
    dist.cleanup()
    return 0


def _shard(args) -> int:
    """shard + gather on lists and tensors, broadcast, mean, and IEM on sharded images."""
    from iemlib import IEMConfig, segment
    from iemlib.data import DemoSet

    dist.init()
    items = list(range(7))
    mine = dist.shard(items)
    parts = dist.gather([(i, i * i) for i in mine])
    x, _ = DemoSet(5, size=64).load()
    masks = segment(dist.shard(x), IEMConfig(iters=20)).masks
    gathered = dist.gather(masks)
    token = dist.broadcast(f"from rank {dist.rank()}")
    mean = dist.all_reduce_mean(torch.tensor([float(dist.rank())])).item()
    if dist.is_main():
        Path(args.json).write_text(json.dumps({
            "world": dist.world_size(), "parts": parts, "token": token, "mean": mean,
            "masks": torch.cat(gathered).flatten().tolist()}))
    dist.barrier()
    dist.cleanup()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("--task", choices=("toy", "segnet"), default="toy")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--samples", type=int, default=18)
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--log-every", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--stall-at", type=int, default=None)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--json", default=None)
    s = sub.add_parser("shard")
    s.add_argument("--json", required=True)
    args = p.parse_args(argv)
    return _train(args) if args.mode == "train" else _shard(args)


if __name__ == "__main__":
    sys.exit(main())
