"""Run the whole notebook series headless and collect its tables.

    python -m iemlib.reproduce [--notebooks notebooks] [--results results] [--quick]

Executes every ``NN_*.ipynb`` in order on the data found under the data root
(``$IEM_DATA_DIR``, else ``data/``), writes the executed copies to
``<results>/notebooks/`` (the committed notebooks are left untouched) and lets each
notebook write its tables as CSV and Markdown into ``<results>/``. A notebook that fails
stops the run with its name and the error; executed copies are written atomically, and
``--skip-done`` resumes after an interruption (a notebook executed in the other mode, or
on other datasets, is run again). ``--quick`` writes under ``results/quick/`` unless
``--results`` says otherwise, so that a smoke run never replaces a full run's tables.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .atomic import atomic_path


def notebooks_in(folder: Path) -> list[Path]:
    books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not books:
        raise SystemExit(f"reproduce: no numbered notebooks in {folder}")
    return books


def run(notebooks: Path, results: Path, quick: bool = False, skip_done: bool = False,
        timeout: int = 4 * 3600) -> int:
    """Execute the series; returns 0, or 1 when a notebook fails. The kernels see
    IEM_RESULTS_DIR (and IEM_QUICK with ``quick``); the caller's environment is restored."""
    saved = {k: os.environ.get(k) for k in ("IEM_RESULTS_DIR", "IEM_QUICK", "IEM_DATA_DIR")}
    try:
        return _run(notebooks, results, quick, skip_done, timeout)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _current_env_kernel():
    """A kernel manager that starts ``python -m ipykernel_launcher`` with this interpreter,
    whatever kernelspecs are installed (a user-level ``python3`` spec may point elsewhere)."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class _Here(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name="Python (this environment)", language="python")

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_Here())


def _done_before(target: Path, book: Path, stamp: dict) -> bool:
    """True when ``target`` is a complete execution of ``book`` in the same mode on the
    same datasets (``stamp``)."""
    import nbformat

    if not target.is_file() or target.stat().st_mtime < book.stat().st_mtime:
        return False
    try:
        meta = nbformat.read(target, as_version=4).metadata.get("iemlib", {})
    except Exception:  # an unreadable copy is simply run again
        return False
    return all(meta.get(k) == v for k, v in stamp.items())


def _run(notebooks, results, quick, skip_done, timeout) -> int:
    import nbformat
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    from .data import available_datasets, data_root
    from .series import quick as quick_mode

    results = results.resolve()
    out_dir = results / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["IEM_RESULTS_DIR"] = str(results)
    if quick:
        os.environ["IEM_QUICK"] = "1"
    mode = quick_mode()
    books = notebooks_in(notebooks)
    # the kernels run in notebooks/; an explicit absolute root keeps them on the same data
    os.environ["IEM_DATA_DIR"] = str(data_root().resolve())
    # what a finished notebook was run on: a rerun skips it only if all of this still holds
    stamp = {"quick": mode, "data_root": os.environ["IEM_DATA_DIR"],
             "datasets": available_datasets()}
    print(f"{'quick' if mode else 'full'} run of {len(books)} notebooks; data: "
          f"{os.environ['IEM_DATA_DIR']}; results: {results}", flush=True)
    total = time.perf_counter()
    for k, book in enumerate(books, 1):
        target = out_dir / book.name
        if skip_done and _done_before(target, book, stamp):
            print(f"[{k}/{len(books)}] {book.name}: done earlier, skipped", flush=True)
            continue
        print(f"[{k}/{len(books)}] {book.name} ...", end=" ", flush=True)
        start = time.perf_counter()
        nb = nbformat.read(book, as_version=4)
        try:
            ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
                nb, {"metadata": {"path": str(book.parent.resolve())}}, km=_current_env_kernel())
        except CellExecutionError as err:
            print("FAILED")
            print(f"reproduce: {book.name} failed:\n{str(err)[-2000:]}", file=sys.stderr)
            return 1
        except Exception as err:  # a cell timeout, a dead kernel (out of memory), ...
            print("FAILED")
            print(f"reproduce: {book.name} did not finish: {type(err).__name__}: {err}",
                  file=sys.stderr)
            return 1
        nb.metadata["iemlib"] = {**stamp, "seconds": round(time.perf_counter() - start, 1)}
        with atomic_path(target) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                nbformat.write(nb, fh)
        print(f"{time.perf_counter() - start:.0f} s", flush=True)
    tables = sorted(results.glob("*.md"))
    print(f"done in {time.perf_counter() - total:.0f} s; executed notebooks in {out_dir}")
    for t in tables:
        print(f"  table: {t}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m iemlib.reproduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    ap.add_argument("--results", type=Path, default=None,
                    help="where tables and executed notebooks go (default results/, "
                         "results/quick/ with --quick)")
    ap.add_argument("--quick", action="store_true", help="IEM_QUICK=1: a fast smoke run")
    ap.add_argument("--skip-done", action="store_true",
                    help="skip notebooks already executed (same notebook, mode and datasets)")
    args = ap.parse_args(argv)
    results = args.results or Path("results", "quick" if args.quick else "")
    return run(args.notebooks, results, args.quick, args.skip_done)


if __name__ == "__main__":
    sys.exit(main())
