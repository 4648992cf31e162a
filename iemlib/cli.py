"""The ``iem`` command: segment a folder, evaluate on a labelled set, run the demo.

    iem segment IN_DIR OUT_DIR      one PNG mask per image, at the image's displayed size
    iem evaluate SET_DIR            IEM on images/ + masks/, prints accuracy / IoU / DICE
    iem demo                        the composite demo set: metrics and an overview figure
    iem data download NAME          fetch, check and unpack a paper dataset (flowers102, cub)
                                    or build a shared set from its listed source files
                                    (weizmann_horse, grabcut, coco_mval)

Every problem is one line on stderr naming the file, never a traceback, and the exit
status says which kind it was (:data:`EXIT_CODES`). Bad input files are reported one per
line and the others are still done; masks already written are never lost (each is
written to a temporary file and renamed into place), so a rerun resumes where it stopped.
How ``segment`` streams, resumes and records its settings: :mod:`iemlib.folder`.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .folder import write_png_atomic  # noqa: F401  (kept importable from here)

EXIT_OK = 0
EXIT_BAD_INPUT = 1   # some input files (or settings) were bad; the good ones were done
EXIT_USAGE = 2       # argparse's status for a malformed command line
EXIT_WRITE = 3       # an output could not be written (or its folder is in use)
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM gives 143, with the same message
EXIT_CODES = f"""exit status:
  {EXIT_OK}    everything asked for was done
  {EXIT_BAD_INPUT}    some inputs (files or settings) were bad: each is named on stderr, the rest was done
  {EXIT_USAGE}    the command line itself is malformed
  {EXIT_WRITE}    an output could not be written (full disk, read-only or permission denied,
       a parent that is a file), or another iem segment holds the output folder
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C; 143 for SIGTERM): finished masks are kept, rerun to resume"""

SEGMENT_NOTES = """\
Masks are written one by one, as their images settle. A rerun skips masks that are
whole and of the right size, and refuses if iem.json (beside the masks) records other
settings; --overwrite then redoes them. One run at a time per output folder."""

#: Limits on settings that would otherwise end in an overflow or run out of memory.
MAX_ITERS = 1_000_000   # the paper uses 150; images that settle stop early anyway
MAX_SIZE = 1024         # 8 x the paper's 128; memory grows with its square


class CLIError(Exception):
    """An error to print as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.status = status


def _say(kind: str | None, message: str) -> None:
    """One line on stderr (``iem: <kind>: <message>``), above any progress bar."""
    from tqdm.auto import tqdm
    tqdm.write(f"iem: {kind}: {message}" if kind else message, file=sys.stderr)


# ---------------------------------------------------------------------------- options
def _add_iem_options(p: argparse.ArgumentParser, batch_flag: str = "--batch-size") -> None:
    """IEM's options; ``batch_flag`` names IEM's batch option (``iem refine`` keeps
    ``--batch-size`` for the network's batch)."""
    g = p.add_argument_group("IEM settings (defaults: the authors' code)")
    g.add_argument("--iters", type=int, default=150, help=f"number of updates (150; at most {MAX_ITERS})")
    g.add_argument("--init-sizes", type=int, nargs="+", default=None, metavar="SIDE",
                   help="sides of the centred initial squares at 128 px (default 78; the paper: 44 78 92)")
    g.add_argument("--paper", action="store_true", help="the paper's protocol: squares 44, 78 and 92")
    g.add_argument("--select", choices=("image", "dataset"), default="image",
                   help="with several squares, keep the best per image or per dataset (by inpainting error)")
    g.add_argument("--impl", choices=("fast", "reference"), default="fast")
    g.add_argument("--lam", type=float, default=0.001, help="diversity weight lambda (0 = no regulariser)")
    g.add_argument("--no-smoothing", action="store_true", help="do not smooth after each update")
    g.add_argument("--unrestricted", action="store_true", help="update every pixel, not only the boundary")
    g.add_argument("--numerator", choices=("l1", "l2"), default="l1")
    g.add_argument("--denominator", choices=("count", "l1", "l2"), default="count")
    g.add_argument("--downsampled", action="store_true",
                   help="the authors' 2x-downsampled inpainter (sigma 2.5, 7 taps)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: CUDA when available)")
    g.add_argument(batch_flag, dest="batch_size", type=int, default=128,
                   help="IEM's images x squares per batch")


def _devices() -> list[str]:
    import torch
    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _check_device(name: str | None) -> None:
    """Refuse devices IEM cannot run on here (``meta``, ``mps`` without Metal, a CUDA
    index that does not exist) before any work, instead of a traceback later."""
    if name is None:
        return
    import torch
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    here = _devices()
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {name}: not a device iem runs on; use one of {', '.join(here)}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name} asked for, but no CUDA device is available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and "mps" not in here:
        raise CLIError(f"--device {name}: this PyTorch has no usable MPS (Apple Metal) device; "
                       f"use one of {', '.join(here)}")


