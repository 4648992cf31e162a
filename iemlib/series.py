"""Small helpers shared by the notebook series: the quick switch and data discovery.

``IEM_QUICK=1`` shrinks image counts and iterations so that the whole series runs in
minutes under test; without it, notebooks run the paper's settings on the data present.
"""
from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_path
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


#: Sets of whole scenes (several objects, often small and off-centre). IEM assumes one
#: dominant foreground region, which such photographs break (IoU 21.6 on coco_mval with the
#: authors' settings), so the dataset notebooks leave them out of the paper's tables; they
#: stay in the data root as a corpus for training the learned inpainters.
SCENE_SETS = ("coco_mval",)


def evaluation_sets(found) -> tuple[list[str], list[str]]:
    """Split the set names ``found`` into (used, left out) for the dataset notebooks.

    ``$IEM_SETS`` (comma-separated names) chooses explicitly; otherwise every set but the
    :data:`SCENE_SETS` is used. Order follows ``found``."""
    found = list(found)
    env = os.environ.get("IEM_SETS", "").strip()
    if env:
        wanted = [s.strip() for s in env.split(",") if s.strip()]
        return [s for s in found if s in wanted], [s for s in found if s not in wanted]
    return [s for s in found if s not in SCENE_SETS], [s for s in found if s in SCENE_SETS]


def left_out_note(left_out) -> str:
    """One line saying which sets a notebook leaves out and why ('' if none)."""
    if not left_out:
        return ""
    scene = [s for s in left_out if s in SCENE_SETS]
    other = [s for s in left_out if s not in SCENE_SETS]
    parts = []
    if scene:
        parts.append(f"{', '.join(scene)} (whole scenes: IEM's one-foreground assumption does not hold)")
    if other:
        parts.append(f"{', '.join(other)} (not named in IEM_SETS)")
    return "left out: " + "; ".join(parts) + ". IEM_SETS=name,name,... chooses the sets."


# ------------------------------------------------------------------------------ tables
def results_dir() -> Path:
    """Where notebooks write their tables: ``$IEM_RESULTS_DIR``, else ``results/`` at the
    project root (the folder holding ``notebooks/``), else ``./results``. Under IEM_QUICK=1
    the default is ``results/quick/``, so that a quick test run never overwrites the tables
    of a full run."""
    env = os.environ.get("IEM_RESULTS_DIR")
    if env:
        return Path(env)
    here = Path.cwd()
    root = here.parent if here.name == "notebooks" else here
    return root / "results" / "quick" if quick() else root / "results"


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.1f}"
    return "-" if v is None else str(v)


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys -> a Markdown table (floats with one decimal, NaN/None as '-')."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def save_table(rows: list[dict], name: str, title: str = "") -> Path:
    """Write ``rows`` as ``<results>/<name>.csv`` and ``.md`` (atomically); returns the
    Markdown path. The Markdown file starts with ``title`` and the run mode."""
    import csv
    import io

    out = results_dir()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    md = (f"# {title}\n\n" if title else "") + f"_{mode_banner().split(';')[0]}_\n\n" + markdown_table(rows) + "\n"
    for suffix, text in ((".csv", buf.getvalue()), (".md", md)):
        with atomic_path(out / f"{name}{suffix}") as tmp:
            tmp.write_text(text, newline="")
    return out / f"{name}.md"
