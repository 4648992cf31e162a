"""Datasets: where images and ground-truth masks come from.

Every dataset here is a sequence of ``(x, y)`` pairs after the paper's pre-processing:
``x`` float32 (3, S, S) in [-1, 1] and ``y`` uint8 (S, S) with 0 background, 1 foreground
and :data:`iemlib.images.UNKNOWN` for pixels excluded from the metrics. ``load()`` stacks
them into tensors ``(N, 3, S, S)`` and ``(N, 1, S, S)`` ready for :func:`iemlib.segment`.

Datasets live under one root: the environment variable ``IEM_DATA_DIR``, else ``data/``
beside the current directory. A set in the simple layout is
``<root>/<name>/images/*.jpg|png`` with ``<root>/<name>/masks/<same stem>.png``.

The paper's sets are read in their download layouts with ReDO's splits
(:class:`Flowers102`, :class:`CUB200`); LSUN Car has no public masks and is brought by
the user in the simple layout (:class:`LSUNCar`); :class:`DemoSet` is made on the fly
from photographs bundled in scikit-image. :func:`open_dataset` opens any of them by name
(``flowers102``, ``cub``, ``lsun_car``, ``demo``, or a folder name under the root) or by
path, and :func:`available_datasets` lists the names present.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .images import (IMAGE_SUFFIXES, ImageError, image_to_array, list_images, load_pair,
                     mask_to_array, read_image)


def data_root() -> Path:
    """The datasets root: ``$IEM_DATA_DIR``, else ``data/`` in the current directory, or
    beside it when the current directory is ``notebooks/`` (where a notebook's kernel runs),
    so that the notebooks find what ``iem data download`` put in the project's ``data/``."""
    env = os.environ.get("IEM_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd()
    return here.parent / "data" if here.name == "notebooks" else Path("data")


class PairDataset(Sequence):
    """Base class: subclasses set ``self.names``, ``self.size`` and ``self._paths``
    (a list of (image path, mask path or None))."""

    names: list[str]
    size: int | None
    _paths: list[tuple[Path, Path | None]]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("index a dataset with integers; use load(limit=...) for many")
        image, mask = self._paths[i]
        return self._load(image, mask)

    def _load(self, image: Path, mask: Path | None):
        return load_pair(image, mask, self.size)

    def load(self, limit: int | None = None, indices: Sequence[int] | None = None):
        """Stack pairs into ``x`` (N, 3, S, S) float32 and ``y`` (N, 1, S, S) uint8
        (None when the set has no masks). ``limit``: the first N; ``indices``: those."""
        idx = list(indices) if indices is not None else list(range(len(self)))
        if limit is not None:
            idx = idx[:limit]
        if not idx:
            raise ImageError(f"{self}: nothing to load")
        pairs = [self[i] for i in idx]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        if any(p[1] is None for p in pairs):
            return x, None
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        return x, y

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


class FolderSet(PairDataset):
    """A set in the simple layout: ``root/images/<stem>.<ext>`` and ``root/masks/<stem>.png``
    (0 background, 255 foreground, 128 unknown; 0/1 and colour masks as
    :func:`iemlib.images.read_mask` reads them). File-name order.

    ``require_masks=False`` accepts a folder of images alone (``root/images`` or ``root``
    itself) for segmentation without evaluation."""

    def __init__(self, root, size: int | None = 128, require_masks: bool = True):
        self.root = Path(root)
        self.size = size
        if not self.root.is_dir():
            raise ImageError(f"{self.root}: no such folder")
        img_dir = self.root / "images"
        if not img_dir.is_dir():
            if require_masks:
                raise ImageError(f"{self.root}: expected an images/ folder (and masks/) inside")
            img_dir = self.root
        images = list_images(img_dir)
        mask_dir = self.root / "masks"
        self._paths = []
        for p in images:
            mask = None
            if mask_dir.is_dir():
                candidates = [mask_dir / (p.stem + ext) for ext in dict.fromkeys((".png",) + IMAGE_SUFFIXES)]
                mask = next((c for c in candidates if c.is_file()), None)
            if mask is None and require_masks:
                raise ImageError(f"{p}: no mask for this image in {mask_dir}")
            self._paths.append((p, mask))
        self.names = [p.name for p, _ in self._paths]

    def __repr__(self) -> str:
        return f"FolderSet({str(self.root)!r}, {len(self)} images)"


# --------------------------------------------------------------------------------------
# The paper's benchmark sets, in their original download layouts.

_SPLITS = ("train", "val", "test")


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ImageError(f"unknown split {split!r}; choose one of {', '.join(_SPLITS)}")
    return split


def _only_test(split: str, what) -> None:
    # Sets without splits are one evaluation set; silently returning it for 'train'
    # would let a training run see its own test images.
    if split != "test":
        raise ImageError(f"{what}: no {split!r} split; this set is a single evaluation set "
                         "(split='test')")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ImageError(f"{path}: no such folder ({what})")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ImageError(f"{path}: no such file ({what})")
    return path


def _check_same_size(mask: np.ndarray, mask_path: Path, img, image_path: Path) -> None:
    if mask.shape != (img.size[1], img.size[0]):
        raise ImageError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
            f"{Path(image_path).name} is {img.size[0]}x{img.size[1]}")


class Flowers102(PairDataset):
    """Oxford Flowers-102 with ReDO's split, as used by IEM.

    ``root`` holds ``setid.mat``, ``jpg/image_%05d.jpg`` and ``segmim/segmim_%05d.jpg``
    (the official "102flowers.tgz", "102segmentations.tgz" and "setid.mat" downloads).
    ReDO swapped the keys of ``setid.mat`` so that the large split is used for training:
    ``test`` = 'trnid' (1,020 images), ``val`` = 'valid' (1,020), ``train`` = 'tstid' (6,149),
    in the order the file lists them.

    The ground truth is derived from the colour-coded ``segmim`` image at its original size:
    a pixel is background when R == 0 or G == 0 or B == 254 (ReDO's rule), foreground
    otherwise; the 0 / 1 mask is then resized and cropped like the image. There is no
    unknown label in this set.

    Items: ``x`` float32 (3, S, S) in [-1, 1], ``y`` uint8 (S, S) in {0, 1}.
    """

    #: ReDO's convention: split name -> key of setid.mat.
    SPLIT_KEYS = {"test": "trnid", "val": "valid", "train": "tstid"}

    def __init__(self, root, split: str = "test", size: int | None = 128):
        from scipy.io import loadmat

        self.root = _require_dir(Path(root), "Flowers-102 root")
        self.split = _check_split(split)
        self.size = size
        setid = _require_file(self.root / "setid.mat", "Flowers-102 split file")
        try:
            mat = loadmat(setid)
        except Exception as err:  # scipy raises several unrelated types on a bad file
            raise ImageError(f"{setid}: cannot read the split file ({err})") from None
        key = self.SPLIT_KEYS[split]
        if key not in mat:
            raise ImageError(f"{setid}: no {key!r} entry (needed for the {split} split)")
        self.ids = [int(i) for i in np.asarray(mat[key]).ravel()]
        if not self.ids:
            raise ImageError(f"{setid}: the {key!r} entry lists no image, so the {split} split "
                             "is empty")
        img_dir = _require_dir(self.root / "jpg", "Flowers-102 images")
        seg_dir = _require_dir(self.root / "segmim", "Flowers-102 segmentations")
        # Files are only opened on access: checking 8,189 files up front would be slow on
        # network drives, and a missing one still raises an ImageError naming it.
        self._paths = [(img_dir / f"image_{i:05d}.jpg", seg_dir / f"segmim_{i:05d}.jpg")
                       for i in self.ids]
        self.names = [p.name for p, _ in self._paths]

    @staticmethod
    def segmim_to_mask(segmim: np.ndarray) -> np.ndarray:
        """Colour-coded segmentation (H, W, 3) uint8 -> uint8 (H, W): 1 foreground, 0
        background, where background is R == 0 or G == 0 or B == 254 (ReDO's rule)."""
        bg = (segmim[..., 0] == 0) | (segmim[..., 1] == 0) | (segmim[..., 2] == 254)
        return (~bg).astype(np.uint8)

    def _load(self, image: Path, mask: Path | None):
        # Stored pixels, as the authors read them: the segmentations were drawn on those.
        img = read_image(image, orient=False)
        # The rule is applied before resizing, on the colours as stored in the JPEG.
        m = self.segmim_to_mask(np.asarray(read_image(mask, orient=False)))
        _check_same_size(m, mask, img, image)
        return image_to_array(img, self.size), mask_to_array(m, self.size)

    def __repr__(self) -> str:
        return f"Flowers102({str(self.root)!r}, split={self.split!r}, {len(self)} images)"


class CUB200(PairDataset):
    """Caltech-UCSD Birds-200-2011 with ReDO's split, as used by IEM.

    ``root`` holds ``images.txt`` (lines "<id> <relative path>.jpg"), ``images/<path>``
    and ``segmentations/<path with .png>`` (the official segmentations archive unpacks
    ``segmentations/`` beside ``CUB_200_2011/``; that sibling location is accepted too).
    The split comes from ReDO's ``train_val_test_split.txt`` (one line "<id> <split>" per
    image, in images.txt order; 0 = train (10,000), 1 = val (788), 2 = test (1,000)),
    looked for in ``root`` unless ``split_file`` gives its location.

    Masks are the averaged annotator masks, read as grey levels: foreground where the
    value is above 0.5 x 255 (ReDO's threshold), else background; no unknown label.

    Items: ``x`` float32 (3, S, S) in [-1, 1], ``y`` uint8 (S, S) in {0, 1}.
    """

    SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

    def __init__(self, root, split: str = "test", size: int | None = 128, split_file=None):
        self.root = _require_dir(Path(root), "CUB-200-2011 root")
        self.split = _check_split(split)
        self.size = size
        listing = self._read_pairs(_require_file(self.root / "images.txt", "CUB image list"))
        split_path = Path(split_file) if split_file is not None else \
            self.root / "train_val_test_split.txt"
        _require_file(split_path, "ReDO's CUB split; pass split_file= if it lives elsewhere")
        codes = dict(self._read_pairs(split_path))
        missing = [i for i, _ in listing if i not in codes]
        if missing:
            raise ImageError(f"{split_path}: no split for {len(missing)} image ids of "
                             f"images.txt (first: {missing[0]})")
        img_dir = _require_dir(self.root / "images", "CUB images")
        seg_dir = self.root / "segmentations"
        if not seg_dir.is_dir() and (self.root.parent / "segmentations").is_dir():
            seg_dir = self.root.parent / "segmentations"
        _require_dir(seg_dir, "CUB segmentations")
        want = str(self.SPLIT_CODES[split])
        self.ids = [int(i) for i, rel in listing if codes[i] == want]
        rels = [rel for i, rel in listing if codes[i] == want]
        if not rels:
            raise ImageError(f"{self.root / 'images.txt'}: no image in the {split} split "
                             f"(code {want} of {split_path.name}), so the split is empty")
        self._paths = [(img_dir / rel, (seg_dir / rel).with_suffix(".png")) for rel in rels]
        self.names = rels

    @staticmethod
    def _read_pairs(path: Path) -> list[tuple[str, str]]:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ImageError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                             f"offset {err.start}); the official file is plain ASCII") from None
        except OSError as err:
            raise ImageError(f"{path}: cannot read ({err.strerror or err})") from None
        pairs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ImageError(f"{path}: line {n} is not '<id> <value>': {line!r}")
            pairs.append((parts[0], parts[1].strip()))
        return pairs

    def _load(self, image: Path, mask: Path | None):
        # Stored pixels, as the authors read them: the segmentations were drawn on those.
        img = read_image(image, orient=False)
        # read_image refuses 16-bit and broken files; grey -> RGB -> L is lossless.
        grey = np.asarray(read_image(mask, orient=False).convert("L"))
        m = (grey > 0.5 * 255).astype(np.uint8)
        _check_same_size(m, mask, img, image)
        return image_to_array(img, self.size), mask_to_array(m, self.size)

    def __repr__(self) -> str:
        return f"CUB200({str(self.root)!r}, split={self.split!r}, {len(self)} images)"


