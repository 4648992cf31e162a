"""IEM spread over processes: each process segments a contiguous share of the images,
rank 0 collects the results.

    out = segment_sharded(x, IEMConfig.paper())     # the same on 1 or N processes

Images are independent, so sharding them cannot change a mask, provided every image is
computed in the same batch whatever the number of processes: float32 batched matrix
products and the early exit of settled images are deterministic for a given batch, not
across batch compositions. The images are therefore cut into fixed chunks (of
``config.batch_size // len(config.init_sizes)`` images, so that a chunk's (image, square)
jobs are one batch of :func:`iemlib.segment`), and whole chunks are shared out. One
process and N processes then compute every chunk identically: the masks are equal bit for
bit (tested with torchrun). The square is chosen after gathering, so ``select="dataset"``
sees the errors of every image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import distributed as dist
from .iem import IEMConfig, segment, select_init


@dataclass
class ShardedResult:
    """The parts of an :class:`~iemlib.iem.IEMResult` that a whole set needs, on every
    process: ``masks`` (N, 1, H, W) bool, ``inpainting_error`` (N,) float64,
    ``init_index`` (N,), ``all_errors`` (N, K), ``seconds`` (the slowest process's)."""

    masks: torch.Tensor
    inpainting_error: torch.Tensor
    init_index: torch.Tensor
    all_errors: torch.Tensor
    seconds: float


def chunk_size(config: IEMConfig) -> int:
    """Images per chunk: one batch of (image, square) jobs."""
    return max(1, config.batch_size // max(1, len(config.init_sizes)))


def _pack(masks: torch.Tensor) -> tuple[np.ndarray, tuple]:
    # 8 mask pixels per byte: 8,000 images x 3 squares travel as 49 MB instead of 393 MB
    return np.packbits(masks.numpy(), axis=-1), tuple(masks.shape)


def _unpack(packed: np.ndarray, shape: tuple) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool))


def segment_sharded(x: torch.Tensor, config: IEMConfig, init_masks: torch.Tensor | None = None,
                    progress: bool = False, inpainter=None) -> ShardedResult:
    """IEM on images ``x`` (N, 3, H, W) over every process of the group (or this one alone).

    ``init_masks`` (N, 1, H, W) bool, optional: start from these masks instead of the
    config's squares (one run per image); ``inpainter``: as for :func:`iemlib.segment`. Every process must call this with the same
    inputs; every process receives the whole result."""
    n = x.shape[0]
    c = chunk_size(config) if init_masks is None else max(1, config.batch_size)
    chunks = [(lo, min(n, lo + c)) for lo in range(0, n, c)]
    mine = dist.shard(chunks)
    parts = []
    bar = None
    if progress and dist.is_main():
        from tqdm.auto import tqdm
        bar = tqdm(total=sum(hi - lo for lo, hi in mine), desc="IEM", unit="img", leave=False)
    seconds = 0.0
    for lo, hi in mine:
        kw = {"inpainter": inpainter}
        if init_masks is not None:
            kw["init_masks"] = init_masks[lo:hi]
        res = segment(x[lo:hi], config, **kw)
        seconds += res.seconds
        parts.append((lo, _pack(res.all_masks), res.all_errors.numpy()))
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    gathered = dist.gather((parts, seconds))
    payload = None
    if dist.is_main():
        pieces = sorted((p for ps, _ in gathered for p in ps), key=lambda p: p[0])
        all_masks = torch.cat([_unpack(*p[1]) for p in pieces]) if pieces else torch.zeros(0)
        all_errors = torch.from_numpy(np.concatenate([p[2] for p in pieces])) if pieces else torch.zeros(0)
        payload = (_pack(all_masks), all_errors, max(s for _, s in gathered))
    payload = dist.broadcast(payload)
    (packed, shape), all_errors, seconds = payload
    all_masks = _unpack(packed, shape)
    rule = config.select if init_masks is None else "image"
    idx = select_init(all_errors, rule)
    rows = torch.arange(n)
    return ShardedResult(masks=all_masks[rows, idx], inpainting_error=all_errors[rows, idx],
                         init_index=idx, all_errors=all_errors, seconds=seconds)


__all__ = ["ShardedResult", "segment_sharded", "chunk_size"]
