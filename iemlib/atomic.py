"""Atomic file writes: outputs appear whole or not at all, with ordinary permissions."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` to write to; when the block ends
    normally the file replaces ``path`` in one rename, otherwise it is removed, so an
    interrupted run never leaves a half-written output. ``suffix`` (default: that of
    ``path``) is the temporary file's, for writers that pick the format from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.",
                               suffix=path.suffix if suffix is None else suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; outputs are not
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
