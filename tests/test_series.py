"""iemlib.series: the quick switch, where tables go, the exercises' self-checks, the first
cell of every notebook and the timings."""
from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest

import torch

from iemlib.series import cached, markdown_table, pick, quick, results_dir, save_table


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), ("", False),
                                             ("0", False), ("false", False), ("No", False)])
def test_quick_switch(monkeypatch, value, expected):
    monkeypatch.setenv("IEM_QUICK", value)
    assert quick() is expected
    assert pick("full", "quick") == ("quick" if expected else "full")


def test_results_dir_default_full_and_quick(monkeypatch, tmp_path):
    monkeypatch.delenv("IEM_RESULTS_DIR", raising=False)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")   # notebooks run from notebooks/
    monkeypatch.delenv("IEM_QUICK", raising=False)
    assert results_dir() == tmp_path / "results"
    monkeypatch.setenv("IEM_QUICK", "1")
    # a quick test run must not overwrite the tables of a full run
    assert results_dir() == tmp_path / "results" / "quick"
    monkeypatch.setenv("IEM_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert results_dir() == tmp_path / "elsewhere"


def test_quick_run_leaves_full_tables_alone(monkeypatch, tmp_path):
    monkeypatch.delenv("IEM_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IEM_QUICK", raising=False)
    full = save_table([{"row": "default", "iou": 52.04}], "table_4")
    monkeypatch.setenv("IEM_QUICK", "1")
    q = save_table([{"row": "default", "iou": 20.0}], "table_4")
    assert full != q
    assert "52.0" in full.read_text() and "full run" in full.read_text()
    assert "20.0" in q.read_text() and "QUICK" in q.read_text()


def test_tables_are_readable_by_others_and_no_temp_files_left(monkeypatch, tmp_path):
    monkeypatch.setenv("IEM_RESULTS_DIR", str(tmp_path))
    old = os.umask(0o022)
    try:
        path = save_table([{"a": 1, "b": 2.25}], "t", title="A title")
    finally:
        os.umask(old)
    for p in (path, path.with_suffix(".csv")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert sorted(q.name for q in tmp_path.iterdir()) == ["t.csv", "t.md"]
    assert path.read_text().startswith("# A title\n")
    assert path.with_suffix(".csv").read_text().splitlines() == ["a,b", "1,2.25"]


def test_markdown_table_formats_missing_values():
    text = markdown_table([{"x": 1.26, "y": None}, {"x": float("nan"), "y": "s"}])
    assert text.splitlines() == ["| x | y |", "|---|---|", "| 1.3 | - |", "| - | s |"]
    assert markdown_table([]) == ""


def test_evaluation_sets_leave_out_scenes_unless_named(monkeypatch):
    from iemlib.series import evaluation_sets, left_out_note
    found = ["coco_mval", "grabcut", "weizmann_horse"]
    monkeypatch.delenv("IEM_SETS", raising=False)
    used, out = evaluation_sets(found)
    assert used == ["grabcut", "weizmann_horse"] and out == ["coco_mval"]
    assert "coco_mval" in left_out_note(out) and "whole scenes" in left_out_note(out)
    assert left_out_note([]) == ""
    monkeypatch.setenv("IEM_SETS", "coco_mval, weizmann_horse,missing")
    used, out = evaluation_sets(found)
    assert used == ["coco_mval", "weizmann_horse"] and out == ["grabcut"]
    assert "not named in IEM_SETS" in left_out_note(out)


# --------------------------------------------------------------------------- exercises
def test_check_passes_within_the_tolerance_and_prints_one_line(capsys):
    from iemlib.series import check
    check("weather table", 0.39731, 0.3973, tol=1e-4)
    assert capsys.readouterr().out == "weather table: your value = 0.3973, expected 0.3973 ✓\n"


@pytest.mark.parametrize("yours", [0.4, float("nan"), float("inf")])
def test_check_fails_with_a_message_naming_the_check_and_both_values(yours):
    from iemlib.series import ExerciseError, check
    with pytest.raises(ExerciseError) as err:
        check("random 3 x 4 table", yours, 0.1949, tol=1e-4)
    message = str(err.value)
    assert message.startswith("random 3 x 4 table: your value = ")
    assert "expected 0.1949" in message and "allowed difference 0.0001" in message
    assert "\n" not in message
    assert isinstance(err.value, AssertionError)     # a plain `assert`-style failure elsewhere


def test_a_wrong_answer_shows_enough_decimals_to_differ_from_the_expected_one():
    from iemlib.series import ExerciseError, check
    with pytest.raises(ExerciseError, match=r"your value = 0\.39740, expected 0\.39730 \(differs by 0\.0001,"):
        check("close but wrong", 0.3974, 0.3973, tol=1e-5)


def test_values_are_shown_with_six_decimals_at_most(capsys):
    from iemlib.series import ExerciseError, check
    check("tight", 0.1658222812345, 0.1658222812349, tol=1e-9)
    assert capsys.readouterr().out == "tight: your value = 0.165822, expected 0.165822 ✓\n"
    # digits beyond the sixth are not shown, so a failure says by how much it is off
    with pytest.raises(ExerciseError, match=r"0\.165822, expected 0\.165822 \(differs by 1e-08, allowed difference 1e-09\)"):
        check("tight", 0.16582229, 0.16582228, tol=1e-9)


def test_check_accepts_numpy_and_torch_scalars_and_one_element_arrays(capsys):
    import numpy as np
    import torch
    from iemlib.series import check
    for value in (np.float32(2.5), np.array([2.5]), torch.tensor(2.5), torch.tensor([[2.5]]), 2.5, True * 2.5):
        check("x", value, 2.5, tol=0)
    assert capsys.readouterr().out.count("✓") == 6


@pytest.mark.parametrize("yours, says", [(None, "None: does your function end with `return"),
                                         ("0.3", "expected a number"),
                                         ([1.0, 2.0], "expected one number, your answer has shape (2,)")])
def test_check_explains_an_answer_that_is_not_a_number(yours, says):
    from iemlib.series import ExerciseError, check
    with pytest.raises(ExerciseError) as err:
        check("foreground term", yours, 0.3352)
    assert str(err.value).startswith("foreground term: ") and says in str(err.value)


@pytest.mark.parametrize("yours, says", [(None, "is None"), (3.0, "expected an array of shape (2, 3), your answer is float 3.0"),
                                         ("ones", "your answer is str"),
                                         (np.zeros((3, 2)), "expected shape (2, 3), your answer has shape (3, 2)")])
def test_expect_array_explains_what_it_got_instead(yours, says):
    from iemlib.series import ExerciseError, expect_array
    with pytest.raises(ExerciseError) as err:
        expect_array("your my_smooth", yours, (2, 3))
    assert str(err.value).startswith("your my_smooth: ") and says in str(err.value)


def test_expect_array_passes_arrays_of_the_right_shape_through():
    import torch
    from iemlib.series import expect_array
    a, b, c = np.zeros((2, 3)), torch.zeros(2, 3, dtype=torch.bool), (1, 2, 3)
    assert expect_array("x", a, (2, 3)) is a and expect_array("x", b, (2, 3)) is b
    assert expect_array("counts", c, (3,)) is c


def test_exercise_error_is_shown_in_jupyter_as_one_line():
    from iemlib.series import ExerciseError
    lines = ExerciseError("sigma(ground truth): your value = 1, expected 2")._render_traceback_()
    assert lines == ["✗ sigma(ground truth): your value = 1, expected 2"]


# ------------------------------------------------------------------------ setup, timing
def test_setup_sets_a_readable_figure_style_and_prints_the_mode(capsys, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from iemlib.series import setup
    monkeypatch.setenv("IEM_QUICK", "1")
    with matplotlib.rc_context():
        setup()
        assert plt.rcParams["figure.dpi"] >= 100 and plt.rcParams["savefig.dpi"] >= 100
        for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize",
                    "ytick.labelsize", "legend.fontsize"):
            size = matplotlib.font_manager.FontProperties(size=plt.rcParams[key]).get_size_in_points()
            assert size >= 9, key
    assert capsys.readouterr().out.startswith("QUICK mode")


def test_stopwatch_measures_and_states_its_conditions(monkeypatch):
    import torch
    from iemlib import series
    monkeypatch.setattr(series, "_WARM", True)          # the warm-up itself is not under test
    with series.Stopwatch("a short sleep", device="cpu") as sw:
        time.sleep(0.05)
    assert 0.05 <= sw.seconds < 5
    text = str(sw)
    assert text.startswith("a short sleep: ") and " s (warm; " in text
    assert f"{torch.get_num_threads()} torch thread" in text and "on cpu" in text
    assert "load average" in text and "this run included" in text
    # sleeping keeps no CPU busy: the busy figure comes from the process's CPU time
    assert "kept 0.0 CPUs busy" in text or "kept 0.1 CPUs busy" in text


def test_warm_up_runs_once(monkeypatch):
    from iemlib import series
    calls = []
    monkeypatch.setattr(series, "_WARM", False)
    monkeypatch.setattr("iemlib.iem.segment", lambda *a, **k: calls.append(a))
    series.warm_up("cpu")
    series.warm_up("cpu")
    assert len(calls) == 1


def test_cached_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"iou": torch.tensor([0.5, 0.25])}

    a = cached(tmp_path, {"set": "horse", "row": "gatedconv", "iters": 150}, compute)
    b = cached(tmp_path, {"set": "horse", "row": "gatedconv", "iters": 150}, compute)
    assert len(calls) == 1 and torch.equal(a["iou"], b["iou"])
    cached(tmp_path, {"set": "horse", "row": "gatedconv", "iters": 20}, compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.pt"))) == 2
    for f in tmp_path.glob("*.pt"):          # a damaged file is computed again, not an error
        f.write_bytes(b"junk")
    cached(tmp_path, {"set": "horse", "row": "gatedconv", "iters": 20}, compute)
    assert len(calls) == 3 and not list(tmp_path.glob(".*"))