def _config(args):
    from .iem import PAPER_INIT_SIZES, IEMConfig
    sizes = args.init_sizes or (PAPER_INIT_SIZES if args.paper else (78,))
    too_big = [s for s in sizes if s > 128]
    if too_big:
        raise CLIError(f"--init-sizes {too_big[0]}: squares are given at 128 x 128, "
                       "so a side must be at most 128")
    if args.iters > MAX_ITERS:
        raise CLIError(f"--iters {args.iters}: at most {MAX_ITERS} (the paper uses 150, and "
                       "images whose mask settles stop early anyway)")
    if not math.isfinite(args.lam):
        raise CLIError(f"--lam {args.lam}: must be a finite number >= 0")
    _check_device(args.device)
    try:
        cfg = IEMConfig(iters=args.iters, init_sizes=tuple(sizes), select=args.select,
                        impl=args.impl, lam=args.lam, smoothing=not args.no_smoothing,
                        boundary_only=not args.unrestricted, numerator=args.numerator,
                        denominator=args.denominator, device=args.device,
                        batch_size=args.batch_size)
        if args.downsampled:
            cfg = cfg.downsampled()
        cfg.torch_device()
    except (ValueError, RuntimeError) as err:
        raise CLIError(str(err))
    return cfg


def _size(size: int) -> int:
    from .images import MIN_SIDE
    if not MIN_SIDE <= size <= MAX_SIZE:
        raise CLIError(f"--size {size}: the shorter side must be between {MIN_SIDE} and "
                       f"{MAX_SIZE} pixels (the paper uses 128)")
    return size


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=quiet, file=sys.stderr)


# ------------------------------------------------------------------------------ segment
def cmd_segment(args) -> int:
    from . import distributed as dist
    from .cli_learn import inpainter_from_args
    from .folder import FolderError, FolderJob, OutputError, segment_folder
    from .images import ImageError

    from .cli_related import refuse_iem_only_options, segment_method, uses_other_method
    if uses_other_method(args):
        _no_inpainter(args)
        return segment_method(args, CLIError, lambda m: CLIError(m, EXIT_WRITE))
    refuse_iem_only_options(args, CLIError)
    if dist.world_size() > 1:
        raise CLIError("iem segment runs in one process (it streams the folder and writes each "
                       "mask as it settles); under torchrun, use iem evaluate or iem refine, or "
                       "give each process its own folder")
    cfg = _config(args)
    inpainter, ident = inpainter_from_args(args)
    job = FolderJob(Path(args.in_dir), Path(args.out_dir), cfg, size=_size(args.size),
                    overwrite=args.overwrite, inpainter=inpainter, inpainter_id=ident)
    bars = []

    def progress(total, desc):
        bars.append(_progress(total, desc, args.quiet))
        return bars[-1]

    try:
        s = segment_folder(job, _say, progress)
    except (ImageError, FolderError) as err:
        raise CLIError(str(err)) from None
    except OutputError as err:
        raise CLIError(str(err), EXIT_WRITE) from None
    finally:
        for bar in bars:
            bar.close()
    where = f"masks in {job.out_dir}" if s.segmented or s.done_before else "no masks written"
    _say(None, f"segmented {s.segmented}, skipped {s.done_before} already done, failed {s.failed}, "
               f"ignored {s.ignored} (not images); {where} ({s.seconds:.1f} s)")
    return EXIT_BAD_INPUT if s.failed else 0


# ----------------------------------------------------------------------------- evaluate
def _open_set(spec: str):
    from .data import open_dataset
    from .images import ImageError
    try:
        return open_dataset(spec)
    except ImageError as err:
        raise CLIError(str(err))


def load_labelled(dataset, limit=None, quiet=False):
    """The first ``limit`` images of a labelled set and their masks, (N, 3, S, S) float
    and (N, 1, S, S) uint8; a bad file or a missing mask is one CLIError naming it."""
    import torch

    from . import distributed as dist
    from .images import ImageError
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise CLIError(f"{dataset}: no images to evaluate")
    xs, ys = [], []
    bar = _progress(n, "load", quiet or not dist.is_main())
    try:
        for i in range(n):
            try:
                x, y = dataset[i]
            except ImageError as err:
                raise CLIError(str(err)) from None
            if y is None:
                raise CLIError(f"{dataset.names[i]}: no ground-truth mask; evaluate needs masks")
            xs.append(x)
            ys.append(y)
            bar.update(1)
    finally:
        bar.close()
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None]


