"""Source files listed with their size and SHA-256: read the list, fetch them, check them.

A source list (``iemlib/sources/dataset_sources.json``) names, for each set, a public
repository, a commit and every file with its size and SHA-256. The files are fetched from
GitHub's raw-file host at that commit, or from an origin the user names instead:

    origin_from(None, repo, commit)            # raw.githubusercontent.com/<repo>/<commit>/<path>
    origin_from("/mnt/mirror", repo, commit)   # a folder laid out like the repository
    origin_from("https://host/x", repo, commit)  # another base URL: https://host/x/<path>
    local = fetch_files(files, origin, cache)  # {path: local file}, every one checked

A file fetched from a URL is streamed to ``<cache>/<path>.part``, its size and SHA-256
checked, then renamed into place, so an interrupted run never leaves a file that looks
complete, and a rerun skips every file already there and intact. Files in a mirror folder
are checked where they are, not copied. Every failure is a :class:`DownloadError` with a
one-line message that names the file.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

RAW_HOST = "https://raw.githubusercontent.com"
URL_SCHEMES = ("http", "https", "file")
_CHUNK = 1 << 16
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


class DownloadError(RuntimeError):
    """A download, checksum, unpacking or conversion problem; the message names the file."""


@dataclass(frozen=True)
class Listed:
    """One source file: its path inside the repository ('/'-separated), size, SHA-256."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SourceList:
    """The files one set is built from: ``repo`` ("owner/name") at ``commit``."""

    name: str
    repo: str
    commit: str
    files: tuple[Listed, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass(frozen=True)
class FetchConfig:
    """How files are fetched from a URL: parallel transfers, the timeout of one
    connection or read (seconds), how often a transient failure (timeout, lost
    connection, HTTP 5xx / 429) is retried before the run stops, and the wait before the
    first retry (seconds, doubled for each further one)."""

    workers: int = 4
    timeout: float = 60.0
    retries: int = 2
    backoff: float = 2.0

    def __post_init__(self):
        if self.workers < 1 or self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError(f"invalid fetch settings: {self}")


def _safe_path(path: str) -> bool:
    # A listed path is joined to a cache folder or a mirror folder: it must stay inside.
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path


def load_source_lists(path: Path) -> dict[str, SourceList]:
    """Read a source list file: ``{name: {"repo", "commit", "files": [{"path", "bytes",
    "sha256"}, ...]}, ...}`` (other top-level keys, such as ``about``, are ignored)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DownloadError(f"{path}: cannot read the source list ({err})") from None
    lists = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or "files" not in entry:
            continue
        try:
            files = tuple(Listed(str(f["path"]), int(f["bytes"]), str(f["sha256"]).lower())
                          for f in entry["files"])
            lists[name] = SourceList(name, str(entry["repo"]), str(entry["commit"]), files)
        except (KeyError, TypeError, ValueError) as err:
            raise DownloadError(f"{path}: entry {name!r} is malformed ({err!r})") from None
        for f in files:
            if not _safe_path(f.path):
                raise DownloadError(f"{path}: entry {name!r} lists an unsafe path {f.path!r}")
            if f.bytes < 0 or len(f.sha256) != 64 or f.sha256.strip("0123456789abcdef"):
                raise DownloadError(f"{path}: entry {name!r}, {f.path}: bad size or SHA-256")
    return lists


# ------------------------------------------------------------------------------ origins
@dataclass(frozen=True)
class Origin:
    """Where listed files are found: a base URL (``<base>/<path>``) or a mirror folder
    (``<folder>/<path>``); exactly one is set."""

    base_url: str | None = None
    folder: Path | None = None

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{urllib.parse.quote(path)}"

    def describe(self) -> str:
        return str(self.folder) if self.folder is not None else self.base_url


def raw_url_base(repo: str, commit: str) -> str:
    """GitHub's raw-file address of ``repo`` at ``commit``; a file is under ``/<path>``."""
    return f"{RAW_HOST}/{repo}/{commit}"


def origin_from(source: str | None, repo: str, commit: str) -> Origin:
    """The origin for ``source``: None for GitHub at the listed commit, an existing folder
    for a mirror laid out like the repository, or an http(s):// / file:// base URL."""
    if source is None:
        return Origin(base_url=raw_url_base(repo, commit))
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if "://" in source and scheme in URL_SCHEMES:
        return Origin(base_url=source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return Origin(folder=folder)
    raise DownloadError(f"{source}: source is neither a folder nor an http://, https:// or "
                        "file:// URL")


# ------------------------------------------------------------------------------ checks
def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def problem_with(path: Path, listed: Listed) -> str | None:
    """Why ``path`` is not the listed file (size first: cheap), or None if it is."""
    size = path.stat().st_size
    if size != listed.bytes:
        with open(path, "rb") as fh:
            if fh.read(len(_LFS_POINTER)) == _LFS_POINTER:
                return (f"a Git LFS pointer ({size} bytes), not the file of {listed.bytes} "
                        "bytes; a git clone needs 'git lfs pull'")
        return f"{size} bytes, expected {listed.bytes}"
    digest = sha256sum(path)
    if digest != listed.sha256:
        return f"SHA-256 {digest}, expected {listed.sha256}"
    return None


def _intact(path: Path, listed: Listed) -> bool:
    return path.is_file() and problem_with(path, listed) is None


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress,
                file=sys.stderr)


# ------------------------------------------------------------------------------ fetching
class _Stopped(Exception):
    """Another transfer failed: this one gives up at its next block."""


def _transient(err: BaseException) -> bool:
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code == 429
    if isinstance(err, urllib.error.URLError):
        err = err.reason
    return isinstance(err, (TimeoutError, ConnectionError, socket.gaierror,
                            http.client.HTTPException))


def _reason(err: BaseException, timeout: float) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(err) or type(err).__name__


def _stream(url: str, out, limit: int, timeout: float, stop: threading.Event, bar) -> int:
    """Write the body at ``url`` to the open file ``out`` (from its start); reads at most
    ``limit + 1`` bytes, enough to tell that a file is too long without fetching all of
    it. Returns the bytes written."""
    out.seek(0)
    out.truncate()
    n = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            while n <= limit:
                if stop.is_set():
                    raise _Stopped
                block = resp.read(min(_CHUNK, limit + 1 - n))
                if not block:
                    break
                out.write(block)
                n += len(block)
                bar.update(len(block))
    except BaseException:
        bar.update(-n)  # a retry counts its bytes again
        raise
    return n


def _fetch_one(listed: Listed, url: str, dest: Path, config: FetchConfig,
               stop: threading.Event, bar) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = open(part, "wb")
    except OSError as err:
        raise DownloadError(f"{listed.path}: cannot write {part} ({err.strerror or err})") from None
    try:
        with out:
            attempt = 0
            while True:
                attempt += 1
                try:
                    n = _stream(url, out, listed.bytes, config.timeout, stop, bar)
                    break
                except (OSError, ValueError, http.client.HTTPException) as err:
                    if attempt > config.retries or not _transient(err) or stop.is_set():
                        tries = f" after {attempt} attempts" if attempt > 1 else ""
                        raise DownloadError(f"{listed.path}: download failed from {url} "
                                            f"({_reason(err, config.timeout)}){tries}") from None
                    time.sleep(config.backoff * 2 ** (attempt - 1))
        problem = (f"more than the listed {listed.bytes} bytes" if n > listed.bytes
                   else problem_with(part, listed))
        if problem is not None:
            raise DownloadError(f"{listed.path}: {problem} from {url}; not kept")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def fetch_files(files: Sequence[Listed], origin: Origin, cache: Path,
                config: FetchConfig = FetchConfig(), progress: bool = True,
                desc: str = "sources") -> dict[str, Path]:
    """Make every listed file available locally, checked, and return ``{path: file}``.

    From a mirror folder: the folder's own files, checked in place (nothing is written).
    From a URL: ``cache/<path>``, downloaded unless already there and intact; the first
    failure stops the other transfers, and the files completed so far stay for a rerun."""
    if origin.folder is not None:
        return _check_mirror(files, origin.folder, progress, desc)
    local = {f.path: cache / f.path for f in files}
    todo = [f for f in files if not _intact(local[f.path], f)]
    stop = threading.Event()
    with _bar(sum(f.bytes for f in todo), desc, progress) as bar:
        pool = ThreadPoolExecutor(max_workers=config.workers)
        try:
            futures = [pool.submit(_fetch_one, f, origin.url(f.path), local[f.path], config,
                                   stop, bar) for f in todo]
            for future in as_completed(futures):
                future.result()
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return local


def _check_mirror(files: Sequence[Listed], folder: Path, progress: bool,
                  desc: str) -> dict[str, Path]:
    local = {}
    with _bar(sum(f.bytes for f in files), desc, progress) as bar:
        for f in files:
            path = folder / f.path
            if not path.is_file():
                raise DownloadError(f"{f.path}: not in the mirror folder {folder}")
            problem = problem_with(path, f)
            if problem is not None:
                raise DownloadError(f"{f.path}: {problem} (mirror file {path})")
            local[f.path] = path
            bar.update(f.bytes)
    return local
