"""What a learned inpainter costs inside IEM, measured in one run on the same images.

    python benchmarks/learned_speed.py [--images 16] [--iters 20] [--width 24] [--threads N]

Prints IEM image-iterations per second (authors' settings, one 78 x 78 square, 128 x 128)
with the Gaussian inpainter on the fast path, and with the gated-convolution generator's
coarse and refined outputs (autograd through the network, both inpaintings in one forward
pass, settled images leaving the batch), then training samples per second of the
gated-convolution task with the L1 loss and with L1 + SN-PatchGAN. The networks are freshly
initialised at the given width (their speed does not depend on their weights; how fast
their masks settle does, so the rates count every iteration: early exit is off). Ratios
measured in one run are what to compare across machines.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from iemlib import IEMConfig, segment
from iemlib.data import DemoSet, FolderSet
from iemlib.gatedconv_inpainter import GatedConvInpainter
from iemlib.holes import free_form_holes
from iemlib.inpainter_task import GatedConvTask, GatedConvTaskConfig
from iemlib.nets.gatedconv import GatedConvConfig, GatedConvGenerator

HERE = Path(__file__).resolve().parent


def images(n: int, data: Path | None) -> tuple[torch.Tensor, str]:
    root = Path(os.environ.get("IEM_DATA_DIR") or HERE.parent.parent / "shared" / "data")
    folder = data or root / "weizmann_horse"
    if (folder / "images").is_dir():
        x, _ = FolderSet(folder).load(limit=n)
        return x, f"{len(x)} images of {folder.name}"
    x, _ = DemoSet(n=n).load()
    return x, f"{len(x)} demo images"


def rate(fn, units: float) -> float:
    fn()  # warm-up: the first call allocates and picks kernels
    start = time.perf_counter()
    fn()
    return units / (time.perf_counter() - start)


def train_rate(width: int, loss: str, batch: int, steps: int) -> float:
    """Samples per second of ``steps`` optimiser steps of the gated-convolution task."""
    torch.manual_seed(0)
    task = GatedConvTask(GatedConvTaskConfig(net=GatedConvConfig(cnum=width), loss=loss))
    models = task.build()
    opts = task.make_optimizers(models)
    g = torch.Generator().manual_seed(0)
    batch_data = {"image": torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1,
                  "hole": free_form_holes(batch, 128, 128, g)}

    def run():
        for _ in range(steps):
            task.train_step(models, opts, batch_data)
    return rate(run, batch * steps)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--width", type=int, default=24, help="cnum of the gated-convolution networks")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    x, source = images(args.images, args.data)
    print(f"{source}, {args.iters} iterations, cnum {args.width}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()} {platform.processor() or ''}".rstrip())
    work = len(x) * args.iters
    cfg = IEMConfig(iters=args.iters, device="cpu", early_exit=False)
    rows = [("Gaussian, fast path", rate(lambda: segment(x, cfg), work))]
    torch.manual_seed(0)
    net = GatedConvGenerator(GatedConvConfig(cnum=args.width))
    for output in ("coarse", "refined"):
        inp = GatedConvInpainter(net, output=output)
        rows.append((f"GatedConv {output}", rate(lambda: segment(x, cfg, inpainter=inp), work)))
    base = rows[0][1]
    print(f"{'IEM inpainter':28s} {'image-iterations/s':>20s} {'vs Gaussian':>12s}")
    for name, r in rows:
        print(f"{name:28s} {r:20.1f} {r / base:11.3f}x")
    print(f"{'training (GatedConv task)':28s} {'samples/s':>20s}")
    for loss in ("l1", "l1+gan"):
        r = train_rate(args.width, loss, args.train_batch, args.train_steps)
        print(f"{'  loss ' + loss:28s} {r:20.2f}")


if __name__ == "__main__":
    main()