class LSUNCar(FolderSet):
    """LSUN Car, bring your own: a folder in the simple layout (``root/images`` +
    ``root/masks``, 0 background, 255 foreground, 128 unknown).

    LSUN has no ground-truth masks. PerturbGAN and IEM took the first 10,000 car images,
    labelled them with a COCO-trained Mask R-CNN (the largest car instance; 9,121 images
    had a car) and evaluated on 1,040 random images of those. This project ships neither
    the images nor the masks: users make masks the same way (or bring their own) and
    place the pairs in this layout. Numbers are comparable to the paper's only as far as
    the masks and the chosen test images match theirs.

    Items: ``x`` float32 (3, S, S) in [-1, 1], ``y`` uint8 (S, S) with 0 / 1 / UNKNOWN.
    """

    def __init__(self, root, size: int | None = 128):
        super().__init__(root, size=size, require_masks=True)

    def __repr__(self) -> str:
        return f"LSUNCar({str(self.root)!r}, {len(self)} images)"


# --------------------------------------------------------------------------------------
# A synthetic set that needs no download.

#: Photographs shipped inside scikit-image's wheel (no network needed), used as textures.
DEMO_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
               "immunohistochemistry", "coins", "camera", "brick", "grass", "gravel",
               "moon", "page", "text")


