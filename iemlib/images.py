"""Reading images and masks from disk, and the paper's pre-processing.

Every reading error becomes an :class:`ImageError` whose message names the file and the
problem, so that command-line tools can print one line instead of a traceback.

Pre-processing follows the authors' code exactly (torchvision ``Resize(128, NEAREST)`` then
``CenterCrop(128)`` then ``ToTensor``), re-implemented with PIL and NumPy:

* the shorter side is resized to ``size`` with NEAREST interpolation, the longer side to
  ``round(size * long / short)`` (Python's round, half to even);
* the centre crop starts at ``(side - size) // 2``;
* images are scaled to [-1, 1]; masks keep 0 / 1 / :data:`UNKNOWN`.

The two rounding rules were read off the authors' recorded inputs
(``authors_iem_vectors.npz``), which this module reproduces bit for bit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Ground-truth value for pixels that are excluded from every metric.
UNKNOWN = 255
#: Images whose shorter side is below this many pixels are refused.
MIN_SIDE = 16
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """A file that cannot be used as an image or mask; the message names it."""


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated files fail here, not later inside numpy
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: unreadable or truncated image ({err})") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than {MIN_SIDE} pixels on a side")
    return img


def _check_8bit(img: Image.Image, path) -> None:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or img.mode.startswith("I;16"):
        depth = "16-bit" if "16" in img.mode else ("32-bit integer" if img.mode == "I" else "floating-point")
        raise ImageError(f"{path}: {depth} image (mode {img.mode}); only 8-bit images are "
                         "supported, convert it to 8-bit first")


def read_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as 8-bit RGB. Grayscale, palette and RGBA are converted
    (RGBA is composited on black, which is what dropping a zero alpha shows);
    16-bit, float, unreadable, truncated or tiny images raise :class:`ImageError`."""
    img = _open(path)
    _check_8bit(img, path)
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageError(f"{path}: cannot convert {img.mode} image to RGB ({err})") from None


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth mask as uint8 (H, W): 0 background, 1 foreground, UNKNOWN.

    The file stores 0 = background, 255 = foreground, 128 = unknown (any value in
    (64, 192) counts as unknown, to survive lossy re-encoding); colour masks are
    reduced to their first channel."""
    img = _open(path)
    _check_8bit(img, path)
    # colour masks: the first channel (ReDO's convention), not a brightness mix in which a
    # pure red foreground would land in the unknown band
    arr = np.asarray(img.convert("RGB"))[..., 0] if img.mode in ("RGB", "RGBA", "P") else np.asarray(img.convert("L"))
    out = np.zeros(arr.shape, np.uint8)
    out[arr >= 192] = 1
    out[(arr > 64) & (arr < 192)] = UNKNOWN
    return out


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """Shape after resizing the shorter side to ``size`` (torchvision's rule)."""
    if w <= h:
        return round(size * h / w), size
    return size, round(size * w / h)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (NEAREST, as the authors do)."""
    w, h = img.size
    nh, nw = resized_shape(h, w, size)
    if (nh, nw) == (h, w):
        return img
    return img.resize((nw, nh), Image.NEAREST)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop the first two axes of ``arr`` to ``size`` x ``size``."""
    h, w = arr.shape[:2]
    top = (h - size) // 2
    left = (w - size) // 2
    return arr[top:top + size, left:left + size]


def image_to_array(img: Image.Image, size: int | None = 128, crop: bool = True) -> np.ndarray:
    """PIL RGB image -> float32 array (3, H, W) in [-1, 1] after the paper's pre-processing.

    ``size=None`` keeps the original resolution; ``crop=False`` keeps the whole image
    (shorter side ``size``), which is what segmenting a user's photograph wants."""
    if size is not None:
        img = resize_short_side(img, size)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if size is not None and crop:
        arr = center_crop(arr, size)
    return np.ascontiguousarray(arr.transpose(2, 0, 1) * 2.0 - 1.0)


def mask_to_array(mask: np.ndarray, size: int | None = 128, crop: bool = True) -> np.ndarray:
    """uint8 mask (H, W) from :func:`read_mask` -> the same pre-processing as the image."""
    if size is not None:
        h, w = mask.shape
        nh, nw = resized_shape(h, w, size)
        if (nh, nw) != (h, w):
            mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
        if crop:
            mask = center_crop(mask, size)
    return np.ascontiguousarray(mask)


def load_pair(image_path, mask_path=None, size: int | None = 128, crop: bool = True):
    """Read and pre-process one image and, optionally, its mask.

    Returns ``(x, y)``: x float32 (3, S, S) in [-1, 1]; y uint8 (S, S) with 0 / 1 /
    UNKNOWN, or None. Raises :class:`ImageError` on a size mismatch."""
    img = read_image(image_path)
    x = image_to_array(img, size, crop)
    if mask_path is None:
        return x, None
    m = read_mask(mask_path)
    if m.shape != (img.size[1], img.size[0]):
        raise ImageError(
            f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]} but image {Path(image_path).name} "
            f"is {img.size[0]}x{img.size[1]}")
    return x, mask_to_array(m, size, crop)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ImageError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files
