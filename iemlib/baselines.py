"""Baselines the paper compares with: GrabCut (OpenCV), run without user input.

The papers do not say how GrabCut was initialised. Unsupervised use needs a rectangle
chosen without looking at the image; two are offered:

* ``rect="border"`` (default): the whole image minus a border of ``margin`` pixels. The only
  prior is that the object does not touch the image border, the weakest assumption a
  rectangle can make.
* ``rect="square"``: the centred square IEM starts from (side 78 at 128 x 128), which gives
  both methods the same prior about where the object is.
"""
from __future__ import annotations

import numpy as np
import torch

from .kernels import centred_square


def _require_cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the GrabCut baseline needs OpenCV: pip install opencv-python-headless "
                          "(or the project's 'notebooks' extra)") from err
    return cv2


def grabcut_rect(height: int, width: int, rect: str = "border", margin: int = 8,
                 side: int = 78) -> tuple[int, int, int, int]:
    """The initial rectangle (x, y, w, h) in OpenCV's convention."""
    if rect == "border":
        if 2 * margin >= min(height, width):
            raise ValueError(f"margin {margin} leaves no rectangle in {height}x{width}")
        return margin, margin, width - 2 * margin, height - 2 * margin
    if rect == "square":
        m = centred_square(1, height, width, side)[0, 0]
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        top, left = int(rows[0]), int(cols[0])
        return left, top, int(cols[-1]) - left + 1, int(rows[-1]) - top + 1
    raise ValueError(f"rect must be 'border' or 'square', got {rect!r}")


def grabcut(x, rect: str = "border", margin: int = 8, iters: int = 5, seed: int = 0) -> torch.Tensor:
    """GrabCut on each image of ``x`` (N, 3, H, W) in [-1, 1] from a fixed rectangle.

    Returns masks (N, 1, H, W) bool (True = foreground: GrabCut's definite or probable
    foreground). ``seed`` fixes OpenCV's k-means initialisation, so runs repeat."""
    cv2 = _require_cv2()
    x = torch.as_tensor(x)
    n, _, h, w = x.shape
    box = grabcut_rect(h, w, rect, margin)
    out = torch.zeros(n, 1, h, w, dtype=torch.bool)
    imgs = ((x.detach().cpu().numpy().transpose(0, 2, 3, 1) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    for i in range(n):
        cv2.setRNGSeed(seed)
        bgr = np.ascontiguousarray(imgs[i][..., ::-1])
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(bgr, mask, box, bgd, fgd, iters, cv2.GC_INIT_WITH_RECT)
        except cv2.error:
            # a degenerate colour model (e.g. a flat image): keep the rectangle itself
            mask[box[1]:box[1] + box[3], box[0]:box[0] + box[2]] = cv2.GC_PR_FGD
        out[i, 0] = torch.from_numpy((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))
    return out