def run_evaluation(dataset, cfg, limit=None, quiet=False, inpainter=None):
    """Load (the first ``limit`` of) a labelled set, segment it, score it.

    IEM goes through :func:`iemlib.sharded.segment_sharded`: under torchrun the images are
    shared over the processes, and one process computes exactly the same masks.
    Returns (scores, result, seconds of segmentation)."""
    from .metrics import evaluate
    from .sharded import segment_sharded

    x, y = load_labelled(dataset, limit, quiet)
    start = time.perf_counter()
    try:
        result = segment_sharded(x, cfg, progress=not quiet, inpainter=inpainter)
    except ValueError as err:   # e.g. a network that needs sides divisible by 8
        raise CLIError(str(err)) from None
    seconds = time.perf_counter() - start
    return evaluate(result.masks, y), result, seconds


def _report_unlabelled(scores, dataset, where) -> None:
    """Images whose ground truth has no labelled pixel are left out of the means: say
    which, in one line (or refuse when that leaves nothing)."""
    s = scores.summary()
    if not s["unlabelled"]:
        return
    names = [dataset.names[i] for i, ok in enumerate(scores.labelled) if not ok]
    if s["n"] == 0:
        raise CLIError(f"{where}: no image has a labelled pixel in its mask (all unknown), "
                       "so there is nothing to score")
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    _say("note", f"{len(names)} of {len(names) + s['n']} images have no labelled pixel in "
                 f"their masks (all unknown) and are left out of the means: {shown}")


def _no_inpainter(args) -> None:
    if getattr(args, "inpainter", None) is not None:
        raise CLIError(f"--inpainter is IEM's; --method {args.method} has no inpainter")


def cmd_evaluate(args) -> int:
    from . import distributed as dist
    from .cli_learn import inpainter_from_args

    from .cli_related import evaluate_method, refuse_iem_only_options, uses_other_method
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    if uses_other_method(args):
        _no_inpainter(args)
        return evaluate_method(args, _open_set(args.set_dir), CLIError)
    refuse_iem_only_options(args, CLIError)
    cfg = _config(args)
    inpainter, _ = inpainter_from_args(args)
    dataset = _open_set(args.set_dir)
    dist.init()   # under torchrun: join the group; otherwise nothing
    scores, result, seconds = run_evaluation(dataset, cfg, args.limit, quiet=args.quiet or args.json,
                                             inpainter=inpainter)
    if not dist.is_main():
        dist.cleanup()
        return 0     # rank 0 alone reports
    dist.cleanup()
    _report_unlabelled(scores, dataset, args.set_dir)
    s = scores.summary()
    if args.json:
        print(json.dumps({"n": s["n"], "unlabelled": s["unlabelled"], "acc": round(s["acc"], 3),
                          "iou": round(s["iou"], 3), "dice": round(s["dice"], 3),
                          "seconds": round(seconds, 2)}))
    else:
        print(f"{args.set_dir}: {scores}")
        print(f"IEM {cfg.impl}, {cfg.iters} iterations, squares {list(cfg.init_sizes)} "
              f"(selected per {cfg.select}), {seconds:.1f} s on {cfg.torch_device()}")
    return 0