@lru_cache(maxsize=None)
def _demo_photo(name: str) -> np.ndarray:
    """One bundled photograph as uint8 (H, W, 3)."""
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


@lru_cache(maxsize=1)
def _horse_silhouette() -> np.ndarray:
    """skimage's Weizmann horse, cropped to its bounding box: bool (h, w), True = horse."""
    import skimage.data

    horse = ~np.asarray(skimage.data.horse(), bool)  # the file stores the horse as False
    rows, cols = np.nonzero(horse)
    return horse[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


class DemoSet(PairDataset):
    """A small composite set with exact masks, made from photographs bundled in
    scikit-image, so that examples and tests run with no data at all.

    Sample ``i`` pastes a texture (a random crop of one photograph) over a random crop of a
    different photograph, through either the silhouette of skimage's horse (randomly
    scaled, mirrored and placed) or smooth random blobs (Gaussian-filtered noise plus a
    bump, thresholded). Everything is drawn from ``numpy.random.default_rng([seed, i])``,
    so a sample depends only on ``(seed, i, size)`` and can be made on demand.

    ``sources[i]`` is ``(foreground photo, background photo, "horse" | "blobs")``.

    Items: ``x`` float32 (3, S, S) in [-1, 1], ``y`` uint8 (S, S) in {0, 1}.
    """

    def __init__(self, n: int = 12, size: int = 128, seed: int = 0):
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        if size is None or size < 16:
            raise ValueError(f"size must be at least 16, got {size}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.names = [f"demo_{i:03d}" for i in range(self.n)]
        self.sources = [self._choices(self._rng(i)) for i in range(self.n)]
        self._paths = []  # nothing on disk

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i])

    @staticmethod
    def _choices(rng: np.random.Generator) -> tuple[str, str, str]:
        fg, bg = rng.choice(len(DEMO_PHOTOS), size=2, replace=False)
        shape = "horse" if rng.random() < 0.5 else "blobs"
        return DEMO_PHOTOS[fg], DEMO_PHOTOS[bg], shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("index a dataset with integers; use load(limit=...) for many")
        i = range(self.n)[i]  # negative indices and IndexError, like a list
        rng = self._rng(i)
        fg_name, bg_name, shape = self._choices(rng)  # same draws as self.sources[i]
        fg = self._crop(rng, _demo_photo(fg_name))
        bg = self._crop(rng, _demo_photo(bg_name))
        mask = self._horse(rng) if shape == "horse" else self._blobs(rng)
        composite = np.where(mask[..., None], fg, bg)
        x = image_to_array(Image.fromarray(composite), self.size)
        return x, mask.astype(np.uint8)

    def _crop(self, rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
        """A random square crop (40-100% of the shorter side) resized to (S, S, 3) uint8."""
        h, w = photo.shape[:2]
        side = int(rng.integers(int(0.4 * min(h, w)), min(h, w) + 1))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top:top + side, left:left + side])
        return np.asarray(crop.resize((self.size, self.size), Image.BILINEAR))

    def _horse(self, rng: np.random.Generator) -> np.ndarray:
        """The horse silhouette, 55-95% of the image wide, mirrored at random, placed
        wholly inside the image: bool (S, S)."""
        s = self.size
        horse = _horse_silhouette()
        if rng.random() < 0.5:
            horse = horse[:, ::-1]
        scale = rng.uniform(0.55, 0.95) * s / max(horse.shape)
        hh, hw = (max(1, round(d * scale)) for d in horse.shape)
        small = np.asarray(Image.fromarray(horse.astype(np.uint8) * 255)
                           .resize((hw, hh), Image.NEAREST)) > 127
        top = int(rng.integers(0, s - hh + 1))
        left = int(rng.integers(0, s - hw + 1))
        mask = np.zeros((s, s), bool)
        mask[top:top + hh, left:left + hw] = small
        return mask

    def _blobs(self, rng: np.random.Generator) -> np.ndarray:
        """Smooth random blobs covering 15-50% of the image: bool (S, S).

        A Gaussian bump at a random off-centre point is added to the filtered noise so
        that the blobs gather around an object-like centre instead of tiling the frame."""
        from scipy.ndimage import gaussian_filter

        s = self.size
        field = gaussian_filter(rng.standard_normal((s, s)), sigma=rng.uniform(s / 14, s / 8))
        field /= field.std() + 1e-12
        cy, cx = rng.uniform(0.3 * s, 0.7 * s, size=2)
        yy, xx = np.mgrid[:s, :s]
        field += 3.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.22 * s) ** 2))
        fraction = rng.uniform(0.15, 0.5)
        return field > np.quantile(field, 1.0 - fraction)

    def __repr__(self) -> str:
        return f"DemoSet({self.n} images, size={self.size}, seed={self.seed})"


