"""The dataset notebooks pick up the paper's sets by themselves once they are downloaded.

A data root holding only miniature Flowers-102 and CUB trees (the real split files, a few
synthetic photographs in the download layouts) is handed to notebooks 04-06 in quick mode;
they must run on those two sets, say so, and write tables with their columns.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from iemlib.data import CUB200, Flowers102
from iemlib.reproduce import run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "reference"
FLOWERS_SETID = SHARED / "flowers102_setid.mat"
CUB_SPLIT = SHARED / "cub_train_val_test_split.txt"
N_FILES = 12          # what IEM_QUICK=1 loads per set


def _scene(seed: int, h: int, w: int):
    """A textured background with an ellipse of another colour: (image, object mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    back, obj = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    inside = ((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.25 * w)) ** 2 < 1
    img = np.where(inside[..., None], obj, back) + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), inside


def _flowers(root: Path):
    shutil.copy(FLOWERS_SETID, root / "setid.mat")
    (root / "jpg").mkdir()
    (root / "segmim").mkdir()
    for k, (image, segmim) in enumerate(Flowers102(root)._paths[:N_FILES]):
        img, inside = _scene(k, 96, 120)
        seg = np.where(inside[..., None], np.uint8([200, 90, 40]), np.uint8([0, 0, 254]))
        Image.fromarray(img).save(image, quality=95)
        Image.fromarray(seg.astype(np.uint8)).save(segmim, quality=100, subsampling=0)


def _cub(root: Path):
    shutil.copy(CUB_SPLIT, root / "train_val_test_split.txt")
    ids = [line.split()[0] for line in CUB_SPLIT.read_text().splitlines() if line.strip()]
    (root / "images.txt").write_text("".join(f"{i} 001.Bird/Bird_{i}.jpg\n" for i in ids))
    (root / "images").mkdir()
    (root / "segmentations").mkdir()
    for k, (image, seg) in enumerate(CUB200(root)._paths[:N_FILES]):
        img, inside = _scene(100 + k, 100, 140)
        image.parent.mkdir(parents=True, exist_ok=True)
        seg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(image, quality=95)
        Image.fromarray((255 * inside).astype(np.uint8)).save(seg)


@pytest.mark.slow
def test_dataset_notebooks_use_flowers_and_cub(tmp_path, monkeypatch):
    for needed in (FLOWERS_SETID, CUB_SPLIT):
        if not needed.exists():
            pytest.skip(f"{needed} not present")
    data = tmp_path / "data"
    (data / "flowers102").mkdir(parents=True)
    (data / "CUB_200_2011").mkdir()
    _flowers(data / "flowers102")
    _cub(data / "CUB_200_2011")
    books = tmp_path / "notebooks"
    books.mkdir()
    for name in ("04_segmenting_a_dataset", "05_ablations", "06_objective_variants"):
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", books)
    monkeypatch.setenv("IEM_DATA_DIR", str(data))
    results = tmp_path / "results"

    assert run(books, results, quick=True) == 0

    def text_of(name):
        nb = nbformat.read(results / "notebooks" / f"{name}.ipynb", as_version=4)
        return "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
                         for o in c.get("outputs", []))

    for name in ("05_ablations", "06_objective_variants"):
        out = text_of(name)
        assert "the paper's test sets" in out and "DEMO" not in out, name
    assert "DEMO" not in text_of("04_segmenting_a_dataset")
    for table in ("table_4_ablations", "table_5_objectives"):
        with open(results / f"{table}.csv") as fh:
            header = next(csv.reader(fh))
        assert {"cub IoU", "flowers102 IoU"} <= set(header), (table, header)
        assert not any(h.startswith(("grabcut", "weizmann", "demo")) for h in header)
    made = {p.name for p in results.glob("*.csv")}
    assert any("cub" in n for n in made) and any("flowers102" in n for n in made), made
