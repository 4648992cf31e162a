"""Convert source image / mask pairs to the simple layout, by the rules of data/README.md.

For every pair (the image and the mask share a stem):

1. the image is opened and converted to RGB; a mask with several channels keeps its first
   channel (``channel="first"``) or is converted to grey (``channel="grey"``);
2. mask values: ``values="binary"``: > 0, or > 127 where the maximum is above 1, is 255,
   the rest 0; ``values="trimap"``: > 200 is 255, < 50 is 0, anything between 128
   (unknown);
3. a mask whose size differs from the image's is resized to it (NEAREST);
4. when the shorter side exceeds 256, both are scaled so that it is 256: the new size is
   ``(max(1, round(w * s)), max(1, round(h * s)))``, Python's round, the image BICUBIC
   and the mask NEAREST;
5. the image is saved as ``images/<stem>.jpg`` (JPEG, quality 95, Pillow's other
   defaults) and the mask as ``masks/<stem>.png``.

Everything else is Pillow's default on purpose, so that the same source files give the
same bytes: a JPEG source's comment, for instance, is carried into the converted image,
as Pillow does.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path
from .images import ImageError

FOREGROUND, UNKNOWN_BAND, BACKGROUND = 255, 128, 0


@dataclass(frozen=True)
class ConversionRules:
    """How one set's sources become the simple layout (see the module docstring)."""

    channel: str = "first"       # masks with several channels: "first" or "grey"
    values: str = "binary"       # "binary" or "trimap" (with the unknown band)
    max_side: int = 256          # a larger shorter side is scaled down to this
    quality: int = 95            # JPEG quality of the converted images

    def __post_init__(self):
        if self.channel not in ("first", "grey"):
            raise ValueError(f"channel must be 'first' or 'grey', got {self.channel!r}")
        if self.values not in ("binary", "trimap"):
            raise ValueError(f"values must be 'binary' or 'trimap', got {self.values!r}")
        if self.max_side < 1 or not 1 <= self.quality <= 100:
            raise ValueError(f"invalid max_side / quality: {self}")


def target_size(w: int, h: int, max_side: int = 256) -> tuple[int, int]:
    """The converted size of a ``w`` x ``h`` image: unchanged unless its shorter side
    exceeds ``max_side``, else scaled so that the shorter side is ``max_side``."""
    if min(w, h) <= max_side:
        return w, h
    s = max_side / min(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def mask_values(a: np.ndarray, rules: ConversionRules) -> np.ndarray:
    """Step 2 on a one-channel mask ``a`` (H, W) of any integer or bool type:
    uint8 (H, W) with 0 background, 255 foreground and, for a trimap, 128 unknown."""
    if a.size == 0:
        raise ValueError("empty mask")
    if rules.values == "trimap":
        out = np.full(a.shape, UNKNOWN_BAND, np.uint8)
        out[a > 200] = FOREGROUND
        out[a < 50] = BACKGROUND
        return out
    threshold = 127 if a.max() > 1 else 0
    return np.where(a > threshold, FOREGROUND, BACKGROUND).astype(np.uint8)


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from None
    return img


def convert_pair(image_path: Path, mask_path: Path,
                 rules: ConversionRules) -> tuple[Image.Image, Image.Image]:
    """Steps 1-4 for one pair: (RGB image, mode-L mask of the same size)."""
    with _open(image_path) as src:
        try:
            image = src.convert("RGB")   # keeps src.info (a JPEG comment, as Pillow does)
        except (ValueError, OSError) as err:
            raise ImageError(f"{image_path}: cannot convert {src.mode} to RGB ({err})") from None
    with _open(mask_path) as src:
        mask = src
        if len(src.getbands()) > 1:
            mask = src.convert("L") if rules.channel == "grey" else src.getchannel(0)
        try:
            values = mask_values(np.asarray(mask), rules)
        except ValueError as err:
            raise ImageError(f"{mask_path}: unusable mask ({err})") from None
    mask = Image.fromarray(values)
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.NEAREST)
    size = target_size(*image.size, rules.max_side)
    if size != image.size:
        image = image.resize(size, Image.BICUBIC)
        mask = mask.resize(size, Image.NEAREST)
    return image, mask


def save_pair(image: Image.Image, mask: Image.Image, out_dir: Path, stem: str,
              rules: ConversionRules) -> None:
    """Step 5: ``out_dir/images/<stem>.jpg`` and ``out_dir/masks/<stem>.png``, each
    written to a temporary file and renamed into place."""
    with atomic_path(out_dir / "images" / f"{stem}.jpg") as tmp:
        image.save(tmp, format="JPEG", quality=rules.quality)
    with atomic_path(out_dir / "masks" / f"{stem}.png") as tmp:
        mask.save(tmp, format="PNG")


def convert_pairs(pairs: Sequence[tuple[str, Path, Path]], out_dir: Path,
                  rules: ConversionRules, progress: bool = True,
                  desc: str = "convert") -> int:
    """Convert every ``(stem, image file, mask file)`` into ``out_dir``; returns the count.
    A file that cannot be read raises :class:`ImageError` naming it."""
    from tqdm.auto import tqdm
    out_dir = Path(out_dir)
    for stem, image_path, mask_path in tqdm(pairs, desc=desc, unit="pair",
                                            disable=not progress, file=sys.stderr):
        image, mask = convert_pair(Path(image_path), Path(mask_path), rules)
        save_pair(image, mask, out_dir, stem, rules)
    return len(pairs)