# --------------------------------------------------------------------------------------
# Discovery by name under the data root.

#: Folder names under the data root for the sets in their original layouts.
KNOWN_FOLDERS = {"flowers102": ("flowers102",), "cub": ("CUB_200_2011", "cub"),
                 "lsun_car": ("lsun_car",)}


def _is_simple(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _is_flowers(folder: Path) -> bool:
    return (folder / "setid.mat").is_file()


def _is_cub(folder: Path) -> bool:
    return (folder / "images.txt").is_file()


def _open_folder(folder: Path, split: str, size: int | None, name: str | None = None):
    """Open a folder in whichever layout it has, or return None if it has none."""
    if _is_flowers(folder):
        return Flowers102(folder, split, size)
    if _is_cub(folder):
        return CUB200(folder, split, size)
    if _is_simple(folder):
        _only_test(split, folder)
        return LSUNCar(folder, size) if name == "lsun_car" else FolderSet(folder, size)
    return None


def _resolve(root: Path, name: str) -> Path | None:
    """The folder under ``root`` that the set ``name`` lives in, if any."""
    for folder_name in KNOWN_FOLDERS.get(name, (name,)):
        folder = root / folder_name
        if folder.is_dir() and (_is_flowers(folder) or _is_cub(folder) or _is_simple(folder)):
            return folder
    return None


def survey_datasets(root=None) -> tuple[list[str], dict[str, str]]:
    """What lies under ``root`` (default :func:`data_root`): the names of the sets that open
    and whose first test pair loads (sorted, ``"demo"`` included), and, for folders laid
    out as a set that do not, the reason, by name."""
    root = Path(root) if root is not None else data_root()
    names, problems = {"demo"}, {}
    try:
        folders = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:  # an unreadable root holds nothing usable
        folders = []
    aliases = {f: name for name, known in KNOWN_FOLDERS.items() for f in known}
    for folder in folders:
        name = aliases.get(folder.name, folder.name)
        if folder.is_dir() and name not in names and _resolve(root, name):
            try:
                _open_folder(_resolve(root, name), "test", 128, name)[0]
            except (OSError, ValueError) as err:  # ImageError is a ValueError
                problems.setdefault(name, str(err))
                continue
            names.add(name)
            problems.pop(name, None)
    return sorted(names), problems


def available_datasets(root=None) -> list[str]:
    """Names :func:`open_dataset` accepts for the sets present under ``root`` (default
    :func:`data_root`), sorted, always including ``"demo"``.

    ``flowers102`` needs ``<root>/flowers102/setid.mat``; ``cub`` needs
    ``<root>/CUB_200_2011/images.txt`` (or ``<root>/cub/``); every other folder with
    ``images/`` and ``masks/`` inside is listed by its folder name (``lsun_car`` included).
    A set is listed only if it opens and its first test pair loads (a half-unpacked
    download is left out), so every listed name can be passed to :func:`open_dataset`;
    :func:`survey_datasets` also says why the others do not.
    """
    return survey_datasets(root)[0]


def open_dataset(name_or_path, split: str = "test", size: int | None = 128) -> PairDataset:
    """Open a dataset by name (see :func:`available_datasets`) or by path.

    ``"demo"`` is :class:`DemoSet` (12 images); a name is looked up under
    :func:`data_root`; anything else is taken as a path to a folder in the simple layout or
    in the Flowers-102 / CUB layout. ``split`` selects ReDO's train / val / test split of
    Flowers-102 and CUB; sets without splits only have ``"test"``. Unknown names raise an
    :class:`ImageError` listing the sets that are available.
    """
    name = str(name_or_path)
    _check_split(split)
    if name == "demo":
        _only_test(split, "demo")
        return DemoSet(size=size if size is not None else 128)
    root = data_root()
    # A bare name is looked up under the root; anything with a folder part is a path.
    folder = _resolve(root, name) if Path(name).name == name else None
    if folder is not None:
        return _open_folder(folder, split, size, name)
    path = Path(name_or_path)
    if path.is_dir():
        ds = _open_folder(path, split, size, path.name)
        if ds is not None:
            return ds
        raise ImageError(f"{path}: not a dataset folder (expected images/ and masks/ inside, "
                         "or the Flowers-102 / CUB-200-2011 layout)")
    raise ImageError(f"{name}: no such dataset under {root} and no such folder; "
                     f"available: {', '.join(available_datasets(root))}")
