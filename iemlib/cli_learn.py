"""The ``iem`` commands for learned networks, and the options that bring one into IEM.

    iem train-inpainter DIR [DIR ...] --out CKPT [--loss l1|l1+gan] [--width N] [--steps N]
                        [--batch-size N] [--seed N] [--resume] [--export WEIGHTS]
    iem evaluate SET --inpainter CKPT [--inpainter-output coarse|refined] [--finetune-steps N]
    iem refine SET_DIR [--train-dir DIR] [--limit N] [--top K] [--epochs N] [--batch-size N]
                       [--then-iem] [--out DIR] [--json]

Each runs under ``torchrun --nproc_per_node=N -m iemlib.cli ...`` as well: IEM's images are
shared over the processes, training uses DistributedDataParallel, only rank 0 writes files
and prints results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

from . import distributed as dist
from .sourcefiles import sha256sum as file_sha256


def _error(message: str):
    from .cli import CLIError
    return CLIError(message)


# ------------------------------------------------------------------- --inpainter options
def add_inpainter_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learned inpainter (default: the paper's Gaussian inpainter)")
    g.add_argument("--inpainter", default=None, metavar="CKPT",
                   help="a gated-convolution checkpoint or weights file (iem train-inpainter), "
                        "or the weights shipped with iemlib: 'gatedconv' (L1 + SN-PatchGAN) "
                        "or 'gatedconv-l1' (L1 only)")
    g.add_argument("--inpainter-output", choices=("refined", "coarse"), default="refined",
                   help="use the refinement network's output (default) or the coarse one's")
    g.add_argument("--finetune-steps", type=int, default=0, metavar="N",
                   help="fine-tune the network during IEM: N Adam steps on the current masks "
                        "before each update (Table 6's last row; 0 = weights fixed)")
    g.add_argument("--finetune-lr", type=float, default=1e-5, help="learning rate of --finetune-steps")


def inpainter_from_args(args):
    """(inpainter, identity for the settings manifest), or (None, None) for the Gaussian."""
    if getattr(args, "inpainter", None) is None:
        if getattr(args, "finetune_steps", 0):
            raise _error("--finetune-steps needs --inpainter (the Gaussian inpainter has no weights)")
        return None, None
    from .checkpoints import CheckpointError
    from .gatedconv_inpainter import FineTune, GatedConvInpainter, weights_path
    if args.finetune_steps < 0 or not args.finetune_lr > 0:
        raise _error("--finetune-steps must be >= 0 and --finetune-lr > 0")
    finetune = FineTune(steps_per_iter=args.finetune_steps, lr=args.finetune_lr) if args.finetune_steps else None
    try:
        path = weights_path(args.inpainter)
        inp = GatedConvInpainter(path, output=args.inpainter_output, finetune=finetune)
    except CheckpointError as err:
        raise _error(str(err)) from None
    ident = {"file": path.name, "sha256": file_sha256(path), "output": args.inpainter_output,
             "finetune_steps": args.finetune_steps, "finetune_lr": args.finetune_lr}
    return inp, ident


# --------------------------------------------------------------------- train-inpainter
def _commit() -> str:
    """The commit of the code that runs (``+dirty`` with local changes), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def corpus_digest(files) -> str:
    """SHA-256 of the training files' names and sizes, in order (identifies the corpus)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).name}\0{Path(f).stat().st_size}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def cmd_train_inpainter(args) -> int:
    from .checkpoints import CheckpointError, export_weights
    from .corpus import ImageCorpus
    from .images import ImageError
    from .inpainter_task import GatedConvTask, GatedConvTaskConfig, HoledImages
    from .nets.gatedconv import GatedConvConfig
    from .training import TrainConfig, TrainingError, TrainingInterrupted, train

    if args.width < 4 or args.width % 4:
        raise _error(f"--width {args.width}: must be a positive multiple of 4 (the paper: 48)")
    if args.steps < 1 or args.batch_size < 1:
        raise _error("--steps and --batch-size must be at least 1")
    dist.init()
    try:
        corpus = ImageCorpus(args.dirs, size=128)
    except (ImageError, ValueError) as err:
        raise _error(str(err)) from None
    if len(corpus) == 0:
        raise _error(f"no images in {', '.join(args.dirs)}")
    task = GatedConvTask(GatedConvTaskConfig(net=GatedConvConfig(cnum=args.width), loss=args.loss,
                                             lr=args.lr))
    cfg = TrainConfig(out=Path(args.out), steps=args.steps, batch_size=args.batch_size,
                      seed=args.seed, checkpoint_every=args.checkpoint_every,
                      log_every=args.log_every, device=args.device, progress=not args.quiet)
    if dist.is_main():
        print(f"iem: training the gated-convolution inpainter (cnum {args.width}, loss {args.loss}) "
              f"on {len(corpus)} images, {args.steps} steps of {args.batch_size}, "
              f"{dist.world_size()} process(es)", file=sys.stderr)
    commit = _commit()   # now: the code in memory is this commit's, whatever HEAD is at the end
    try:
        result = train(task, HoledImages(corpus), cfg, resume=args.resume)
    except (TrainingError, CheckpointError) as err:
        raise _error(str(err)) from None
    except TrainingInterrupted as err:   # the loop has said where it stopped
        return err.code
    if dist.is_main():
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
        print(f"iem: step {result.step} of {args.steps}; last losses: {losses}; "
              f"checkpoint {cfg.out}, log {cfg.log_path}", file=sys.stderr)
        if args.export:
            provenance = {
                "command": "iem " + " ".join(shlex.quote(str(a)) for a in args.argv),
                "data": {"folders": [str(d) for d in args.dirs], "images": len(corpus),
                         "files_sha256": corpus_digest(corpus.files)},
                "steps": result.step, "batch_size": args.batch_size, "seed": args.seed,
                "processes": dist.world_size(), "final_losses": result.losses,
                "commit": commit, "checkpoint_sha256": file_sha256(cfg.out),
            }
            out = export_weights(cfg.out, args.export, provenance, keep=("generator",))
            print(f"iem: float16 weights {out} ({out.stat().st_size / 1e6:.2f} MB) with "
                  f"provenance in {out.name}.json", file=sys.stderr)
    dist.cleanup()
    return 0


# ------------------------------------------------------------------------------ refine
def cmd_refine(args) -> int:
    from .checkpoints import CheckpointError
    from .cli import _config
    from .refine import RefineConfig, RefineError, protocol_for, refine
    from .training import TrainingError, TrainingInterrupted

    if not args.init_sizes:
        args.paper = True  # the refinement phase starts from the paper's protocol
    iem = _config(args)
    top = args.top
    if top is not None:
        try:
            top = float(top) if "." in top else int(top)
        except ValueError:
            raise _error(f"--top {args.top}: give a count (8000) or a fraction (0.5)") from None
    dist.init()
    try:
        cfg = RefineConfig(iem=iem, top=top, epochs=args.epochs, batch_size=args.segnet_batch_size,
                           seed=args.seed, then_iem=args.then_iem, device=args.device)
        protocol = protocol_for(args.set_dir, train_dir=args.train_dir, limit=args.limit)
        out = Path(args.out) if args.out else Path(f"refine_{Path(args.set_dir).name}")
        res = refine(protocol, cfg, out, progress=not (args.quiet or args.json))
    except (RefineError, TrainingError, CheckpointError) as err:
        raise _error(str(err)) from None
    except TrainingInterrupted as err:   # the loop has said where it stopped
        return err.code
    if dist.is_main():
        if args.json:
            payload = {"n": res.n, "pseudo_labels": res.pseudo_labels, "seconds": round(res.seconds, 2),
                       **res.scores, "protocol": res.protocol}
            print(json.dumps(payload))
        else:
            print(f"{args.set_dir}: {res.protocol}; {res.pseudo_labels} pseudo-labels, "
                  f"SegNet batch {res.batch_size}, {res.steps} steps")
            for name, s in res.scores.items():
                print(f"  {name:11s} accuracy {s['acc']:.1f}  IoU {s['iou']:.1f}  DICE {s['dice']:.1f}")
            print(f"  stages cached in {out}; {res.seconds:.1f} s")
    dist.cleanup()
    return 0


# ------------------------------------------------------------------------------ parsers
def add_parsers(sub, add_iem_options) -> None:
    t = sub.add_parser("train-inpainter", help="train the gated-convolution inpainter on folders of images")
    t.add_argument("dirs", nargs="+", metavar="DIR",
                   help="folders of images, or set folders holding images/ (no labels are read)")
    t.add_argument("--out", required=True, help="the checkpoint file (resumable)")
    t.add_argument("--loss", choices=("l1", "l1+gan"), default="l1+gan",
                   help="L1 only, or L1 + SN-PatchGAN (the paper's 'GatedConv')")
    t.add_argument("--width", type=int, default=24, help="cnum, the networks' width (paper 48)")
    t.add_argument("--steps", type=int, default=20000, help="total optimiser steps")
    t.add_argument("--batch-size", type=int, default=16, help="global batch (paper 16)")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (official 1e-4)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --steps")
    t.add_argument("--checkpoint-every", type=int, default=200)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--export", default=None, metavar="WEIGHTS",
                   help="also write float16 weights with a provenance .json beside them")
    t.add_argument("--device", default=None)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train_inpainter)

    r = sub.add_parser("refine", help="IEM + SegNet: train a segmentation network on IEM's best masks")
    r.add_argument("set_dir", help="a labelled set (images/ + masks/, or Flowers-102 / CUB)")
    r.add_argument("--train-dir", default=None, help="train on this folder of images instead")
    r.add_argument("--limit", type=int, default=None, help="the first N images in file-name order")
    r.add_argument("--top", default=None, metavar="K",
                   help="pseudo-labels: a count, or a fraction such as 0.5 (default min(8000, all))")
    r.add_argument("--epochs", type=int, default=50)
    r.add_argument("--batch-size", dest="segnet_batch_size", type=int, default=128,
                   help="the network's batch (paper 128); IEM's is --iem-batch-size")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--then-iem", action="store_true", help="run IEM again from the network's masks")
    r.add_argument("--out", default=None, help="where the stages are cached (default refine_<set>)")
    r.add_argument("--json", action="store_true", help="one JSON object on stdout")
    r.add_argument("--quiet", action="store_true")
    add_iem_options(r)
    r.set_defaults(func=cmd_refine)
