"""Small helpers shared by the notebook series: the quick switch and data discovery.

``IEM_QUICK=1`` shrinks image counts and iterations so that the whole series runs in
minutes under test; without it, notebooks run the paper's settings on the data present.
"""
from __future__ import annotations

import os
from pathlib import Path

from .data import data_root


def quick() -> bool:
    """True when the environment variable IEM_QUICK is set to a true value."""
    return os.environ.get("IEM_QUICK", "").strip().lower() not in ("", "0", "false", "no")


def pick(full, quick_value):
    """``full`` normally, ``quick_value`` under IEM_QUICK=1."""
    return quick_value if quick() else full


def mode_banner() -> str:
    """One line saying which mode a notebook runs in and where its data comes from."""
    mode = "QUICK mode (IEM_QUICK=1): fewer images and iterations" if quick() else "full run"
    return f"{mode}; data root: {Path(data_root()).resolve()}"


def local_sets(root: Path | None = None) -> list[str]:
    """Names of the simple-layout sets (``<name>/images`` + ``<name>/masks``) under the root."""
    root = Path(root or data_root())
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if (p / "images").is_dir() and (p / "masks").is_dir())