# --------------------------------------------------------------------------------- demo
def _check_writable(path: Path) -> None:
    """Before any work: ``path``'s folder exists or can be made, and takes a file."""
    import os
    import tempfile
    if path.is_dir():
        raise CLIError(f"{path}: is a folder; give a file name for the figure", EXIT_WRITE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".part", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CLIError(f"{path}: cannot write there ({err.strerror or err})", EXIT_WRITE) from None


def cmd_demo(args) -> int:
    from .data import DemoSet
    from .viz import save_overview

    if args.n < 1:
        raise CLIError(f"--n {args.n}: the demo needs at least one image")
    cfg = _config(args)
    out = Path(args.out)
    _check_writable(out)
    dataset = DemoSet(n=args.n)
    scores, result, seconds = run_evaluation(dataset, cfg, quiet=args.quiet)
    x, y = dataset.load()
    try:
        save_overview(out, x, y, result.masks, title=f"IEM on the composite demo set: {scores}")
    except OSError as err:
        raise CLIError(f"{out}: could not write the figure ({err.strerror or err})", EXIT_WRITE)
    print("composite demo set (scikit-image photographs, exact masks; no download)")
    print(f"{scores}")
    print(f"{seconds:.1f} s for {len(dataset)} images x {cfg.iters} iterations on {cfg.torch_device()}; "
          f"overview figure: {out}")
    return 0


# --------------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from .data import data_root, survey_datasets
    from .download import SPECS, DownloadError, download, verify
    root = Path(args.root) if args.root else data_root()
    try:
        if args.action == "list":
            if root.exists() and not root.is_dir():
                raise CLIError(f"{root}: the data root is a file, not a folder (point "
                               "$IEM_DATA_DIR or --root at a folder)")
            state = "" if root.is_dir() else " (no such folder yet: only the demo set is present)"
            print(f"data root: {root.resolve()}{state}")
            present, problems = survey_datasets(root)
            for name, spec in SPECS.items():
                # list and verify must agree on the paper's sets
                if (root / spec.folder).is_dir():
                    try:
                        verify(name, root)
                    except DownloadError as err:
                        problems[name] = str(err)
                        if name in present:
                            present.remove(name)
            print("present: " + ", ".join(present))
            for name in sorted(problems):
                hint = "; iem data download resumes" if name in SPECS else ""
                print(f"not usable: {name}: {problems[name]}{hint}")
            print("downloadable: " + ", ".join(f"{k} ({v.note})" for k, v in SPECS.items()))
            return 0
        if not args.name:
            raise CLIError(f"iem data {args.action} needs a dataset name: {', '.join(SPECS)}")
        if args.action == "download":
            folder = download(args.name, root, keep_archives=args.keep_archives,
                              progress=not args.quiet, source=args.source)
            print(f"{verify(args.name, root)} (ready in {folder})")
        elif args.source is not None:
            raise CLIError("--source applies to iem data download only")
        else:
            print(verify(args.name, root))
    except DownloadError as err:
        raise CLIError(str(err), status=1)
    except KeyboardInterrupt:
        raise CLIError("interrupted; files already checked are kept, rerun to resume",
                       status=130)
    return 0


# --------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli_learn import add_inpainter_options, add_parsers
    from .cli_related import METHOD_NOTES, add_method_options
    p = argparse.ArgumentParser(prog="iem", description=(
        "Inpainting Error Maximization (Savarese et al., CVPR 2021): unsupervised, "
        "learning-free foreground segmentation."), epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"iemlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment every image of a folder, one PNG mask each",
                       epilog=SEGMENT_NOTES + "\n\n" + METHOD_NOTES + "\n\n" + EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("in_dir", help="folder of images (or a set folder with images/)")
    s.add_argument("out_dir", help="where the masks go (<image stem>.png, 0 / 255)")
    s.add_argument("--size", type=int, default=128,
                   help=f"the shorter side is resized to this before IEM (128, as in the paper; "
                        f"at most {MAX_SIZE})")
    s.add_argument("--overwrite", action="store_true",
                   help="redo masks that already exist, and those made with other settings")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_iem_options(s)
    add_inpainter_options(s)
    add_method_options(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="run IEM (or --method M) on a labelled set and print "
                                        "accuracy / IoU / DICE", epilog=METHOD_NOTES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("set_dir", help="a folder with images/ and masks/, or a dataset name "
                                   "(flowers102, cub, lsun_car, demo, or a set under $IEM_DATA_DIR)")
    e.add_argument("--limit", type=int, default=None, help="the first N images in file-name order")
    e.add_argument("--json", action="store_true",
                   help="print one JSON object: n (images scored), unlabelled (images left "
                        "out: no labelled pixel), acc, iou, dice (percent), seconds")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_iem_options(e)
    add_inpainter_options(e)
    add_method_options(e)
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="IEM on the composite demo set: metrics and an overview figure")
    d.add_argument("--n", type=int, default=12, help="number of demo images")
    d.add_argument("--out", default="iem_demo.png", help="where to save the overview figure")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_iem_options(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("data", help="download, verify or list the datasets")
    a.add_argument("action", choices=("download", "verify", "list"))
    a.add_argument("name", nargs="?",
                   help="flowers102, cub, weizmann_horse, grabcut or coco_mval")
    a.add_argument("--root", default=None, help="data root (default: $IEM_DATA_DIR, else data/)")
    a.add_argument("--source", default=None, metavar="DIR_OR_URL",
                   help="weizmann_horse, grabcut, coco_mval: take the listed files from a "
                        "folder laid out like the repository (DIR/<path>) or from another "
                        "base URL (URL/<path>) instead of GitHub")
    a.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives or source files")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=cmd_data)

    add_parsers(sub, lambda parser: _add_iem_options(parser, batch_flag="--iem-batch-size"))
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the same message, every finished mask kept."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from .images import LargeImageWarning
    if issubclass(category, LargeImageWarning):
        _say("warning", str(message))
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv=None) -> int:
    import threading

    from .images import LargeImageWarning
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # recorded in provenance files
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", LargeImageWarning)
            warnings.showwarning = _show_warning
            return args.func(args)
    except CLIError as err:
        print(f"iem: error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt as err:
        hint = "; masks written so far are kept, rerun to resume" if args.command == "segment" else ""
        print(f"iem: interrupted{hint}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(err, _Terminated) else EXIT_INTERRUPTED
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
