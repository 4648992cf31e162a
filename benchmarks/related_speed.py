"""What the other methods of the field cost beside IEM, measured in one run on the same images.

    python benchmarks/related_speed.py [--images 4] [--threads N]

For each method of ``iemlib.related``, the seconds one image costs on this machine at the
authors' settings, as a multiple of IEM's (authors' settings: one 78 x 78 square, 150
updates, 128 x 128, the fast path). The per-image methods are timed over a fixed number of
iterations and scaled to their authors' iteration count (their stopping rules aside: Kanezaki
stops early on some images, never later); the set-trained methods are timed per training
step and scaled to their authors' number of steps, then divided by a set of 1,000 images
(the size of the paper's test sets). The last column is the measured quantity itself, so a
reader can redo the scaling. Ratios measured in one run are what to compare across machines.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from iemlib import related
from iemlib.data import DemoSet, FolderSet
from iemlib.related.iic import IICTask, PairedViews
from iemlib.related.redo import RealPairs, ReDOConfig, ReDOTask

HERE = Path(__file__).resolve().parent
SET_SIZE = 1000


def images(n: int) -> tuple[torch.Tensor, str]:
    root = Path(os.environ.get("IEM_DATA_DIR") or HERE.parent.parent / "shared" / "data")
    folder = root / "weizmann_horse"
    if (folder / "images").is_dir():
        x, _ = FolderSet(folder).load(limit=n)
        return x, f"{len(x)} images of {folder.name}"
    x, _ = DemoSet(n=n).load()
    return x, f"{len(x)} demo images"


def timed(fn) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_seconds(task, data, batch: int, steps: int = 3) -> float:
    """Seconds of one training step of ``task`` at ``batch`` (after a warm-up step)."""
    torch.manual_seed(0)
    models = task.build()
    opts = task.make_optimizers(models)
    g = torch.Generator().manual_seed(0)
    samples = [data.get(i % len(data), g) for i in range(batch)]
    b = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    task.train_step(models, opts, b)
    start = time.perf_counter()
    for _ in range(steps):
        task.train_step(models, opts, b)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, what = images(args.images)
    n = len(x)
    print(f"{what}; {torch.get_num_threads()} torch threads; {platform.processor() or platform.machine()}")

    rows = []
    iem = timed(lambda: related.segment(x, "iem")) / n
    rows.append(("iem", iem, f"{iem:.3f} s / image, 150 updates"))
    for m in ("grabcut", "kmeans"):
        try:
            s = timed(lambda: related.segment(x, m)) / n
        except ImportError as err:           # GrabCut needs OpenCV (the notebooks extra)
            print(f"{m}: skipped ({err})")
            continue
        rows.append((m, s, f"{s:.3f} s / image"))
    probe = 20
    for m, field, full in (("kanezaki", "max_iters", 1000), ("kanezaki-tip", "max_iters", 1000),
                           ("mmt", "iters", 1000)):
        cfg = related.config(m, train_steps=probe)
        if m != "mmt":   # time every iteration: the stopping rule must not fire
            cfg = related.config(m, train_steps=probe, min_labels=1)
        s = timed(lambda: related.segment(x[:1], m, cfg))
        rows.append((m, s / probe * full, f"{s / probe:.3f} s / iteration of one image x {full}"))
    iic = related.config("iic")
    s = step_seconds(IICTask(net=iic.net_dict()), PairedViews(x), iic.batch_size)
    rows.append(("iic", s * iic.steps / SET_SIZE,
                 f"{s:.2f} s / step of {iic.batch_size} x {iic.steps} steps / {SET_SIZE} images"))
    for label, cfg in (("redo", ReDOConfig()), ("redo --cpu-budget", ReDOConfig.cpu())):
        s = step_seconds(ReDOTask(cfg=cfg.to_dict()), RealPairs(x), cfg.batch_size, steps=1)
        rows.append((label, s * cfg.steps / SET_SIZE,
                     f"{s:.2f} s / step of {cfg.batch_size} x {cfg.steps} steps / {SET_SIZE} images"))

    print(f"\n{'method':18s} {'s / image':>10s} {'x IEM':>9s}   measured")
    for name, s, how in rows:
        print(f"{name:18s} {s:10.2f} {s / iem:9.3g}   {how}")


if __name__ == "__main__":
    main()
