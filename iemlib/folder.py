"""Segmenting a folder of images into a folder of masks (what ``iem segment`` runs).

* **Streaming.** Images are read, pre-processed, segmented and written batch by batch:
  at most one batch of pre-processed images is held, whatever the folder's size. With
  ``select="image"`` each mask is written as soon as its image has settled, not when its
  batch ends, so an interrupt keeps every finished mask.
* **Resume.** A mask counts as done when it decodes fully, holds only 0 / 255 and has its
  image's displayed size; anything else is redone. Hidden ``.part`` files that a killed
  run left behind are removed first.
* **Settings.** A manifest, :data:`MANIFEST`, records the settings beside the masks. A run
  whose settings differ refuses, naming them; ``overwrite`` removes the masks made with
  the other settings and redoes them, so a folder never mixes two settings.
* **One run at a time.** The output folder is locked (an advisory ``flock``, released by
  the system whatever way the process ends); a second run on it refuses at once.
* **Dataset selection** (``select="dataset"`` with several squares) needs every image's
  errors before any mask is known. A first pass computes them (no masks), records the
  chosen square in the manifest, and a second pass segments with that square alone,
  streaming as above; a rerun reuses the recorded choice.

Problems come out as exceptions whose message is one line naming the file:
:class:`~iemlib.images.ImageError` for unusable input, :class:`FolderError` for a refusal
about the folders or settings, :class:`OutputError` when an output cannot be written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path
from .iem import IEMConfig, select_init
from .images import (IMAGE_SUFFIXES, ImageError, LargeImageWarning, displayed_size,
                     image_to_array, read_image, scan_images)

#: The manifest written beside the masks.
MANIFEST = "iem.json"
#: IEMConfig fields that change the masks; the others (device, batch size, impl, early
#: exit, recording) do not, so a rerun may change them.
METHOD_FIELDS = ("iters", "sigma", "taps", "reps", "scale_factor", "lam", "lambda_convention",
                 "smoothing", "smoothing_rule", "boundary_only", "edge_is_boundary",
                 "numerator", "denominator", "denominator_mask", "init_sizes", "select",
                 "dtype")


class FolderError(ValueError):
    """A refusal about the folders or the settings (one line, names the folder)."""


class OutputError(OSError):
    """An output could not be written (one line, names the file)."""


@dataclass(frozen=True)
class FolderJob:
    """What to segment and how.

    in_dir: a folder of images, or a set folder with ``images/``; out_dir: where the masks
    go (``<image stem>.png``, 0 / 255, at the image's displayed size); config: the IEM
    settings; size: the shorter side before IEM (128, as in the paper); overwrite: redo
    masks that exist (and those made with other settings)."""

    in_dir: Path
    out_dir: Path
    config: IEMConfig
    size: int = 128
    overwrite: bool = False
    #: a learned inpainter (any inpainter callable) instead of the Gaussian one, and what
    #: identifies it in the settings manifest (e.g. its file's SHA-256 and output)
    inpainter: object | None = None
    inpainter_id: dict | None = None


@dataclass
class FolderSummary:
    """Counts of one run: masks written, masks found done, images that failed, entries
    ignored (not images), and the wall time."""

    segmented: int = 0
    done_before: int = 0
    failed: int = 0
    ignored: int = 0
    seconds: float = 0.0


#: report(kind, message): kind is "error" (a bad input, counted as failed) or
#: "skipped" (an entry that is not an image).
Reporter = Callable[[str, str], None]


# ------------------------------------------------------------------------------ outputs
def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a uint8 array as PNG via a temporary file in the same folder + rename, so that
    an interrupted run never leaves a half-written mask."""
    with atomic_path(path, suffix=".png.part") as tmp, open(tmp, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def _write_error(path: Path, err: OSError, what: str) -> OutputError:
    return OutputError(f"{path}: could not write {what} ({err.strerror or err})")


def mask_done(mask: Path, image: Path) -> bool:
    """True when ``mask`` is a whole binary PNG of ``image``'s displayed size: decoded in
    full, since a truncated file can have a valid header."""
    if not mask.is_file():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LargeImageWarning)  # reported when it is read
            shown = displayed_size(image)
        with Image.open(mask) as m:
            if m.format != "PNG" or m.mode != "L" or m.size != shown:
                return False
            values = np.unique(np.asarray(m))
    except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False
    return set(values.tolist()) <= {0, 255}


def _is_leftover(name: str) -> bool:
    """Temporary files of this module's writers (hidden, ``.part``)."""
    return name.startswith(".") and name.endswith(".part") and (
        name.endswith((".png.part", ".json.part")) or name.startswith(".iem-probe."))


class _OutputFolder:
    """The output folder for the length of a run: created, proved writable, locked, and
    cleared of temporary files a killed run left."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._fd = None

    def __enter__(self) -> "_OutputFolder":
        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{folder}: cannot create the output folder "
                              f"({err.strerror or err})") from None
        try:
            fd, probe = tempfile.mkstemp(prefix=".iem-probe.", suffix=".part", dir=folder)
            try:
                os.write(fd, b"iem")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as err:
            raise OutputError(f"{folder}: the output folder is not writable "
                              f"({err.strerror or err})") from None
        self._lock()
        try:
            for p in folder.iterdir():
                if _is_leftover(p.name):
                    p.unlink(missing_ok=True)
        except OSError as err:
            self.__exit__()
            raise OutputError(f"{folder}: cannot clear temporary files of an earlier run "
                              f"({err.strerror or err})") from None
        return self

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: runs are not locked
            return
        try:
            self._fd = os.open(self.folder, os.O_RDONLY)
        except OSError:  # pragma: no cover - folders that cannot be opened for locking
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise OutputError(f"{self.folder}: another iem segment is writing to this folder; "
                              "wait for it to end or choose another output folder") from None
        except OSError:  # pragma: no cover - file systems without locks (some NFS)
            pass

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


# ----------------------------------------------------------------------------- manifest
def method_settings(cfg: IEMConfig, size: int) -> dict:
    """The settings that decide the masks, as JSON values."""
    out = {f: getattr(cfg, f) for f in METHOD_FIELDS}
    out["init_sizes"] = list(cfg.init_sizes)
    out["size"] = size
    return json.loads(json.dumps(out))


def _names_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()


class _Manifest:
    """``iem.json`` in the output folder: {"settings": ..., "recorded_with": ...,
    "dataset_choice": {"square", "images", "names_sha256"} (select="dataset" only)}."""

    def __init__(self, folder: Path):
        self.path = folder / MANIFEST
        self.data: dict | None = None

    def read(self, overwrite: bool) -> dict | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
                raise ValueError("no settings in it")
        except (OSError, ValueError) as err:
            if overwrite:
                return None
            raise FolderError(f"{self.path}: unreadable manifest ({err}); use --overwrite to "
                              "redo the masks, or another output folder") from None
        return data

    def write(self, data: dict) -> None:
        self.data = data
        try:
            with atomic_path(self.path, suffix=".json.part") as tmp:
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as err:
            raise _write_error(self.path, err, "the manifest") from None


def _describe_change(old: dict, new: dict) -> str:
    if old.get("method", "iem") != new.get("method", "iem"):   # the other fields differ too
        return f"method {json.dumps(old.get('method', 'iem'))} (now {json.dumps(new.get('method', 'iem'))})"
    keys = sorted(set(old) | set(new))
    diffs = [f"{k} {json.dumps(old.get(k))} (now {json.dumps(new.get(k))})"
             for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diffs)


# ------------------------------------------------------------------------------ the run
@dataclass
class _Item:
    path: Path
    x: np.ndarray | None          # (3, h, w) float32 in [-1, 1]
    shown: tuple[int, int]        # (width, height) of the image as displayed


class _Batches:
    """Pre-processed images waiting to be segmented, grouped by shape (``segment`` takes
    one size per call). The pixels held stay below one batch: when they reach it, the
    fullest group is segmented, so memory does not grow with the folder."""

    def __init__(self, cfg: IEMConfig, size: int, run: Callable[[list[_Item]], None]):
        per_batch = max(1, cfg.batch_size // len(cfg.init_sizes))
        self.cap = per_batch * size * size
        self.groups: dict[tuple[int, int], list[_Item]] = {}
        self.pixels = 0
        self.run = run

    def add(self, item: _Item) -> None:
        key = tuple(item.x.shape[1:])
        self.groups.setdefault(key, []).append(item)
        self.pixels += key[0] * key[1]
        while self.pixels >= self.cap:
            self.flush(max(self.groups, key=lambda k: len(self.groups[k]) * k[0] * k[1]))

    def flush(self, key) -> None:
        group = self.groups.pop(key)
        self.pixels -= len(group) * key[0] * key[1]
        self.run(group)

    def close(self) -> None:
        for key in list(self.groups):
            self.flush(key)


class _Run:
    """One ``segment_folder`` call: the state shared by its passes."""

    def __init__(self, job: FolderJob, report: Reporter, progress):
        self.job, self.report, self.progress = job, report, progress
        self.cfg = job.config
        self.out = Path(job.out_dir)
        self.summary = FolderSummary()
        self.failed: set[Path] = set()

    def _read(self, path: Path) -> _Item | None:
        if path in self.failed:
            return None
        try:
            img = read_image(path)
            x = image_to_array(img, self.job.size, crop=False)
        except ImageError as err:
            self.failed.add(path)
            self.summary.failed += 1
            self.report("error", str(err))
            return None
        return _Item(path, x, img.size)

    def _stack(self, group: list[_Item]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([g.x for g in group]))
        for g in group:
            g.x = None  # the stacked copy is all that is needed now
        return x

    def _mask_path(self, path: Path) -> Path:
        return self.out / (path.stem + ".png")

    def errors_pass(self, images: list[Path]) -> tuple[list[Path], torch.Tensor | None]:
        """The readable images and their final errors from each square: (N', K) float64,
        rows in file-name order (None when no image could be read)."""
        from . import iem
        errors: dict[Path, torch.Tensor] = {}
        bar = self.progress(len(images), "choose square")

        def run(group):
            result = iem.segment(self._stack(group), self.cfg, inpainter=self.job.inpainter)
            for g, e in zip(group, result.all_errors):
                errors[g.path] = e
            bar.update(len(group))

        batches = _Batches(self.cfg, self.job.size, run)
        for path in images:
            item = self._read(path)
            if item is None:
                bar.update(1)
                continue
            batches.add(item)
        batches.close()
        bar.close()
        kept = [p for p in images if p in errors]
        return kept, (torch.stack([errors[p] for p in kept]) if kept else None)

    def masks_pass(self, images: list[Path], cfg: IEMConfig) -> None:
        """Segment and write every image not done yet, each mask as soon as it is final."""
        from . import iem
        bar = self.progress(len(images), "segment")

        def run(group):
            def write(i, mask):
                g = group[i]
                img = Image.fromarray(mask[0].numpy().astype(np.uint8) * 255)
                if img.size != g.shown:
                    img = img.resize(g.shown, Image.NEAREST)
                path = self._mask_path(g.path)
                try:
                    write_png_atomic(np.asarray(img), path)
                except OSError as err:
                    raise _write_error(path, err, "the mask") from None
                self.summary.segmented += 1
                bar.update(1)

            iem.segment(self._stack(group), cfg, inpainter=self.job.inpainter, on_mask=write)

        batches = _Batches(cfg, self.job.size, run)
        for path in images:
            if not self.job.overwrite and mask_done(self._mask_path(path), path):
                self.summary.done_before += 1
                bar.update(1)
                continue
            item = self._read(path)
            if item is None:
                bar.update(1)
                continue
            batches.add(item)
        batches.close()
        bar.close()


def _no_progress(total: int, desc: str):
    class _Null:
        def update(self, n=1):
            pass

        def close(self):
            pass
    return _Null()


def _check_folders(job: FolderJob):
    """The input's images (a scan), refusing what cannot work before anything is written."""
    in_dir, out_dir = Path(job.in_dir), Path(job.out_dir)
    img_dir = in_dir / "images" if (in_dir / "images").is_dir() else in_dir
    scan = scan_images(img_dir)
    if not scan.images and not scan.bad:
        others = len(scan.ignored)
        extra = f"; {others} other entr{'y' if others == 1 else 'ies'} skipped" if others else ""
        raise ImageError(f"{img_dir}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}"
                         f"{extra})")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.resolve() in (in_dir.resolve(), img_dir.resolve()):
        raise FolderError(f"{out_dir}: the output folder must differ from the input folder")
    by_stem: dict[str, Path] = {}
    for f in scan.images:
        if f.stem in by_stem:
            raise FolderError(f"{f}: same name as {by_stem[f.stem].name}, both would be written "
                              f"to {f.stem}.png; rename one")
        by_stem[f.stem] = f
    return scan


def open_manifest(out: Path, scan, settings: dict, overwrite: bool, recorded_with: dict):
    """Inside a locked output folder: compare ``settings`` with the manifest there, refuse
    (or, with ``overwrite``, remove the masks made with other settings), write the new
    manifest. Returns (manifest, its data, the earlier dataset choice or None)."""
    manifest = _Manifest(out)
    old = manifest.read(overwrite)
    ours = [p for p in (out / (f.stem + ".png") for f in scan.images) if p.exists()]
    if old is not None and old["settings"] != settings:
        stale = f"masks made with other settings: {_describe_change(old['settings'], settings)}"
    elif old is None and ours:
        stale = f"holds masks ({len(ours)}, e.g. {ours[0].name}) but no {MANIFEST} saying " \
                "which settings made them"
    else:
        stale = ""
    if stale and not overwrite:
        raise FolderError(f"{out}: {stale}; use --overwrite to redo them with these "
                          "settings, or another output folder")
    if stale:
        for p in ours:  # so that the folder never mixes two settings
            try:
                p.unlink()
            except OSError as err:
                raise OutputError(f"{p}: could not remove the old mask "
                                  f"({err.strerror or err})") from None
    from . import __version__
    data = {"settings": settings, "recorded_with": {"iemlib": __version__, **recorded_with}}
    choice = (old or {}).get("dataset_choice") if not stale and not overwrite else None
    if choice is not None:
        data["dataset_choice"] = choice
    manifest.write(data)
    return manifest, data, choice


def segment_folder(job: FolderJob, report: Reporter, progress=None) -> FolderSummary:
    """Segment every image of ``job.in_dir`` into ``job.out_dir`` (see the module
    docstring). ``report(kind, message)`` receives one line per bad or skipped entry;
    ``progress(total, description)`` returns a bar with ``update(n)`` and ``close()``.
    Raises ImageError, FolderError or OutputError; masks written before are kept."""
    start = time.perf_counter()
    scan = _check_folders(job)
    cfg, out = job.config, Path(job.out_dir)
    if cfg.select == "dataset" and len(cfg.init_sizes) == 1:
        cfg = cfg.replace(select="image")  # one square: nothing to choose
    run = _Run(dataclasses.replace(job, config=cfg), report, progress or _no_progress)
    with _OutputFolder(out):
        settings = method_settings(cfg, job.size)
        if job.inpainter_id is not None:
            settings["inpainter"] = job.inpainter_id
        manifest, data, choice = open_manifest(
            out, scan, settings, job.overwrite,
            {"impl": cfg.impl, "device": str(cfg.torch_device()), "batch_size": cfg.batch_size})

        for path, reason in scan.ignored:
            report("skipped", f"{path}: {reason}")
            run.summary.ignored += 1
        for path, reason in scan.bad:
            report("error", f"{path}: {reason}")
            run.summary.failed += 1

        masks_cfg = cfg
        if cfg.select == "dataset":
            masks_cfg = _dataset_square(run, scan.images, manifest, data, choice)
        if masks_cfg is not None:
            run.masks_pass(scan.images, masks_cfg)
    run.summary.seconds = time.perf_counter() - start
    return run.summary


def _dataset_square(run: _Run, images: list[Path], manifest: _Manifest, data: dict,
                    choice: dict | None) -> IEMConfig | None:
    """The configuration with the square chosen over the whole folder (recorded in the
    manifest, reused when the images are the same); None when no image could be read."""
    cfg = run.cfg
    names = _names_digest([p.name for p in images])
    if choice is not None:
        if choice.get("names_sha256") != names or choice.get("square") not in cfg.init_sizes:
            raise FolderError(f"{run.out}: the images changed since the square was chosen "
                              f"for the whole folder ({choice.get('square')} over "
                              f"{choice.get('images')} images); use --overwrite to choose "
                              "again and redo every mask")
        return cfg.replace(init_sizes=(choice["square"],), select="image")
    kept, errors = run.errors_pass(images)
    if errors is None:
        return None
    square = cfg.init_sizes[int(select_init(errors, "dataset")[0])]
    # kept while the folder's image names stay the same (a rerun need not read them all)
    data["dataset_choice"] = {"square": square, "images": len(kept), "names_sha256": names}
    manifest.write(data)
    return cfg.replace(init_sizes=(square,), select="image")
