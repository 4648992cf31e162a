"""Figures for the notebooks and the command line.

Images are (N, 3, H, W) in [-1, 1]; masks (N, 1, H, W) bool or 0/1; ground truth uint8
0 / 1 / 255 (unknown, drawn grey)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def to_rgb(x) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.clip((x.transpose(1, 2, 0) + 1) / 2, 0, 1)


def mask_image(m) -> np.ndarray:
    """(1, H, W) or (H, W) mask / ground truth -> (H, W) float with unknown at 0.5."""
    m = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    m = m.reshape(m.shape[-2:]).astype(np.float32)
    m[m == 255] = 0.5
    return m


def overview_figure(x, y, masks, title: str | None = None, n: int | None = None, inpaint=None):
    """A grid, one row per image: image | ground truth | IEM mask | (inpainting).

    inpaint: optional (N, 3, H, W) composite of the two inpaintings (paper Figures 4-6)."""
    import matplotlib.pyplot as plt

    n = min(len(x), n or 8)
    cols = 3 + (inpaint is not None) - (y is None)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False)
    heads = ["image"] + (["ground truth"] if y is not None else []) + ["IEM mask"] + (
        ["inpainting"] if inpaint is not None else [])
    for i in range(n):
        panels = [to_rgb(x[i])] + ([mask_image(y[i])] if y is not None else []) + [
            mask_image(masks[i])] + ([to_rgb(inpaint[i])] if inpaint is not None else [])
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap="gray" if p.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> Path:
    """Save atomically (temporary file + rename) and close the figure."""
    import matplotlib.pyplot as plt
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)
    return path


def save_overview(path, x, y, masks, title: str | None = None, n: int | None = None) -> Path:
    """:func:`overview_figure` written to ``path``."""
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    return save_figure(overview_figure(x, y, masks, title, n), path)
