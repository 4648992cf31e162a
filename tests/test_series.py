"""iemlib.series: the quick switch and where tables go."""
from __future__ import annotations

import os
import stat

import pytest

from iemlib.series import markdown_table, pick, quick, results_dir, save_table


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
