"""Several processes, one result: rank and world size from ``torchrun``, sharding, gathering.

``torchrun --nproc_per_node=N ...`` (or ``python -m torch.distributed.run``) starts N copies
of a program and tells each who it is through the environment: ``RANK`` (0 .. WORLD_SIZE-1
over all machines), ``WORLD_SIZE`` and ``LOCAL_RANK`` (the index on this machine, which
picks the GPU). Everything here reads that, and when the program was not launched by
torchrun it degrades to one process without a process group: ``rank() == 0``,
``world_size() == 1``, ``shard(items)`` is every item, ``gather(x)`` is ``[x]``.

The collectives are torch.distributed's own (gloo on the CPU, NCCL on CUDA); nothing here
sends bytes by itself.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def active() -> bool:
    """True when a process group is initialised (several processes cooperate)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank over all machines (0 without torchrun)."""
    return dist.get_rank() if active() else _env_int("RANK", 0)


def world_size() -> int:
    """The number of processes (1 without torchrun)."""
    return dist.get_world_size() if active() else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """This process's index on its machine (0 without torchrun): the GPU it uses."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on the one process that writes files, prints results and shows progress."""
    return rank() == 0


def device() -> torch.device:
    """The device of this process: ``cuda:<local rank>`` when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def init(backend: str | None = None) -> torch.device:
    """Join the process group torchrun prepared, once (later calls do nothing), and return
    this process's device.

    ``backend`` None picks NCCL when CUDA is present, gloo otherwise. Without torchrun
    (``WORLD_SIZE`` unset or 1) no group is created: one process is the whole job."""
    dev = device()
    if active() or world_size() <= 1:
        return dev
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run one process")
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL and the object collectives use the current device
    dist.init_process_group(backend=backend)
    return dev


def shard(items: Sequence[T]) -> Sequence[T]:
    """This process's share of ``items``: a CONTIGUOUS slice, the shares' sizes differing by
    at most one, rank 0 first.

    Contiguous rather than strided because the shares, concatenated in rank order, are the
    input again, whatever the results are (lists, or tensors joined with ``torch.cat``), and
    each process keeps its images in file-name order, so outputs written per image come out
    in the same order as with one process. Works on lists, tuples, tensors and any
    sequence that can be sliced."""
    n, world, r = len(items), world_size(), rank()
    start = r * (n // world) + min(r, n % world)
    stop = start + n // world + (1 if r < n % world else 0)
    return items[start:stop]


def gather(obj: Any) -> list | None:
    """Collect one picklable object from every process on rank 0.

    Returns the list of objects in rank order on rank 0 and None on the others; ``[obj]``
    without a process group. Every process must call it."""
    if not active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (each process passes its own; only rank 0's is
    kept). Every process must call it."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the processes (a new tensor; the input is unchanged)."""
    out = tensor.detach().clone()
    if active():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def barrier() -> None:
    """Wait until every process arrives here (nothing without a process group)."""
    if active():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if there is one; safe to call twice."""
    if active():
        dist.destroy_process_group()


__all__ = ["active", "rank", "world_size", "local_rank", "is_main", "device", "init", "shard",
           "gather", "broadcast", "all_reduce_mean", "barrier", "cleanup"]
