"""Fetch datasets, check them, unpack or convert them: one registry (:data:`SPECS`).

    iem data download flowers102      # Oxford VGG: images, segmentations, split file
    iem data download cub             # Caltech: images, segmentations; ReDO's split file
    iem data download weizmann_horse  # also grabcut, coco_mval: listed files, converted
    iem data download grabcut --source DIR_OR_URL   # the same files from a mirror
    iem data verify flowers102        # is the layout under the data root complete?

Every file is streamed to ``<name>.part`` beside its destination, its checksum checked,
then renamed into place, so an interrupted download never leaves a file that looks
complete; a rerun skips files that are present with the right checksum and archives already
unpacked. Archives are unpacked with tarfile's ``data`` filter (no absolute paths, no
links outside the target). LSUN Car has no official masks: bring images and masks in the
simple layout (see data/README.md).

Weizmann Horse, GrabCut and COCO MVal are built from the files of the packaged source list
(``sources/dataset_sources.json``: a public repository at a fixed commit, every file with
its size and SHA-256), fetched by :mod:`iemlib.sourcefiles` into ``<root>/.downloads/<name>``
and converted by :mod:`iemlib.convert` into a temporary folder that is renamed to
``<root>/<name>`` only when every pair is written: the set appears complete or not at all.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import sys
import tarfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .convert import ConversionRules, convert_pairs
from .data import data_root
from .images import ImageError
from .sourcefiles import (DownloadError, FetchConfig, Listed, SourceList, fetch_files,
                          load_source_lists, origin_from)

#: The packaged source list of the sets built from listed files.
SOURCE_LIST = Path(__file__).with_name("sources") / "dataset_sources.json"


@dataclass(frozen=True)
class Remote:
    """One file to fetch. ``md5`` is the published checksum (None: none is published).

    unpack_to: for archives, the folder (relative to the dataset folder) to unpack into;
    creates: the path (relative to the dataset folder) whose presence means "unpacked"."""

    url: str
    filename: str
    md5: str | None
    unpack_to: str | None = None
    creates: str | None = None


@dataclass(frozen=True)
class Listing:
    """A set built from the files of the source list entry of the same name: which
    repository folders hold the images and the masks, and how they are converted."""

    image_dirs: tuple[str, ...]
    mask_dirs: tuple[str, ...]
    rules: ConversionRules


@dataclass(frozen=True)
class Spec:
    folder: str                 # under the data root
    loader: str                 # the iemlib.data class that reads it
    files: tuple[Remote, ...] = ()
    note: str = ""
    listing: Listing | None = None   # set: built from listed files, not from ``files``


SPECS: dict[str, Spec] = {
    "flowers102": Spec(
        folder="flowers102",
        loader="Flowers102",
        files=(
            Remote("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
                   "102flowers.tgz", "52808999861908f626f3c1f4e79d11fa", ".", "jpg"),
            Remote("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102segmentations.tgz",
                   "102segmentations.tgz", "51375996b6c4f367a4b9f4492d7ecef5", ".", "segmim"),
            Remote("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/setid.mat",
                   "setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c"),
        ),
        note="Nilsback & Zisserman, Oxford VGG; about 520 MB",
    ),
    "cub": Spec(
        folder="CUB_200_2011",
        loader="CUB200",
        files=(
            # the archive holds a CUB_200_2011/ folder: unpack it one level up
            Remote("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                   "CUB_200_2011.tgz", "97eceeb196236b17998738112f37df78", "..", "images.txt"),
            Remote("https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz?download=1",
                   "segmentations.tgz", "4d47ba1228eae64f2fa547c47bc65255", ".", "segmentations"),
            Remote("https://raw.githubusercontent.com/mickaelChen/ReDO/master/datasplits/cub/"
                   "train_val_test_split.txt", "train_val_test_split.txt", None),
        ),
        note="Wah et al., Caltech; about 1.2 GB; ReDO's train/val/test split",
    ),
    # The shared evaluation sets, from the repositories and commits of SOURCE_LIST;
    # the rules are those the shared copies were made with (data/README.md).
    "weizmann_horse": Spec(
        folder="weizmann_horse",
        loader="FolderSet",
        note="Borenstein & Ullman; 327 pairs converted from a GitHub copy, about 119 MB",
        listing=Listing(
            image_dirs=("weizmann_horse_db/horse_train", "weizmann_horse_db/horse_test"),
            mask_dirs=("weizmann_horse_db/mask_train", "weizmann_horse_db/mask_test"),
            rules=ConversionRules(channel="first", values="binary")),
    ),
    "grabcut": Spec(
        folder="grabcut",
        loader="FolderSet",
        note="Rother et al., MSRC; 50 pairs with the unknown band, about 25 MB",
        listing=Listing(
            image_dirs=("datasets/GrabCut/data_GT",),
            mask_dirs=("datasets/GrabCut/boundary_GT",),
            rules=ConversionRules(channel="grey", values="trimap")),
    ),
    "coco_mval": Spec(
        folder="coco_mval",
        loader="FolderSet",
        note="COCO MVal; 800 object masks on COCO photographs, about 134 MB",
        listing=Listing(
            image_dirs=("datasets/COCO_MVal/img",),
            mask_dirs=("datasets/COCO_MVal/gt",),
            rules=ConversionRules(channel="first", values="binary")),
    ),
}
ALIASES = {"flowers": "flowers102", "flowers-102": "flowers102", "cub200": "cub",
           "cub-200-2011": "cub", "cub_200_2011": "cub", "weizmann": "weizmann_horse",
           "horse": "weizmann_horse", "weizmann-horse": "weizmann_horse",
           "coco-mval": "coco_mval", "cocomval": "coco_mval", "grab_cut": "grabcut"}


def spec_for(name: str) -> tuple[str, Spec]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in SPECS:
        raise DownloadError(f"{name}: no download known; choose one of {', '.join(SPECS)} "
                            "(LSUN Car: bring images/ and masks/ yourself, see data/README.md)")
    return key, SPECS[key]


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch(remote: Remote, dest: Path, progress: bool = True) -> Path:
    """Download ``remote`` to ``dest`` unless it is already there with the right MD5."""
    if dest.is_file() and (remote.md5 is None or md5sum(dest) == remote.md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm
            with tqdm(total=total, unit="B", unit_scale=True, desc=remote.filename,
                      disable=not progress, file=sys.stderr) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{remote.url}: download failed ({err})") from None
    if remote.md5 is not None:
        got = md5sum(part)
        if got != remote.md5:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{remote.filename}: checksum mismatch (MD5 {got}, expected "
                                f"{remote.md5}); the file was removed, try again")
    os.replace(part, dest)
    return dest


def unpack(archive: Path, target: Path) -> None:
    """Unpack a tar archive into ``target`` safely (tarfile's data filter)."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                for member in tar.getmembers():
                    dest = (target / member.name).resolve()
                    if not str(dest).startswith(str(target.resolve())) or member.issym() or member.islnk():
                        raise DownloadError(f"{archive}: unsafe member {member.name}")
                tar.extractall(target)
    except (tarfile.TarError, OSError) as err:
        raise DownloadError(f"{archive}: cannot unpack ({err})") from None


def download(name: str, root: Path | None = None, keep_archives: bool = False,
             progress: bool = True, source: str | None = None,
             config: FetchConfig | None = None) -> Path:
    """Fetch, check and unpack (or convert) dataset ``name`` under ``root`` (default: the
    data root); then verify the layout. Returns the dataset folder.

    ``source``: for the sets built from listed files, a mirror folder laid out like the
    repository or another base URL to take the same files from; ``keep_archives`` then
    keeps the fetched source files in ``<root>/.downloads/<name>``."""
    key, spec = spec_for(name)
    root = Path(root or data_root())
    if spec.listing is not None:
        folder = _download_listed(key, spec, root, source, keep_archives, progress,
                                  config or FetchConfig())
    elif source is not None:
        raise DownloadError(f"{key}: a source can be named only for the sets built from "
                            f"listed files ({', '.join(_listed_names())})")
    else:
        folder = _download_archives(spec, root, keep_archives, progress)
    verify(key, root)
    return folder


def _download_archives(spec: Spec, root: Path, keep_archives: bool, progress: bool) -> Path:
    folder = root / spec.folder
    existed = folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for remote in spec.files:
            if remote.unpack_to is not None:
                target = (folder / remote.unpack_to).resolve()
                if remote.creates and (folder / remote.creates).exists():
                    continue  # unpacked on an earlier run
                archive = fetch(remote, root / ".downloads" / remote.filename, progress)
                unpack(archive, target)
                if not keep_archives:
                    archive.unlink(missing_ok=True)
            else:
                fetch(remote, folder / remote.filename, progress)
    except BaseException:
        # a failure must not leave an empty set folder that `data list` would show;
        # folders holding anything (a finished part, to resume from) stay
        if not existed:
            _remove_empty_tree(folder)
        raise
    finally:
        downloads = root / ".downloads"
        if downloads.is_dir() and not any(downloads.iterdir()):
            shutil.rmtree(downloads, ignore_errors=True)
    return folder


def _remove_empty_tree(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders if no file is anywhere inside."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------- sets built from listed files
def _listed_names() -> list[str]:
    return [k for k, v in SPECS.items() if v.listing is not None]


def source_list(key: str) -> SourceList:
    """The entry ``key`` of the packaged source list (:data:`SOURCE_LIST`)."""
    lists = load_source_lists(SOURCE_LIST)
    if key not in lists:
        raise DownloadError(f"{SOURCE_LIST}: no entry for {key}")
    return lists[key]


def listed_pairs(key: str, listing: Listing,
                 sources: SourceList) -> list[tuple[str, Listed, Listed]]:
    """``(stem, image file, mask file)`` for every pair of the list, by stem; an image
    without a mask (or the reverse) or two files of one stem is an error."""
    def by_stem(dirs: tuple[str, ...]) -> dict[str, Listed]:
        found: dict[str, Listed] = {}
        for f in sources.files:
            if posixpath.dirname(f.path) in dirs:
                stem = PurePosixPath(f.path).stem
                if stem in found:
                    raise DownloadError(f"{f.path}: same name as {found[stem].path} in the "
                                        f"{key} source list")
                found[stem] = f
        return found

    images, masks = by_stem(listing.image_dirs), by_stem(listing.mask_dirs)
    for stem in sorted(set(images) ^ set(masks)):
        lone = images.get(stem) or masks.get(stem)
        raise DownloadError(f"{lone.path}: no {'mask' if stem in images else 'image'} "
                            f"of the same name in the {key} source list")
    if not images:
        raise DownloadError(f"{SOURCE_LIST}: no image files listed for {key}")
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _prune(top: Path, recursive: bool = True) -> None:
    """Remove the empty folders under ``top`` (bottom-up; only ``top`` itself unless
    ``recursive``), ``top`` included. Tidying never hides the error being reported."""
    try:
        if not top.is_dir():
            return
        below = [p for p in top.rglob("*") if p.is_dir()] if recursive else []
        for d in sorted(below, key=lambda p: -len(p.parts)) + [top]:
            if not any(d.iterdir()):
                d.rmdir()
    except OSError:
        pass


def _download_listed(key: str, spec: Spec, root: Path, source: str | None, keep: bool,
                     progress: bool, config: FetchConfig) -> Path:
    folder = root / spec.folder
    if folder.exists():
        return folder  # appears only once complete; verify() says if it is not
    sources = source_list(key)
    pairs = listed_pairs(key, spec.listing, sources)
    origin = origin_from(source, sources.repo, sources.commit)
    created_root = not root.exists()
    cache = root / ".downloads" / key
    work = cache / f".converting-{uuid.uuid4().hex[:12]}"
    done = False
    try:
        local = fetch_files(sources.files, origin, cache, config, progress,
                            f"{key} sources")
        for stale in cache.glob(".converting-*"):   # left by a run that was killed
            shutil.rmtree(stale, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            convert_pairs([(stem, local[i.path], local[m.path]) for stem, i, m in pairs],
                          work, spec.listing.rules, progress, f"{key} convert")
        except ImageError as err:
            raise DownloadError(f"{err} (while converting {key}; {folder} was not "
                                "written)") from None
        work.rename(folder)
        done = True
    except OSError as err:      # a root that cannot be written, a full disk
        raise DownloadError(f"{err.filename or root}: {err.strerror or err}; {folder} was "
                            "not written") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if done and not keep:
            shutil.rmtree(cache, ignore_errors=True)
        _prune(cache)   # after a failure the files fetched so far stay for a rerun
        for d in (cache.parent, root) if created_root else (cache.parent,):
            _prune(d, recursive=False)
    return folder


def verify(name: str, root: Path | None = None) -> str:
    """Check that dataset ``name`` is complete under ``root``: every expected file is
    there and the first test pair loads. Returns a one-line description."""
    from . import data
    key, spec = spec_for(name)
    folder = Path(root or data_root()) / spec.folder
    if spec.listing is not None:
        return _verify_listed(key, spec, folder)
    missing = [r.creates or r.filename for r in spec.files
               if not (folder / (r.creates or r.filename)).exists()]
    if missing:
        raise DownloadError(f"{folder}: incomplete, missing {', '.join(missing)}")
    try:
        ds = getattr(data, spec.loader)(folder, split="test")
        ds[0]
    except (ImageError, OSError, ValueError, KeyError, IndexError) as err:
        raise DownloadError(f"{folder}: layout check failed ({err})") from None
    return f"{key}: {len(ds)} test images in {folder}"


def _verify_listed(key: str, spec: Spec, folder: Path) -> str:
    from .data import FolderSet
    pairs = listed_pairs(key, spec.listing, source_list(key))
    if not folder.is_dir():
        raise DownloadError(f"{folder}: incomplete, missing the whole set; "
                            f"run: iem data download {key}")
    missing = [stem for stem, _, _ in pairs
               if not ((folder / "images" / f"{stem}.jpg").is_file()
                       and (folder / "masks" / f"{stem}.png").is_file())]
    if missing:
        raise DownloadError(f"{folder}: incomplete, missing {len(missing)} of {len(pairs)} "
                            f"image/mask pairs (first: {missing[0]}); move the folder away "
                            f"and run: iem data download {key}")
    try:
        ds = FolderSet(folder)
        ds[0]
    except (ImageError, OSError, ValueError) as err:
        raise DownloadError(f"{folder}: layout check failed ({err})") from None
    return f"{key}: {len(ds)} image/mask pairs in {folder}"
