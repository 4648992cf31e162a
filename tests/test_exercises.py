"""The notebooks as a course: exercises an instructor can assign, readable figures, sources.

Static checks read the stored notebooks: every solution is hidden the same way, every
exercise ends in a self-check from :func:`iemlib.series.check`, every notebook starts
with :func:`iemlib.series.setup` and links the paper, the authors' code and the notation,
and none points to files outside the repository.

The dynamic checks run a notebook in a kernel (quick mode) and then, for each exercise,
run it again on its own (same output), with its answer spoiled (its check must fail with
an ExerciseError naming the check) and with no answer at all; every figure the notebook
draws goes through :func:`iemlib.viz.figure_problems`. Notebook 01 takes seconds; the
others are marked slow.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARXIV = "https://arxiv.org/abs/2012.07287"
CODE = "https://github.com/lolemacs/iem-code"
NOTATION = "01_coefficient_of_constraint.ipynb#notation"


def load(path):
    return json.loads(Path(path).read_text())


def source(cell) -> str:
    return "".join(cell["source"])


def exercises(nb) -> list[tuple[int, list[int]]]:
    """(solution cell, its check cells) for every exercise: a solution is a code cell
    with a ``# solution`` line; its checks are the code cells after it, up to the next
    markdown cell or the next solution."""
    found = []
    cells = nb["cells"]
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and re.search(r"^\s*# solution\s*$", source(c), re.M):
            checks = []
            for j in range(i + 1, len(cells)):
                if cells[j]["cell_type"] != "code" or "# solution" in source(cells[j]):
                    break
                checks.append(j)
            found.append((i, checks))
    return found


def solution_functions(cell) -> list[str]:
    """Names of the functions a solution cell defines (top level)."""
    return [n.name for n in ast.parse(source(cell)).body if isinstance(n, ast.FunctionDef)]


# ------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_is_hidden_the_same_way_and_checked(path):
    nb = load(path)
    found = exercises(nb)
    assert found, f"{path.name}: no exercise (a code cell with a '# solution' line)"
    for i, checks in found:
        meta = nb["cells"][i]["metadata"]
        assert meta.get("jupyter", {}).get("source_hidden") is True, f"{path.name} cell {i}: solution not collapsed"
        assert {"solution", "hide-input"} <= set(meta.get("tags", [])), f"{path.name} cell {i}: tags"
        assert solution_functions(nb["cells"][i]), f"{path.name} cell {i}: the solution defines no function"
        assert any(re.search(r"\bcheck\(", source(nb["cells"][j])) for j in checks), \
            f"{path.name} cell {i}: no self-check after the solution"
    hidden = [i for i, c in enumerate(nb["cells"]) if c["metadata"].get("jupyter", {}).get("source_hidden")]
    assert hidden == [i for i, _ in found], f"{path.name}: cells collapsed that are not solutions: {hidden}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_setup_one_check_no_small_fonts(path):
    nb = load(path)
    code = [source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "from iemlib.series import" in code[0] and "setup()" in code[0], f"{path.name}: first cell must call setup()"
    everything = "\n".join(code)
    assert not re.search(r"^def check\(", everything, re.M), f"{path.name}: defines its own check()"
    assert "rcParams" not in everything, f"{path.name}: sets rcParams itself (setup() does it once)"
    small = re.findall(r"fontsize\s*=\s*([0-8](?:\.\d+)?)\b", everything)
    assert not small, f"{path.name}: font sizes below 9 pt: {small}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_sources_and_notation_are_linked_and_nothing_points_outside(path):
    nb = load(path)
    text = "\n".join(source(c) for c in nb["cells"])
    assert ARXIV in text and CODE in text, f"{path.name}: the paper or the authors' code is not linked"
    if path.name != "01_coefficient_of_constraint.ipynb":
        assert NOTATION in text, f"{path.name}: no link to the notation table"
    else:
        assert '<a id="notation"></a>' in text
    outside = re.findall(r"\.\./shared|shared/reference|shared/data|/work/\w+", text)
    assert not outside, f"{path.name}: points to files outside the repository: {sorted(set(outside))}"


# ------------------------------------------------------------------------ dynamic checks
SPOIL = '''
import functools as _functools

def _spoiled(value):
    """A wrong answer of the same type: counts and values + 1, masks inverted."""
    if isinstance(value, tuple):
        return tuple(_spoiled(v) for v in value)
    if isinstance(value, bool):
        return not value
    if getattr(value, "dtype", None) is not None and str(value.dtype) in ("bool", "torch.bool"):
        return ~value
    return value + 1

def _spoil(f, nothing=False):
    @_functools.wraps(f)
    def wrong(*args, **kwargs):
        return None if nothing else _spoiled(f(*args, **kwargs))
    return wrong
'''

AUDIT = '''
import matplotlib.backend_bases as _backend_bases
from iemlib.viz import figure_problems as _figure_problems
_FIGURE_PROBLEMS = []
_canvas = _backend_bases.FigureCanvasBase
if not hasattr(_canvas, "_unaudited_print_figure"):      # patch once, however often this runs
    _canvas._unaudited_print_figure = _canvas.print_figure

    def _audited_print_figure(self, *args, **kwargs):
        _FIGURE_PROBLEMS.extend(_figure_problems(self.figure))
        return _canvas._unaudited_print_figure(self, *args, **kwargs)

    _canvas.print_figure = _audited_print_figure
'''


def _stdout(cell) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.outputs if o.get("name") == "stdout")


def _errors(cell) -> list[tuple[str, str]]:
    return [(o["ename"], o["evalue"]) for o in cell.outputs if o["output_type"] == "error"]


def run_course_checks(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    found = exercises(nb)
    env = dict(os.environ, IEM_QUICK="1")
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    problems, failures = [], []
    cells = list(nb.cells)
    scratch = len(nb.cells)                 # nbclient stores each executed cell at its index
    nb.cells.append(nbformat.v4.new_code_cell(""))

    def run(code: str):
        cell = nbformat.v4.new_code_cell(code)
        client.execute_cell(cell, scratch)
        return cell

    with client.setup_kernel(env=env):
        run(AUDIT)
        for i, cell in enumerate(cells):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, i)
            assert not _errors(cell), f"{path.name} cell {i}: {_errors(cell)}"
            out = run("print(len(_FIGURE_PROBLEMS)); print('\\n'.join(_FIGURE_PROBLEMS)); _FIGURE_PROBLEMS.clear()")
            lines = [p for p in _stdout(out).splitlines()[1:] if p.strip()]
            # the explorer draws its own figure (IEMExplorer.figure), not yet held to these rules
            if lines and "explorer" not in cell.source:
                problems += [f"cell {i}: {p}" for p in lines]
        run(SPOIL)
        for sol, checks in found:
            names = solution_functions(cells[sol])
            first = {j: _stdout(cells[j]) for j in checks}
            # 1. on its own, after the whole notebook ran: the same result
            for j in [sol] + checks:
                again = run(cells[j].source)
                if _errors(again) or (j in first and _stdout(again) != first[j]):
                    failures.append(f"cell {j} run again: {_errors(again) or _stdout(again)!r}")
            # 2. a wrong answer and no answer: the check fails, naming what it checked
            for nothing in (False, True):
                run("\n".join(f"{n} = _spoil({n}, nothing={nothing})" for n in names))
                errors = []
                for j in checks:
                    errors += _errors(run(cells[j].source))
                    if errors:
                        break
                kind = "no answer" if nothing else "a wrong answer"
                if not errors or errors[0][0] != "ExerciseError":
                    failures.append(f"cell {sol} with {kind}: the check raised {errors or 'nothing'}")
                elif nothing and "None" not in errors[0][1]:
                    failures.append(f"cell {sol} with no answer: {errors[0][1]!r} does not say so")
                run(cells[sol].source)                          # the right answer again
    assert not failures, f"{path.name}: " + "; ".join(failures)
    assert not problems, f"{path.name}: figures hard to read: " + "; ".join(problems)


def test_notebook_01_as_a_course():
    run_course_checks(NOTEBOOKS[0])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=lambda p: p.name)
def test_notebook_as_a_course(path):
    run_course_checks(path)
