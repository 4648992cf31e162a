"""Speed of the two IEM implementations, measured in one run on the same images.

    python benchmarks/iem_speed.py [--images 32] [--iters 150] [--data DIR]

Runs IEM (authors' settings, one 78 x 78 square) on the first N shared Weizmann Horse
images at 128 x 128 with the reference implementation (autograd, convolution blur) and the
fast one (hand-derived gradient, matrix blur, settled images leaving the batch), and prints
image-iterations per second for each. An image-iteration is one of the N x iters updates
the algorithm asks for, so the early exit counts as speed. The last line is
``speedup fast/reference: N.Nx``. Ratios measured in one run are what to compare across
machines; absolute rates depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from iemlib import IEMConfig, segment
from iemlib.data import FolderSet
from iemlib.kernels import SeparableBlur, blur_conv

HERE = Path(__file__).resolve().parent


def default_data() -> Path:
    root = Path(os.environ.get("IEM_DATA_DIR") or HERE.parent.parent / "shared" / "data")
    return root / "weizmann_horse"


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--data", type=Path, default=None, help="a set with images/ and masks/")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = args.data or default_data()
    if (data / "images").is_dir():
        x, _ = FolderSet(data).load(limit=args.images)
        source = f"{len(x)} images of {data.name}"
    else:
        from iemlib.data import DemoSet
        x, _ = DemoSet(n=args.images).load()
        source = f"{len(x)} composite demo images ({data} not found)"
    n = len(x)
    work = n * args.iters
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; device cpu")
    print(f"data: {source}, 128 x 128; {args.iters} iterations, one 78 x 78 square")

    # the blur alone: depthwise convolution (authors) vs two matrix products
    u = torch.randn(64, 4, 128, 128)
    blur = SeparableBlur(128, 128)
    t_conv = timed(lambda: blur_conv(u), 5)
    t_mat = timed(lambda: blur(u), 5)
    print(f"blur of 4 x 128 x 128 channels: conv2d {t_conv / 64 * 1e3:.3f} ms, "
          f"matrix {t_mat / 64 * 1e3:.3f} ms per image ({t_conv / t_mat:.1f}x)")

    cfg = IEMConfig(iters=args.iters, batch_size=128)
    runs = {}
    for name, c in [("reference", cfg.replace(impl="reference")),
                    ("fast, every iteration", cfg.replace(early_exit=False)),
                    ("fast", cfg)]:
        start = time.perf_counter()
        res = segment(x, c)
        runs[name] = (time.perf_counter() - start, res)
        print(f"{name:>22}: {work / runs[name][0]:8.1f} image-iterations/s "
              f"({runs[name][0]:.1f} s)")
    ref, fast = runs["reference"][1], runs["fast"][1]
    agree = (ref.masks == fast.masks).float().mean().item()
    settled = (fast.period > 0).float().mean().item()
    print(f"masks agree on {100 * agree:.3f}% of pixels; {100 * settled:.0f}% of images settled "
          f"(fixed point or two-cycle) before the last iteration")
    print(f"speedup fast/reference without early exit: "
          f"{runs['reference'][0] / runs['fast, every iteration'][0]:.1f}x")
    print(f"speedup fast/reference: {runs['reference'][0] / runs['fast'][0]:.1f}x")


if __name__ == "__main__":
    main()
