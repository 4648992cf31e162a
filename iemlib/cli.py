"""The ``iem`` command: segment a folder, evaluate on a labelled set, run the demo.

    iem segment IN_DIR OUT_DIR      one PNG mask per image, at the image's own size
    iem evaluate SET_DIR            IEM on images/ + masks/, prints accuracy / IoU / DICE
    iem demo                        the composite demo set: metrics and an overview figure
    iem data download NAME          fetch, check and unpack a paper dataset (flowers102, cub)
                                    or build a shared set from its listed source files
                                    (weizmann_horse, grabcut, coco_mval)

Errors in the input (missing or empty folders, unreadable, truncated or 16-bit images,
image/mask size mismatch, tiny images) are reported in one line naming the file, with a
non-zero exit status; masks already written are never lost (each is written to a
temporary file and renamed into place, so a rerun resumes where it stopped).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_path

EXIT_BAD_INPUT = 1   # bad input files or settings (argparse uses 2 for usage errors)


class CLIError(Exception):
    """An error to print as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------- options
def _add_iem_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("IEM settings (defaults: the authors' code)")
    g.add_argument("--iters", type=int, default=150, help="number of updates (150)")
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
    g.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when available)")
    g.add_argument("--batch-size", type=int, default=128, help="images x squares per batch")


def _config(args):
    from .iem import PAPER_INIT_SIZES, IEMConfig
    sizes = args.init_sizes or (PAPER_INIT_SIZES if args.paper else (78,))
    too_big = [s for s in sizes if s > 128]
    if too_big:
        raise CLIError(f"--init-sizes {too_big[0]}: squares are given at 128 x 128, "
                       "so a side must be at most 128")
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
    if cfg.torch_device().type == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CLIError("--device cuda asked for, but no CUDA device is available")
    return cfg


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=quiet, file=sys.stderr)


# ------------------------------------------------------------------------------ segment
def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as PNG via a temporary file in the same folder + rename, so that
    an interrupted run never leaves a half-written mask."""
    from PIL import Image
    with atomic_path(path, suffix=".png.part") as tmp, open(tmp, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def _mask_done(mask: Path, image: Path) -> bool:
    """A mask counts as done when it is a readable PNG of its image's size (header only)."""
    from PIL import Image
    if not mask.is_file():
        return False
    try:
        with Image.open(mask) as m, Image.open(image) as i:
            return m.format == "PNG" and m.size == i.size
    except (OSError, ValueError):
        return False


