"""Shared fixtures: the project's shared data folder, the recorded vectors of the authors'
code, real Weizmann Horse images, and random masks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the repository (data and reference files)."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def authors(shared_dir) -> dict:
    """Arrays recorded by running the authors' code on the first 16 horse images."""
    path = shared_dir / "reference" / "authors_iem_vectors.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def authors_x(authors) -> torch.Tensor:
    """The authors' pre-processed images: (16, 3, 128, 128) float32 in [-1, 1]."""
    return torch.from_numpy(authors["x"])


@pytest.fixture(scope="session")
def horse_dir() -> Path:
    """The Weizmann Horse set: under $IEM_DATA_DIR when set, else the shared data folder."""
    roots = [Path(os.environ["IEM_DATA_DIR"])] if os.environ.get("IEM_DATA_DIR") else []
    roots.append(SHARED / "data")
    for root in roots:
        path = root / "weizmann_horse"
        if (path / "images").is_dir():
            return path
    pytest.skip("the weizmann_horse set was not found")


@pytest.fixture(scope="session")
def load_horses(horse_dir):
    """Function: indices into the file-name-sorted horse set -> (x (N, 3, 128, 128) float32,
    y (N, 1, 128, 128) uint8)."""
    from iemlib.images import load_pair

    images = sorted((horse_dir / "images").glob("*.jpg"))

    def load(indices):
        pairs = [load_pair(images[i], horse_dir / "masks" / f"{images[i].stem}.png")
                 for i in indices]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None]
        return x, y

    load.count = len(images)
    return load


def blob_masks(n: int, h: int, w: int, seed: int = 0, density: float = 0.5) -> torch.Tensor:
    """Random smooth blobs: low-pass filtered noise thresholded at its ``1 - density``
    quantile. (n, 1, h, w) bool, with both values present in every mask."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 1, h, w, generator=g, dtype=torch.float64)
    for _ in range(4):
        noise = F.avg_pool2d(noise, 5, 1, 2, count_include_pad=False)
    q = torch.quantile(noise.flatten(1), 1 - density, dim=1).view(n, 1, 1, 1)
    m = noise > q
    assert m.flatten(1).any(1).all() and (~m).flatten(1).any(1).all()
    return m


def noise_masks(n: int, h: int, w: int, seed: int = 0, p: float = 0.5) -> torch.Tensor:
    """Independent Bernoulli(p) pixels: (n, 1, h, w) bool."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=g, dtype=torch.float64) < p


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tensors this small are fastest on one thread, and far
    faster on a busy machine. A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
