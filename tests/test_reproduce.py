"""make reproduce: notebooks executed in order, tables collected, failures reported."""
from __future__ import annotations

import os
import stat

import nbformat
import pytest

from iemlib.reproduce import run


def _book(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


@pytest.fixture
def series(tmp_path):
    books = tmp_path / "notebooks"
    books.mkdir()
    _book(books / "01_first.ipynb",
          "from iemlib.series import save_table, quick\n"
          "save_table([{'method': 'IEM', 'iou': 52.04}], 'table_x', title='T')\n"
          "print('quick' if quick() else 'full')")
    _book(books / "02_second.ipynb", "x = 1 + 1")
    (books / "notes.ipynb").write_text("not numbered, not run")
    return books


def test_runs_in_order_and_collects_tables(series, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IEM_QUICK", raising=False)
    results = tmp_path / "results"
    old = os.umask(0o022)
    try:
        assert run(series, results, quick=True) == 0
    finally:
        os.umask(old)
    out = capsys.readouterr().out
    assert out.index("01_first") < out.index("02_second")
    assert "notes" not in out
    md = (results / "table_x.md").read_text()
    assert "| IEM | 52.0 |" in md and "QUICK" in md
    assert (results / "table_x.csv").read_text().splitlines() == ["method,iou", "IEM,52.04"]
    executed_path = results / "notebooks" / "01_first.ipynb"
    assert stat.S_IMODE(executed_path.stat().st_mode) == 0o644   # not private (umask 022 below)
    executed = nbformat.read(executed_path, as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "quick"
    # resuming skips what is done
    assert run(series, results, quick=True, skip_done=True) == 0
    assert "skipped" in capsys.readouterr().out


def test_a_failing_notebook_stops_the_run(series, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IEM_QUICK", raising=False)
    _book(series / "01_first.ipynb", "raise ValueError('broken on purpose')")
    assert run(series, tmp_path / "results") == 1
    captured = capsys.readouterr()
    assert "01_first.ipynb failed" in captured.err and "broken on purpose" in captured.err
    assert "02_second" not in captured.out
    assert not (tmp_path / "results" / "notebooks" / "01_first.ipynb").exists()


def test_skip_done_reruns_a_notebook_executed_in_the_other_mode(series, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IEM_QUICK", raising=False)
    results = tmp_path / "results"
    assert run(series, results, quick=True) == 0
    capsys.readouterr()
    # a full run resuming in the same folder must not keep the quick copies
    assert run(series, results, quick=False, skip_done=True) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and "full run of 2 notebooks" in out
    executed = nbformat.read(results / "notebooks" / "01_first.ipynb", as_version=4)
    assert executed.metadata["iemlib"]["quick"] is False
    assert executed.cells[0].outputs[0]["text"].strip() == "full"


def test_quick_cli_default_folder_and_data_root(tmp_path, monkeypatch, capsys):
    from iemlib.reproduce import main

    monkeypatch.delenv("IEM_QUICK", raising=False)
    monkeypatch.delenv("IEM_RESULTS_DIR", raising=False)
    monkeypatch.delenv("IEM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    books = tmp_path / "notebooks"
    books.mkdir()
    _book(books / "01_where.ipynb",
          "from iemlib.data import data_root\nprint(data_root().resolve())")
    assert main(["--quick"]) == 0
    # a smoke run lands in results/quick/, never over a full run's results/
    executed = tmp_path / "results" / "quick" / "notebooks" / "01_where.ipynb"
    nb = nbformat.read(executed, as_version=4)
    # the kernel runs in notebooks/ and still sees the project's data/
    assert nb.cells[0].outputs[0]["text"].strip() == str((tmp_path / "data").resolve())
    assert not (tmp_path / "results" / "notebooks").exists()
    assert "IEM_QUICK" not in os.environ and "IEM_DATA_DIR" not in os.environ


def test_a_timeout_is_reported_by_name(series, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IEM_QUICK", raising=False)
    _book(series / "01_first.ipynb", "import time\ntime.sleep(30)")
    assert run(series, tmp_path / "results", timeout=2) == 1
    err = capsys.readouterr().err
    assert "01_first.ipynb did not finish" in err and "Timeout" in err


def test_skip_done_reruns_when_the_datasets_change(series, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("IEM_QUICK", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("IEM_DATA_DIR", str(data))
    results = tmp_path / "results"
    assert run(series, results, quick=True) == 0
    assert run(series, results, quick=True, skip_done=True) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 2
    # a set appears under the data root (e.g. after a download): everything runs again
    for sub in ("images", "masks"):
        (data / "new_set" / sub).mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (32, 32)).save(data / "new_set" / "images" / "a.png")   # a usable image
    Image.new("L", (32, 32)).save(data / "new_set" / "masks" / "a.png")
    assert run(series, results, quick=True, skip_done=True) == 0
    assert "skipped" not in capsys.readouterr().out
    meta = nbformat.read(results / "notebooks" / "01_first.ipynb", as_version=4).metadata
    assert "new_set" in meta["iemlib"]["datasets"]