def cmd_segment(args) -> int:
    import torch
    from PIL import Image

    from .images import ImageError, image_to_array, list_images, read_image
    from .iem import segment

    from .images import MIN_SIDE
    if args.size < MIN_SIDE:
        raise CLIError(f"--size {args.size}: the shorter side must be at least {MIN_SIDE} pixels")
    cfg = _config(args)
    in_dir, out_dir = Path(args.in_dir), Path(args.out_dir)
    img_dir = in_dir / "images" if (in_dir / "images").is_dir() else in_dir
    try:
        files = list_images(img_dir)
    except ImageError as err:
        raise CLIError(str(err))
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir}: exists and is not a folder")
    if out_dir.resolve() in (in_dir.resolve(), img_dir.resolve()):
        raise CLIError(f"{out_dir}: the output folder must differ from the input folder")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise CLIError(f"{f}: same name as {by_stem[f.stem].name}, both would be written "
                           f"to {f.stem}.png; rename one")
        by_stem[f.stem] = f
    todo = [f for f in files if args.overwrite or not _mask_done(out_dir / (f.stem + ".png"), f)]
    skipped = len(files) - len(todo)
    failed: list[str] = []
    written = 0
    start = time.perf_counter()
    bar = _progress(len(todo), "segment", args.quiet)
    # images of one shape after resizing are segmented together
    pending: dict[tuple[int, int], list] = {}

    def flush(shape):
        nonlocal written
        group = pending.pop(shape, [])
        if not group:
            return
        x = torch.from_numpy(np.stack([g[1] for g in group]))
        result = segment(x, cfg)
        for (path, _, size), mask in zip(group, result.masks[:, 0].numpy()):
            img = Image.fromarray(mask.astype(np.uint8) * 255)
            if img.size != size:
                img = img.resize(size, Image.NEAREST)
            write_png_atomic(np.asarray(img), out_dir / (path.stem + ".png"))
            written += 1
        bar.update(len(group))

    for path in todo:
        try:
            img = read_image(path)
            x = image_to_array(img, args.size, crop=False)
        except ImageError as err:
            failed.append(str(err))
            print(f"iem: error: {err}", file=sys.stderr)
            bar.update(1)
            continue
        key = tuple(x.shape[1:])
        pending.setdefault(key, []).append((path, x, img.size))
        if len(pending[key]) >= cfg.batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    bar.close()
    secs = time.perf_counter() - start
    where = f"masks in {out_dir}" if written or skipped else "no masks written"
    print(f"segmented {written}, skipped {skipped} already done, failed {len(failed)}; "
          f"{where} ({secs:.1f} s)", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


# ----------------------------------------------------------------------------- evaluate
def _open_set(spec: str):
    from .data import open_dataset
    from .images import ImageError
    try:
        return open_dataset(spec)
    except ImageError as err:
        raise CLIError(str(err))


def run_evaluation(dataset, cfg, limit=None, quiet=False):
    """Load (the first ``limit`` of) a labelled set, segment it, score it.

    Returns (scores, result, seconds of segmentation)."""
    import torch

    from .images import ImageError
    from .iem import segment
    from .metrics import evaluate

    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise CLIError(f"{dataset}: no images to evaluate")
    xs, ys = [], []
    bar = _progress(n, "load", quiet)
    for i in range(n):
        try:
            x, y = dataset[i]
        except ImageError as err:
            bar.close()
            raise CLIError(str(err))
        if y is None:
            bar.close()
            raise CLIError(f"{dataset.names[i]}: no ground-truth mask; evaluate needs masks")
        xs.append(x)
        ys.append(y)
        bar.update(1)
    bar.close()
    x = torch.from_numpy(np.stack(xs))
    y = torch.from_numpy(np.stack(ys))[:, None]
    start = time.perf_counter()
    result = segment(x, cfg, progress=not quiet)
    seconds = time.perf_counter() - start
    return evaluate(result.masks, y), result, seconds


def cmd_evaluate(args) -> int:
    cfg = _config(args)
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    dataset = _open_set(args.set_dir)
    scores, result, seconds = run_evaluation(dataset, cfg, args.limit, quiet=args.quiet or args.json)
    s = scores.summary()
    if args.json:
        print(json.dumps({"n": s["n"], "acc": round(s["acc"], 3), "iou": round(s["iou"], 3),
                          "dice": round(s["dice"], 3), "seconds": round(seconds, 2)}))
    else:
        print(f"{args.set_dir}: {scores}")
        print(f"IEM {cfg.impl}, {cfg.iters} iterations, squares {list(cfg.init_sizes)} "
              f"(selected per {cfg.select}), {seconds:.1f} s on {cfg.torch_device()}")
    return 0


# --------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from .data import DemoSet
    from .viz import save_overview

    if args.n < 1:
        raise CLIError(f"--n {args.n}: the demo needs at least one image")
    cfg = _config(args)
    dataset = DemoSet(n=args.n)
    scores, result, seconds = run_evaluation(dataset, cfg, quiet=args.quiet)
    x, y = dataset.load()
    out = Path(args.out)
    save_overview(out, x, y, result.masks, title=f"IEM on the composite demo set: {scores}")
    print("composite demo set (scikit-image photographs, exact masks; no download)")
    print(f"{scores}")
    print(f"{seconds:.1f} s for {len(dataset)} images x {cfg.iters} iterations on {cfg.torch_device()}; "
          f"overview figure: {out}")
    return 0


# --------------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from .data import available_datasets, data_root
    from .download import SPECS, DownloadError, download, verify
    root = Path(args.root) if args.root else data_root()
    try:
        if args.action == "list":
            print(f"data root: {root.resolve()}")
            print("present: " + (", ".join(available_datasets(root)) or "none"))
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
    p = argparse.ArgumentParser(prog="iem", description=(
        "Inpainting Error Maximization (Savarese et al., CVPR 2021): unsupervised, "
        "learning-free foreground segmentation."))
    p.add_argument("--version", action="version", version=f"iemlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment every image of a folder, one PNG mask each")
    s.add_argument("in_dir", help="folder of images (or a set folder with images/)")
    s.add_argument("out_dir", help="where the masks go (<image stem>.png, 0 / 255)")
    s.add_argument("--size", type=int, default=128,
                   help="the shorter side is resized to this before IEM (128, as in the paper)")
    s.add_argument("--overwrite", action="store_true", help="redo masks that already exist")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_iem_options(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="run IEM on a labelled set and print accuracy / IoU / DICE")
    e.add_argument("set_dir", help="a folder with images/ and masks/, or a dataset name "
                                   "(flowers102, cub, lsun_car, demo, or a set under $IEM_DATA_DIR)")
    e.add_argument("--limit", type=int, default=None, help="the first N images in file-name order")
    e.add_argument("--json", action="store_true",
                   help="print one JSON object: n, acc, iou, dice (percent), seconds")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_iem_options(e)
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
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as err:
        print(f"iem: error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        hint = "; masks written so far are kept, rerun to resume" if args.command == "segment" else ""
        print(f"iem: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
