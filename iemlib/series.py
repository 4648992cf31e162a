"""Small helpers shared by the notebook series: the quick switch, data discovery, the
first cell of every notebook, the exercises' self-checks, timings and tables.

``IEM_QUICK=1`` shrinks image counts and iterations so that the whole series runs in
minutes under test; without it, notebooks run the paper's settings on the data present.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

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


def setup() -> None:
    """The first thing every notebook of the series runs: the figure style that keeps
    stored figures readable (:func:`iemlib.viz.use_series_style`), then one line saying
    which mode the notebook runs in and where its data comes from."""
    from .viz import use_series_style
    use_series_style()
    print(mode_banner())


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


# --------------------------------------------------------------------------- exercises
class ExerciseError(AssertionError):
    """An exercise's self-check failed. The message names the check, your value and the
    expected one. In Jupyter it is shown as that one line (IPython calls
    ``_render_traceback_`` instead of printing a traceback); the cell still fails."""

    def _render_traceback_(self) -> list[str]:
        return [f"✗ {self}"]


def _as_number(what: str, value) -> float:
    """``value`` (a Python, NumPy or PyTorch scalar, or a one-element array) as a float;
    anything else raises :class:`ExerciseError` saying what was given instead."""
    if value is None:
        raise ExerciseError(f"{what}: your answer is None: does your function end with `return ...`?")
    if hasattr(value, "detach"):                       # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ExerciseError(f"{what}: expected a number, your answer is {type(value).__name__} {value!r:.60}")
    if arr.size != 1:
        raise ExerciseError(f"{what}: expected one number, your answer has shape {tuple(arr.shape)}")
    return float(arr.reshape(()).item())


def _shown(value: float, tol: float) -> str:
    """A value printed with as many decimals as the tolerance resolves, at most 6: more
    digits than that can be round-off, which differs between machines (a failing check
    states the difference itself)."""
    if tol <= 0 or not math.isfinite(value):
        return f"{value:.6g}"
    decimals = min(6, max(0, math.ceil(-math.log10(tol))))
    return f"{value:.{decimals}f}"


def check(what: str, yours, expected, tol: float = 1e-4) -> None:
    """An exercise's self-check: prints ``what: your value = ..., expected ... ✓`` when
    ``|yours - expected| <= tol``, else raises :class:`ExerciseError` with the same values
    and the allowed difference (a NaN never passes)."""
    y, e = _as_number(what, yours), _as_number(f"{what} (expected value)", expected)
    if not abs(y - e) <= tol:
        differs = f"differs by {abs(y - e):.2g}, " if math.isfinite(y - e) else ""
        raise ExerciseError(f"{what}: your value = {_shown(y, tol)}, expected {_shown(e, tol)} "
                            f"({differs}allowed difference {tol:g}). Look again at your code above.")
    print(f"{what}: your value = {_shown(y, tol)}, expected {_shown(e, tol)} ✓")


def expect_array(what: str, value, shape: tuple[int, ...]):
    """``value`` unchanged if it is an array (NumPy or PyTorch), a tuple or a list of the given
    shape, so that a check can compute with it; otherwise an :class:`ExerciseError` saying what
    it is instead."""
    if value is None:
        raise ExerciseError(f"{what}: your answer is None: does your function end with `return ...`?")
    got = np.shape(value) if isinstance(value, (tuple, list)) else getattr(value, "shape", None)
    if got is None:
        raise ExerciseError(f"{what}: expected an array of shape {tuple(shape)}, your answer is "
                            f"{type(value).__name__} {value!r:.60}")
    if tuple(got) != tuple(shape):
        raise ExerciseError(f"{what}: expected shape {tuple(shape)}, your answer has shape {tuple(got)}")
    return value


# ----------------------------------------------------------------------------- timings
_WARM = False


def warm_up(device=None) -> None:
    """Run IEM once on two small random images, so that first-call costs (PyTorch's
    thread pool, memory allocation, kernel selection) never land in a timed block.
    Does something only the first time it is called in a process."""
    global _WARM
    if _WARM:
        return
    import torch

    from .iem import IEMConfig, segment
    gen = torch.Generator().manual_seed(0)
    segment(torch.rand(2, 3, 128, 128, generator=gen) * 2 - 1, IEMConfig(iters=3, device=device))
    _WARM = True


class Stopwatch:
    """Wall time of a block, with the conditions it ran under: the one way the series
    times anything.

    ``with Stopwatch("IEM on 50 images") as sw: ...`` warms up first (:func:`warm_up`),
    then measures; ``str(sw)`` says how long it took, with how many PyTorch threads, on
    which device, how busy this process kept the CPU, and the machine's load average at
    the end (which counts this run too: what is above it ran beside it). Times are
    comparable only between blocks whose conditions match."""

    def __init__(self, label: str, device=None):
        self.label = label
        self.device = device
        self.seconds = float("nan")
        self.cpu_seconds = float("nan")

    def __enter__(self) -> "Stopwatch":
        warm_up(self.device)
        self._cpu0, self._t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        from .iem import resolve_device
        device = resolve_device(self.device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._cpu0
        self.threads = torch.get_num_threads()
        self.device_name = str(device)
        self.cpus = os.cpu_count() or 1
        self.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    def conditions(self) -> str:
        """Everything but the time, e.g. "warm; 2 torch threads on cpu; ..."."""
        busy = self.cpu_seconds / self.seconds if self.seconds > 0 else float("nan")
        return (f"warm; {self.threads} torch thread{'s' * (self.threads != 1)} on {self.device_name}; "
                f"this process kept {busy:.1f} CPUs busy; load average {self.load:.1f} "
                f"on {self.cpus} CPUs at the end, this run included")

    def __str__(self) -> str:
        return f"{self.label}: {self.seconds:.1f} s ({self.conditions()})"


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


def cached(folder, key: dict, compute):
    """The result of ``compute()``, stored in ``folder`` under a name made of ``key``'s
    values and a hash of all of it, and read back instead of recomputed when it is there:
    a rerun of a notebook resumes where an interrupted one stopped, and a changed setting
    (anything in ``key``) computes afresh. ``compute`` returns anything ``torch.save``
    writes; the file is written atomically."""
    import hashlib
    import json

    import torch

    text = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    stem = "_".join(str(v) for v in key.values() if isinstance(v, (str, int)) and len(str(v)) < 24)
    path = Path(folder) / f"{stem.replace('/', '-').replace(' ', '-')}_{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception:               # unreadable (a disk problem): compute it again
            pass
    value = compute()
    with atomic_path(path) as tmp:
        torch.save(value, tmp)
    return value


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
