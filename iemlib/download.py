"""Fetch the paper's datasets from their original hosts, check them, unpack them.

    iem data download flowers102      # Oxford VGG: images, segmentations, split file
    iem data download cub             # Caltech: images, segmentations; ReDO's split file
    iem data verify flowers102        # is the layout under the data root complete?

Every file is streamed to ``<name>.part`` beside its destination, its MD5 checked, then
renamed into place, so an interrupted download never leaves a file that looks complete;
a rerun skips files that are present with the right checksum and archives already
unpacked. Archives are unpacked with tarfile's ``data`` filter (no absolute paths, no
links outside the target). LSUN Car has no official masks: bring images and masks in the
simple layout (see data/README.md).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .data import data_root


class DownloadError(RuntimeError):
    """A download, checksum or unpacking problem; the message names the file."""


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
class Spec:
    folder: str                 # under the data root
    loader: str                 # the iemlib.data class that reads it
    files: tuple[Remote, ...]
    note: str = ""


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
}
ALIASES = {"flowers": "flowers102", "flowers-102": "flowers102", "cub200": "cub",
           "cub-200-2011": "cub", "cub_200_2011": "cub"}


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
             progress: bool = True) -> Path:
    """Fetch, check and unpack dataset ``name`` under ``root`` (default: the data root);
    then verify the layout. Returns the dataset folder."""
    key, spec = spec_for(name)
    root = Path(root or data_root())
    folder = root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
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
    downloads = root / ".downloads"
    if downloads.is_dir() and not any(downloads.iterdir()):
        shutil.rmtree(downloads, ignore_errors=True)
    verify(key, root)
    return folder


def verify(name: str, root: Path | None = None) -> str:
    """Check that dataset ``name`` is complete under ``root``: every expected file is
    there and the first test pair loads. Returns a one-line description."""
    from . import data
    from .images import ImageError
    key, spec = spec_for(name)
    folder = Path(root or data_root()) / spec.folder
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
