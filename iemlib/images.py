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

Images and masks are read as they are shown: a camera's EXIF orientation tag is applied
(``ImageOps.exif_transpose``), so that the mask of a phone photograph matches what a
viewer displays. The authors' code ignores the tag; none of the shared images carries
one, and the loaders of the paper's datasets (:mod:`iemlib.data`) pass ``orient=False``
to keep the stored pixels their ground truth was drawn on.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Ground-truth value for pixels that are excluded from every metric.
UNKNOWN = 255
#: Images whose shorter side is below this many pixels are refused.
MIN_SIDE = 16
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: EXIF tag of the orientation in which a camera's stored pixels are to be shown.
ORIENTATION = 0x0112
#: Orientations (EXIF values) that show the stored image turned by 90 degrees.
_QUARTER_TURNS = (5, 6, 7, 8)


class ImageError(ValueError):
    """A file that cannot be used as an image or mask; the message names it."""


class LargeImageWarning(UserWarning):
    """An image large enough that Pillow warns about it (but legal): one line naming it."""


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.0f} megapixels" if n >= 1e7 else f"{n / 1e6:.2g} megapixels"


def _open_lazy(path: Path) -> Image.Image:
    """``Image.open`` with Pillow's decompression-bomb checks turned into our own messages:
    an image over twice ``Image.MAX_IMAGE_PIXELS`` is an :class:`ImageError` (decoding it
    would take gigabytes, and a tiny file can claim that size); one over the limit itself
    gives a :class:`LargeImageWarning` instead of Pillow's multi-line warning."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        counts = [int(n) for n in re.findall(r"\d+", str(err))]
        size = _megapixels(counts[0]) if counts else "too many pixels"
        limit = _megapixels(2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else "the limit"
        raise ImageError(f"{path}: image of {size}, over the {limit} that are decoded (Pillow's "
                         "decompression-bomb limit); reduce it first") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: unreadable image ({err})") from None
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            width, height = img.size
            warnings.warn(LargeImageWarning(
                f"{path}: large image, {width}x{height} ({_megapixels(width * height)}); "
                f"decoding it takes about {width * height * len(img.getbands()) / 1e9:.1f} GB"),
                stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return img


def _orientation(img: Image.Image, path) -> int:
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception as err:  # a malformed EXIF block raises several unrelated types
        raise ImageError(f"{path}: cannot read its EXIF orientation ({err})") from None


def _open(path: str | os.PathLike, orient: bool = True) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    img = _open_lazy(path)
    try:
        img.load()  # decode now: truncated files fail here, not later inside numpy
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: unreadable or truncated image ({err})") from None
    if orient and _orientation(img, path) in range(2, 9):
        img = ImageOps.exif_transpose(img)
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than {MIN_SIDE} pixels on a side")
    return img


def displayed_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image as shown, its EXIF orientation applied, without
    decoding the pixels where the format allows it. Raises :class:`ImageError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    with _open_lazy(path) as img:
        w, h = img.size
        return (h, w) if _orientation(img, path) in _QUARTER_TURNS else (w, h)


def _check_8bit(img: Image.Image, path) -> None:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") or img.mode.startswith("I;16"):
        depth = "16-bit" if "16" in img.mode else ("32-bit integer" if img.mode == "I" else "floating-point")
        raise ImageError(f"{path}: {depth} image (mode {img.mode}); only 8-bit images are "
                         "supported, convert it to 8-bit first")


def read_image(path: str | os.PathLike, orient: bool = True) -> Image.Image:
    """Open an image as 8-bit RGB, as it is shown: its EXIF orientation applied
    (``orient=False`` keeps the stored pixels). Grayscale, palette and RGBA are converted
    (RGBA is composited on black, which is what dropping a zero alpha shows); a GIF gives
    its first frame; 16-bit, float, unreadable, truncated or tiny images raise
    :class:`ImageError`."""
    img = _open(path, orient)
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


#: Channels of a colour mask pixel further apart than this make it a colour, not a grey.
SATURATED = 64


def _mask_values(img: Image.Image) -> np.ndarray:
    """One uint8 value per pixel (H, W): the grey level, or for colour masks the brightest
    channel, with saturated colours (whatever their brightness) lifted to 255."""
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"))
    rgb = np.asarray(img.convert("RGB"))
    top = rgb.max(axis=2)
    saturated = (top.astype(np.int16) - rgb.min(axis=2) > SATURATED) & (top > 64)
    return np.where(saturated, np.uint8(255), top)


def read_mask(path: str | os.PathLike, orient: bool = True) -> np.ndarray:
    """Read a ground-truth mask as uint8 (H, W): 0 background, 1 foreground, UNKNOWN.

    The rule (data/README.md gives the reasons):

    * a mask whose values are all 0 or 1 is a 0/1 mask: 1 is foreground;
    * otherwise 0 = background, 255 = foreground, 128 = unknown, read with margins to
      survive lossy re-encoding: >= 192 foreground, 65..191 unknown, <= 64 background;
    * a colour mask (RGB, RGBA, palette) counts by its brightest channel, so a grey mask
      saved in colour reads the same, and a saturated colour (channels more than
      :data:`SATURATED` apart, e.g. pure green, or a dark red) is foreground;
    * a mask holding only 0, 1 and 255 (both 1 and 255) is ambiguous (a 0/1 mask with
      255 for "ignore", or a 0/255 mask with stray ones) and raises :class:`ImageError`.

    The EXIF orientation is applied, as for images (``orient=False`` keeps it stored)."""
    img = _open(path, orient)
    _check_8bit(img, path)
    arr = _mask_values(img)
    present = np.unique(arr)
    if present.max(initial=0) <= 1:
        return arr.copy()
    if set(present.tolist()) <= {0, 1, 255} and 1 in present:
        raise ImageError(f"{path}: mask holds only the values 0, 1 and 255, which is ambiguous "
                         "(0/1 with 255 for 'ignore', or 0/255?); save it as 0 background, "
                         "255 foreground, 128 unknown")
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


def load_pair(image_path, mask_path=None, size: int | None = 128, crop: bool = True,
              orient: bool = True):
    """Read and pre-process one image and, optionally, its mask, both as shown (EXIF
    orientation applied; ``orient=False`` keeps the stored pixels of both).

    Returns ``(x, y)``: x float32 (3, S, S) in [-1, 1]; y uint8 (S, S) with 0 / 1 /
    UNKNOWN, or None. Raises :class:`ImageError` on a size mismatch."""
    img = read_image(image_path, orient)
    x = image_to_array(img, size, crop)
    if mask_path is None:
        return x, None
    m = read_mask(mask_path, orient)
    if m.shape != (img.size[1], img.size[0]):
        hint = ""
        if orient and m.shape == (img.size[0], img.size[1]):
            # the mask was drawn on the stored pixels of an image that is shown turned
            hint = (" as shown (its EXIF orientation turns it); the mask has the stored "
                    "orientation: turn the mask, or remove the image's orientation tag")
        raise ImageError(
            f"{mask_path}: mask is {m.shape[1]}x{m.shape[0]} but image {Path(image_path).name} "
            f"is {img.size[0]}x{img.size[1]}{hint}")
    return x, mask_to_array(m, size, crop)


@dataclass
class FolderScan:
    """What a folder holds: ``images`` to read (file-name order), ``bad`` entries named
    like images that cannot be read as files (dangling links, folders, devices), and
    ``ignored`` entries that are not images (other suffixes, subfolders); both lists of
    (path, reason). Hidden entries (names starting with a dot) are left out entirely."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def scan_images(folder: str | os.PathLike) -> FolderScan:
    """Sort every entry directly inside ``folder`` into images, bad entries and ignored
    ones (see :class:`FolderScan`); subfolders are not searched."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise ImageError(f"{folder}: cannot list the folder ({err.strerror or err})") from None
    scan = FolderScan(folder)
    for p in entries:
        if p.name.startswith("."):
            continue
        named_image = p.suffix.lower() in IMAGE_SUFFIXES
        if p.is_symlink() and not p.exists():
            reason = "a dangling symbolic link (its target does not exist)"
        elif p.is_dir():
            reason = ("a folder, not an image file" if named_image else
                      "a subfolder, not searched (only the folder's own files are read)")
        elif not p.is_file():
            reason = "not a regular file"
        elif named_image:
            scan.images.append(p)
            continue
        else:
            reason = f"not an image file name ({', '.join(IMAGE_SUFFIXES)})"
        (scan.bad if named_image else scan.ignored).append((p, reason))
    return scan


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in file-name order. An entry named like an
    image that is not a readable file (a dangling link, a folder) raises
    :class:`ImageError` rather than silently shrinking the set."""
    scan = scan_images(folder)
    if scan.bad:
        path, reason = scan.bad[0]
        raise ImageError(f"{path}: {reason}")
    if not scan.images:
        raise ImageError(f"{scan.folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return scan.images
