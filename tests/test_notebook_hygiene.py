"""Static checks of the stored notebooks: one clean top-to-bottom run each, and checked
cells (``# NBVAL_CHECK_OUTPUT``) that print only what is the same on every machine.

The dynamic check is ``make test-arithmetic`` (the notebooks again under other BLAS kernels
and one thread); these catch the usual culprits before any notebook runs."""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: numbers whose digits are round-off: results below 1e-10 printed in scientific notation
#: (a tolerance such as "below 1e-12" has no decimals and passes), floats
#: printed with 10+ decimals, memory addresses
MACHINE_DEPENDENT = [
    (re.compile(r"\d\.\d+e-(1\d|[2-9]\d)\b"), "a round-off-sized number"),
    (re.compile(r"\d\.\d{10,}"), "a float printed with 10+ decimals"),
    (re.compile(r"0x[0-9a-f]{6,}"), "a memory address"),
]


def _text(outputs) -> str:
    parts = []
    for o in outputs:
        parts.append("".join(o.get("text", "")))
        parts.append("".join(o.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def machine_dependent(text: str) -> list[str]:
    """What in a checked cell's output would differ between machines (empty if nothing)."""
    return [f"{why}: {m.group(0)!r}" for rx, why in MACHINE_DEPENDENT for m in rx.finditer(text)]


def test_the_detector_flags_round_off_and_passes_tolerances():
    assert machine_dependent("max |diff| = 2.22e-15")
    assert machine_dependent("x = 0.30000000000000004")
    assert machine_dependent("<object at 0x7f3a2b1c9d00>")
    assert not machine_dependent("below 1e-12 -> pass")           # a tolerance, not a result
    assert not machine_dependent("max |diff| = 4.37e-02, IoU 52.0")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_run_is_clean(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not one top-to-bottom run"
    errors = [i for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs stored in cells {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_cells_print_nothing_machine_dependent(path):
    nb = json.loads(path.read_text())
    found = []
    for i, c in enumerate(nb["cells"]):
        src = "".join(c["source"])
        if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in src:
            found += [f"cell {i}: {what}" for what in machine_dependent(_text(c.get("outputs", [])))]
    assert not found, f"{path.name}: " + "; ".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_raw_widget_repr_is_stored(path):
    """A widget's stored text/plain is what a viewer without widgets shows: never the raw
    ``VBox(children=...)`` of ipywidgets."""
    assert "VBox(children=" not in path.read_text(), f"{path.name}: a raw widget repr is stored"
