"""Unlabelled training images: every photograph of the folders given, randomly cropped.

:class:`ImageCorpus` implements :class:`iemlib.training.TrainData` for networks that learn
from images alone (the inpainter). What it reads:

* each folder given is a set folder holding ``images/`` (then only ``images/`` is read,
  never ``masks/``) or a plain folder of images;
* **recursively**, in sorted relative-path order, because the paper's CUB keeps its images
  in one sub-folder per species (``images/001.Black_footed_Albatross/...``). Hidden
  entries are skipped, and so are folders named ``masks``, ``segmentations`` or
  ``segmim``: the ground truth of the simple layout, CUB and Flowers-102, never training
  images;
* files with the suffixes of :data:`iemlib.images.IMAGE_SUFFIXES` (jpg, jpeg, png, bmp,
  tif, tiff, webp); a file reached through two folders given counts once.

Construction opens every file's header (a fraction of a millisecond each, so a corpus of
10,000 images is listed in about a second) and stops with one line naming the first file
that is not an image, is smaller than :data:`iemlib.images.MIN_SIDE` or is not 8-bit. Pixels
are decoded when first needed: a file whose data turns out to be broken (a truncated JPEG)
is then skipped with one warning line naming it, and the next readable image of the corpus
takes its place, a choice every process makes alike.

A sample is the paper's pre-processing with a random crop instead of the centre crop:
the shorter side resized to ``size`` with NEAREST interpolation
(:func:`iemlib.images.resize_short_side`, as for IEM), then a random ``size x size`` crop
and a random horizontal flip, both drawn from the generator the loop passes, values in
[-1, 1]: ``{"image": (3, size, size) float32}``. Decoded, resized images are kept in memory
(as uint8) up to ``cache_mb`` megabytes, about 0.1 MB each at 128 pixels: the shared sets'
~1,200 images take ~90 MB. With DataLoader workers each worker keeps its own cache.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .images import (IMAGE_SUFFIXES, MIN_SIDE, ImageError, _check_8bit, read_image,
                     resize_short_side)

#: Folders never searched for training images: ground truth in the layouts iemlib reads.
SKIPPED_FOLDERS = ("masks", "segmentations", "segmim")


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every image under ``folder`` (its ``images/`` when there is one), recursively, in
    sorted relative-path order; see the module's docstring for what is skipped."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ImageError(f"{folder}: is a file; give the folder that holds the images")
    root = folder / "images" if (folder / "images").is_dir() else folder
    found = []
    for here, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() not in SKIPPED_FOLDERS)
        found.extend(Path(here) / f for f in sorted(files)
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ImageError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, "
                         "recursively)")
    return found


def _check_header(path: Path) -> None:
    try:
        with Image.open(path) as img:
            w, h = img.size
            _check_8bit(img, path)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: unreadable image ({err})") from None
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than {MIN_SIDE} pixels on a side")


class ImageCorpus:
    """Every image of ``dirs`` (one folder or several) as random ``size x size`` crops.

    ``len(corpus)`` images, ``corpus.files`` their paths; ``corpus.get(i, rng)`` ->
    ``{"image": (3, size, size) float32 in [-1, 1]}``. ``flip=False`` turns the random
    horizontal flip off; ``cache_mb`` bounds the memory kept for decoded images (0: none)."""

    def __init__(self, dirs: str | os.PathLike | Iterable[str | os.PathLike], size: int = 128,
                 flip: bool = True, cache_mb: float = 1024):
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        dirs = list(dirs)
        if not dirs:
            raise ImageError("no image folders given")
        if size < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE}, got {size}")
        self.size, self.flip = int(size), bool(flip)
        seen, files = set(), []
        for d in dirs:
            for f in find_images(d):
                key = f.resolve()
                if key not in seen:
                    seen.add(key)
                    files.append(f)
        for f in files:
            _check_header(f)
        self.files: list[Path] = files
        self._cache: dict[int, np.ndarray] = {}
        self._cache_left = int(cache_mb * 2**20)
        self._broken: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ImageCorpus({len(self)} images, size={self.size})"

    def resized(self, index: int) -> np.ndarray:
        """Image ``index`` after the paper's resize: uint8 (H, W, 3), min(H, W) == size.
        A broken file is replaced by the next readable image (with one warning line)."""
        for k in range(len(self.files)):
            i = (index + k) % len(self.files)
            if i in self._broken:
                continue
            arr = self._cache.get(i)
            if arr is not None:
                return arr
            try:
                arr = np.asarray(resize_short_side(read_image(self.files[i]), self.size))
            except ImageError as err:
                self._broken.add(i)
                print(f"warning: skipping {err}", file=sys.stderr)
                continue
            if arr.nbytes <= self._cache_left:
                self._cache[i] = arr
                self._cache_left -= arr.nbytes
            return arr
        raise ImageError(f"none of the {len(self.files)} images can be decoded")

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        arr = self.resized(index)
        h, w = arr.shape[:2]
        top = int(torch.randint(0, h - self.size + 1, (), generator=rng))
        left = int(torch.randint(0, w - self.size + 1, (), generator=rng))
        crop = arr[top:top + self.size, left:left + self.size]
        if self.flip and bool(torch.rand((), generator=rng) < 0.5):
            crop = crop[:, ::-1]
        # the same arithmetic as iemlib.images.image_to_array, so values match it exactly
        x = np.ascontiguousarray(crop, dtype=np.float32) / 255.0
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1) * 2.0 - 1.0))}


__all__ = ["ImageCorpus", "find_images", "SKIPPED_FOLDERS"]
