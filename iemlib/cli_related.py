"""``--method`` of ``iem evaluate`` and ``iem segment``: the other methods of the field
(:mod:`iemlib.related`) on the same images, with the same metrics and the same JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

METHOD_NOTES = """\
methods (--method): iem (default), grabcut, kmeans, kanezaki, kanezaki-tip, mmt, iic, redo.
Each runs with its authors' settings; --train-steps N sets the training steps (iic, redo) or
the per-image iterations (kanezaki, kanezaki-tip, mmt) for a quick run; --cpu-budget gives
ReDO the budget this project uses on a CPU (narrow networks, 2,000 steps). iic and redo
learn from all the images they are given (the set or the folder) before segmenting them."""


def add_method_options(p: argparse.ArgumentParser) -> None:
    from .related import METHODS
    g = p.add_argument_group("other methods of the field")
    g.add_argument("--method", choices=METHODS, default="iem",
                   help="the segmentation method (default: iem)")
    g.add_argument("--train-steps", type=int, default=None, metavar="N",
                   help="training steps (iic, redo) or per-image iterations (kanezaki, "
                        "kanezaki-tip, mmt) instead of the method's default")
    g.add_argument("--seed", type=int, default=None, help="the method's seed (default 0)")
    g.add_argument("--cpu-budget", action="store_true",
                   help="redo: the CPU budget (narrow networks, no self-attention, 2,000 steps)")
    g.add_argument("--work-dir", default=None, metavar="DIR",
                   help="iem evaluate with iic / redo: keep the training checkpoint and log "
                        "here, so that a rerun resumes; needed under torchrun (iem segment keeps "
                        "them in the output folder)")


def uses_other_method(args) -> bool:
    return getattr(args, "method", "iem") != "iem"


def _note(message: str) -> None:
    from .cli import _say
    _say("note", message)


def refuse_iem_only_options(args, error) -> None:
    """--train-steps / --cpu-budget / --work-dir mean nothing to IEM: say so."""
    if args.train_steps is not None:
        if args.train_steps < 1:
            raise error(f"--train-steps must be at least 1, got {args.train_steps}")
        _note("--train-steps: IEM does not train (it is learning-free), so it is ignored; "
              "--iters sets IEM's number of updates")
    if args.cpu_budget or args.work_dir:
        raise error("--cpu-budget and --work-dir apply to --method redo / iic only")
    if args.seed is not None:
        raise error("--seed: IEM has no randomness (it is deterministic)")


#: IEM's options and their defaults: given with another --method, they are ignored (said once)
_IEM_OPTIONS = (("iters", 150), ("init_sizes", None), ("paper", False), ("select", "image"),
                ("impl", "fast"), ("lam", 0.001), ("no_smoothing", False), ("unrestricted", False),
                ("numerator", "l1"), ("denominator", "count"), ("downsampled", False))


def method_config(args, error):
    """The configuration of ``args.method`` from the command line; ``error`` is the
    CLI's one-line error type."""
    from . import related
    from .cli import _check_device
    _check_device(args.device)
    if args.train_steps is not None and args.train_steps < 1:
        raise error(f"--train-steps must be at least 1, got {args.train_steps}")
    changes = {"device": args.device}
    if args.seed is not None:
        if args.method == "iem":
            raise error("--seed: IEM has no randomness")
        changes["seed"] = args.seed
    if args.method in related.TRAINS_ON_SET:
        changes["progress"] = not (args.quiet or getattr(args, "json", False))
        if args.work_dir:
            changes["out_dir"] = args.work_dir
    elif args.work_dir:
        raise error(f"--work-dir: {args.method} does not train on the set")
    if args.cpu_budget and args.method != "redo":
        raise error("--cpu-budget applies to --method redo only")
    try:
        cfg = related.config(args.method, cpu=args.cpu_budget, train_steps=args.train_steps, **changes)
    except ValueError as err:
        raise error(f"--method {args.method}: {err}") from None
    # notes only once nothing is refused, so that a refusal stays one line
    if args.train_steps is not None and args.method not in related.TRAIN_STEPS:
        _note(f"--train-steps: {args.method} does not train, so it is ignored")
    ignored = [f"--{name.replace('_', '-')}" for name, default in _IEM_OPTIONS
               if getattr(args, name, default) != default]
    if ignored:
        _note(f"{', '.join(ignored)}: IEM's settings, ignored by --method {args.method}")
    return cfg


def evaluate_method(args, dataset, error) -> int:
    """``iem evaluate SET --method M``: load, segment with M, score, report."""
    from . import distributed as dist
    from . import related
    from .cli import _report_unlabelled, load_labelled
    from .metrics import evaluate
    from .related.base import tqdm_progress
    from .training import TrainingError

    cfg = method_config(args, error)
    if dist.world_size() > 1 and args.method not in related.TRAINS_ON_SET:
        raise error(f"--method {args.method} runs in one process; under torchrun only iem, "
                    "iic and redo share the work")
    if dist.world_size() > 1 and not args.work_dir:
        raise error(f"--method {args.method} under torchrun needs --work-dir, a folder every "
                    "process shares")
    quiet = args.quiet or args.json
    x, y = load_labelled(dataset, args.limit, quiet)
    dist.init()
    try:
        result = related.segment(x, args.method, cfg,
                                 progress=None if quiet or not dist.is_main() else tqdm_progress)
    except (ValueError, TrainingError, ImportError) as err:
        raise error(str(err)) from None
    if not dist.is_main():
        dist.cleanup()
        return 0
    dist.cleanup()
    scores = evaluate(result.masks, y)
    _report_unlabelled(scores, dataset, args.set_dir)
    s = scores.summary()
    if args.json:
        print(json.dumps({"n": s["n"], "unlabelled": s["unlabelled"], "acc": round(s["acc"], 3),
                          "iou": round(s["iou"], 3), "dice": round(s["dice"], 3),
                          "seconds": round(result.seconds, 2)}))
    else:
        print(f"{args.set_dir}: {scores}")
        print(f"{args.method}, {result.seconds:.1f} s ({result.seconds_per_image:.2f} s per image) "
              f"on {cfg.device or 'the default device'}")
    return 0


def segment_method(args, error, write_error) -> int:
    """``iem segment IN OUT --method M``."""
    from . import distributed as dist
    from .cli import _progress, _say, _size
    from .folder import FolderError, OutputError
    from .images import ImageError
    from .related.folder import segment_folder_with
    from .training import TrainingError

    if dist.world_size() > 1:
        raise error("iem segment runs in one process; under torchrun, use iem evaluate")
    if args.work_dir:
        raise error("--work-dir: iem segment keeps the training of iic / redo in the output "
                    "folder (.iem-train-<method>/), so that a rerun resumes it")
    cfg = method_config(args, error)
    bars = []

    def progress(total, desc):
        bars.append(_progress(total, desc, args.quiet))
        return bars[-1]

    try:
        s = segment_folder_with(args.method, cfg, Path(args.in_dir), Path(args.out_dir),
                                size=_size(args.size), overwrite=args.overwrite,
                                report=_say, progress=progress)
    except (ImageError, FolderError, ValueError, TrainingError, ImportError) as err:
        raise error(str(err)) from None
    except OutputError as err:
        raise write_error(str(err)) from None
    finally:
        for bar in bars:
            bar.close()
    where = f"masks in {args.out_dir}" if s.segmented or s.done_before else "no masks written"
    _say(None, f"{args.method}: segmented {s.segmented}, skipped {s.done_before} already done, "
               f"failed {s.failed}, ignored {s.ignored} (not images); {where} ({s.seconds:.1f} s)")
    return 1 if s.failed else 0
