"""Segmenting a folder of images with any method of :mod:`iemlib.related` (what
``iem segment --method M`` runs for M other than iem).

The folder rules are IEM's (:mod:`iemlib.folder`): one mask per image, ``<stem>.png``,
0 / 255, at the image's displayed size, each written atomically as soon as it is known;
a manifest of the settings beside them (a run with other settings refuses, or with
``overwrite`` redoes them); the folder is locked while a run writes to it; a rerun
skips the masks already done.

* Methods that work image by image see each image with its shorter side at ``size``, the
  whole image kept (as IEM does).
* Methods that learn from the whole set (iic, redo) need one shape for all: every image
  is resized to ``size`` x ``size`` (nearest neighbour, as the paper's pre-processing;
  aspect not kept, nothing cropped), the network is
  trained on all readable images of the folder, and each mask is resized back. The
  training checkpoint lives in the output folder (``.iem-train-<method>/``), so an
  interrupted run resumes its training; it is removed when every mask is written.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..folder import (FolderSummary, OutputError, _check_folders, _no_progress, _OutputFolder,
                      _write_error, mask_done, open_manifest, write_png_atomic)
from ..images import ImageError, image_to_array, read_image
from . import TRAINS_ON_SET, segment

#: config fields that do not change the masks (where and how a run is shown or stored)
_NOT_SETTINGS = ("device", "progress", "out_dir", "batch_size")


def method_settings(method: str, cfg, size: int) -> dict:
    import json
    d = {k: v for k, v in dataclasses.asdict(cfg).items()
         if k not in _NOT_SETTINGS or (method in TRAINS_ON_SET and k == "batch_size")}
    return json.loads(json.dumps({"method": method, **d, "size": size}, default=str))


def _write(mask: torch.Tensor, shown, path: Path, summary: FolderSummary) -> None:
    img = Image.fromarray(mask.numpy().astype(np.uint8) * 255)
    if img.size != tuple(shown):
        img = img.resize(tuple(shown), Image.NEAREST)
    try:
        write_png_atomic(np.asarray(img), path)
    except OSError as err:
        raise _write_error(path, err, "the mask") from None
    summary.segmented += 1


def segment_folder_with(method: str, cfg, in_dir, out_dir, size: int = 128,
                        overwrite: bool = False, report=None, progress=None) -> FolderSummary:
    """Segment every image of ``in_dir`` into ``out_dir`` with ``method`` under ``cfg``
    (see the module notes). ``report(kind, message)`` gets one line per bad ("error") or
    skipped entry; ``progress(total, desc)`` makes a bar. Raises ImageError, FolderError
    or OutputError (one line naming the file); masks written before are kept."""
    start = time.perf_counter()
    report = report or (lambda kind, message: None)
    progress = progress or _no_progress
    job = type("Job", (), {"in_dir": Path(in_dir), "out_dir": Path(out_dir)})()
    scan = _check_folders(job)
    out = Path(out_dir)
    summary = FolderSummary()
    with _OutputFolder(out):
        open_manifest(out, scan, method_settings(method, cfg, size), overwrite,
                      {"device": str(getattr(cfg, "device", None))})
        for path, reason in scan.ignored:
            report("skipped", f"{path}: {reason}")
            summary.ignored += 1
        for path, reason in scan.bad:
            report("error", f"{path}: {reason}")
            summary.failed += 1
        todo = []
        for path in scan.images:
            if not overwrite and mask_done(out / (path.stem + ".png"), path):
                summary.done_before += 1
            else:
                todo.append(path)
        if method in TRAINS_ON_SET:
            _whole_set(method, cfg, scan.images, todo, out, size, summary, report, progress, overwrite)
        else:
            bar = progress(len(todo), method)
            for path in todo:
                try:
                    img = read_image(path)
                    x = torch.from_numpy(image_to_array(img, size, crop=False))[None]
                except ImageError as err:
                    report("error", str(err))
                    summary.failed += 1
                    bar.update(1)
                    continue
                result = segment(x, method, cfg)
                _write(result.masks[0, 0], img.size, out / (path.stem + ".png"), summary)
                bar.update(1)
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _whole_set(method, cfg, images, todo, out, size, summary, report, progress, overwrite):
    if not todo:
        return
    xs, shown, names = [], {}, []
    bar = progress(len(images), "load")
    for path in images:
        try:
            img = read_image(path)
            xs.append(image_to_array(img.resize((size, size), Image.NEAREST), None))   # NEAREST, as the pre-processing
            shown[path], names = img.size, names + [path]
        except ImageError as err:
            report("error", str(err))
            summary.failed += 1
        bar.update(1)
    bar.close()
    if not xs:
        return
    x = torch.from_numpy(np.stack(xs))
    train_dir = out / f".iem-train-{method}"
    if overwrite:   # a training of other settings must not be resumed
        shutil.rmtree(train_dir, ignore_errors=True)
    try:
        train_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise OutputError(f"{train_dir}: cannot create the training folder "
                          f"({err.strerror or err})") from None
    wanted = [i for i, p in enumerate(names) if p in set(todo)]
    if not wanted:      # what was left to do were unreadable files, already reported
        return
    result = segment(x[wanted], method, dataclasses.replace(cfg, out_dir=str(train_dir)),
                     progress, train_images=x)
    for j, i in enumerate(wanted):
        _write(result.masks[j, 0], shown[names[i]], out / (names[i].stem + ".png"), summary)
    shutil.rmtree(train_dir, ignore_errors=True)
