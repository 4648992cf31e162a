"""The project's one training loop: every learned network is a *task* plus *data*.

    result = train(task, data, TrainConfig(out="run/segnet.pt", steps=2000, batch_size=128))

A **task** (see :class:`Task`) builds its models and optimisers and performs one optimiser
step on a batch; **data** (see :class:`TrainData`) returns one sample given an index and a
random generator. The loop does the rest, the same way for every network:

* **Batches.** Each epoch is a permutation drawn by PyTorch's ``DistributedSampler``
  (seeded with ``seed + epoch``; with one process too, as one replica), cut into batches
  of ``batch_size / world_size`` samples per process, the incomplete last batch dropped.
  The sampler gives rank r the positions r, r + W, r + 2W, ... of the permutation, so
  batch i of every rank together is exactly positions ``i*B .. i*B + B - 1``: one process's
  batch i at the same global batch B. Sample ``index`` of ``epoch`` is drawn with a
  generator seeded by a pure function of ``(seed, epoch, index)``
  (:func:`sample_generator`), so a sample does not depend on the number of processes, on
  DataLoader workers or on resuming.
* **Randomness inside a step** (dropout, noise drawn by the task) comes from torch's,
  NumPy's and Python's global generators, which the loop seeds before every step with a
  pure function of ``(seed, step, rank)``. The random state at any step is therefore known
  from the step alone: that, with the model and optimiser states, is all an exact resume
  needs, whether the run stopped cleanly or was killed.
* **Checkpoints** (``iemlib.checkpoints``, written atomically by rank 0) every
  ``checkpoint_every`` steps, at the end, and on SIGINT / SIGTERM (the run then stops after
  the current step with a one-line message and exit status 128 + signal number).
* **Resume** (``resume=True``) continues from the checkpoint at ``out`` up to ``steps`` in
  all, and gives bit for bit the losses of an uninterrupted run on the CPU: consumed
  batches of the current epoch are skipped by index, never loaded. A checkpoint of another
  task configuration, batch size, seed or dataset size is refused with one line naming it.
* **Log.** A CSV (default ``<out without suffix>.log.csv``) with a row every ``log_every``
  steps and at the end: ``step``, the mean of every loss over the rows' steps, ``lr`` (or
  ``lr_<optimiser>``), ``seconds`` (training time so far) and ``samples_per_s``. Each row
  is one flushed write, and the file is synced before every checkpoint, so a crash loses
  at most the rows after the last checkpoint; resuming cuts the log back to the
  checkpoint's step, so a resumed run's log equals an uninterrupted run's (timing columns
  aside). A tqdm bar on stderr shows the running losses (their means since the last
  row).
* **Several processes** under ``torchrun --nproc_per_node=N``: every model with trainable
  parameters is wrapped in ``DistributedDataParallel`` (gloo on the CPU, NCCL on CUDA),
  losses are averaged over the processes for the log, only rank 0 writes files or shows
  the bar. Because tasks return per-process means and DDP averages gradients, N processes
  follow one process at the same global batch, within float rounding.

Writing a task: ``make_optimizers`` receives the plain modules (already on the device),
``train_step`` the models as DDP wraps them, to be called like functions (only calls of the
wrapper synchronise gradients; ``unwrap(m)`` reaches attributes). Under DDP, call each
wrapped model once per backward pass (a discriminator scores real and fake images in one
concatenated batch, not in two calls). Randomness drawn inside a step differs between
ranks, on purpose (independent dropout per process), so only tasks whose randomness lives
in the data match one process exactly at any world size; a checkpoint may be resumed with
another number of processes, and is then exact in its batches and samples.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from . import distributed as dist
from .atomic import atomic_path
from .checkpoints import CHECKPOINT, CheckpointError, load, load_state, save

#: How the loop derives random states (stored in checkpoints, checked on resume).
RNG_SCHEME = "sample(seed,epoch,index); step(seed,step,rank)"


# --------------------------------------------------------------------------------------
# The interface between the loop and what it trains.

@runtime_checkable
class TrainData(Protocol):
    def __len__(self) -> int: ...

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """One sample (CPU tensors, no batch axis); all its randomness drawn from ``rng``."""


@runtime_checkable
class Task(Protocol):
    name: str

    def config(self) -> dict: ...

    def build(self) -> dict[str, nn.Module]: ...

    def make_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]: ...

    def train_step(self, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


class TrainingError(ValueError):
    """A training run that cannot start; the message is one line."""


class TrainingInterrupted(SystemExit):
    """SIGINT or SIGTERM stopped the run after a checkpoint; ``code`` is 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(128 + signum)
        self.message = message
        self.signum = signum

    def __str__(self) -> str:
        return self.message


@dataclass(kw_only=True)
class TrainConfig:
    """How to train (what to train is the task's business).

    ``steps``: total optimiser steps (a resumed run continues up to this total);
    ``batch_size``: the GLOBAL batch, split evenly over the processes; ``seed``: model
    initialisation, sample order and every random draw; ``checkpoint_every``: steps between
    checkpoints (0: only at the end and on interruption); ``log_every``: steps per log row;
    ``log``: the CSV path (None: beside ``out``, ``<stem>.log.csv``); ``device``: None for
    CUDA when present (the local rank's GPU under torchrun), else e.g. "cpu";
    ``progress``: the tqdm bar; ``workers``: DataLoader worker processes per training
    process (0 loads samples in the training process)."""

    out: str | Path
    steps: int
    batch_size: int
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    log: str | Path | None = None
    device: str | None = None
    progress: bool = True
    workers: int = 0

    def __post_init__(self):
        self.out = Path(self.out)
        if self.log is not None:
            self.log = Path(self.log)
        for name, low in (("steps", 1), ("batch_size", 1), ("log_every", 1),
                          ("checkpoint_every", 0), ("seed", 0), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainingError(f"TrainConfig.{name} must be an integer >= {low}, got {value!r}")

    @property
    def log_path(self) -> Path:
        return self.log if self.log is not None else self.out.with_suffix(".log.csv")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"], d["log"] = str(self.out), str(self.log_path)
        return d


@dataclass
class TrainResult:
    """What a call of :func:`train` did. ``history`` holds one dict per step it ran
    (``{"step": s, <loss>: value, ...}``, losses averaged over the processes);
    ``losses`` are the last step's (from the checkpoint when nothing ran)."""

    start_step: int
    step: int
    losses: dict[str, float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    samples_per_s: float = 0.0
    checkpoint: Path | None = None
    log: Path | None = None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# --------------------------------------------------------------------------------------
# Random states as pure functions of where the run is.

def _mix(*words: int) -> int:
    """A well-mixed 63-bit seed from non-negative integers (NumPy's SeedSequence)."""
    state = np.random.SeedSequence(list(words)).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The CPU generator sample ``index`` of ``epoch`` is drawn with."""
    return torch.Generator().manual_seed(_mix(seed, 0, epoch, index))


def _seed_step(seed: int, step: int, rank: int) -> None:
    s = _mix(seed, 1, step, rank)
    torch.manual_seed(s)  # CUDA generators included
    np.random.seed(s % 2**32)
    random.seed(s)


# --------------------------------------------------------------------------------------
# Batches.

def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full global batches in an epoch of ``n`` samples (the same for any world size that
    divides ``batch_size``)."""
    return n // batch_size


def batch_indices(n: int, batch_size: int, seed: int, epoch: int,
                  world: int = 1, rank: int = 0) -> list[list[int]]:
    """Sample indices of every batch of ``epoch`` on process ``rank`` of ``world``:
    ``steps_per_epoch(n, batch_size)`` lists of ``batch_size / world`` indices each."""
    if batch_size % world:
        raise TrainingError(f"the global batch size {batch_size} does not divide by "
                            f"{world} processes")
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                 seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    order = list(sampler)
    per = batch_size // world
    return [order[i * per:(i + 1) * per] for i in range(steps_per_epoch(n, batch_size))]


class _Batches:
    """Keys ``(epoch, index)`` of this process's batches for steps ``start .. stop - 1``,
    epochs advancing as they run out; consumed batches are skipped without loading."""

    def __init__(self, n, batch_size, seed, world, rank, start, stop):
        self.args = (n, batch_size, seed)
        self.world, self.rank, self.start, self.stop = world, rank, start, stop
        self.per_epoch = steps_per_epoch(n, batch_size)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while step < self.stop:
            epoch, skip = divmod(step, self.per_epoch)
            for batch in batch_indices(*self.args, epoch, self.world, self.rank)[skip:]:
                if step >= self.stop:
                    return
                yield [(epoch, i) for i in batch]
                step += 1


class _Samples(Dataset):
    """``data`` seen through keys ``(epoch, index)``: the sample drawn with its own generator."""

    def __init__(self, data: TrainData, seed: int):
        self.data, self.seed = data, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        return self.data.get(index, sample_generator(self.seed, epoch, index))


def _collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    keys = list(samples[0])
    return {k: torch.stack([s[k] for s in samples]) for k in keys}


def _quiet_worker(_worker_id: int) -> None:
    # The training process handles Ctrl-C; a worker dying of it would stop the loader
    # before the interruption checkpoint is written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --------------------------------------------------------------------------------------
# The CSV log.

class _CsvLog:
    """Rank 0's log: rows appended one flushed write each; ``sync`` before a checkpoint."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.file = None

    def start_fresh(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(",".join(self.columns) + "\n")
        self.file = open(self.path, "a", newline="")

    def resume(self, step: int, log_every: int) -> str | None:
        """Cut the log back to the rows an uninterrupted run has at ``step``: rows before
        it, and the row at it if ``step`` is a row step (a final row of a partial window
        is written again when the window completes). Returns a warning, if any."""
        header = ",".join(self.columns)
        warning, keep = None, []
        if not self.path.is_file():
            warning = f"{self.path}: the log is missing; it restarts at step {step}"
        else:
            lines = self.path.read_text().splitlines(keepends=True)
            if not lines or lines[0].rstrip("\r\n") != header:
                warning = (f"{self.path}: the log's columns are not this run's; "
                           f"it restarts at step {step}")
            else:
                for line in lines[1:]:
                    fields = line.rstrip("\r\n").split(",")
                    if not line.endswith("\n") or len(fields) != len(self.columns):
                        continue  # a row cut short by a crash
                    try:
                        s = int(fields[0])
                    except ValueError:
                        continue
                    if s < step or (s == step and step % log_every == 0):
                        keep.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text(header + "\n" + "".join(keep))
        self.file = open(self.path, "a", newline="")
        return warning

    def write(self, row: dict) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([row[c] for c in self.columns])
        self.file.write(buf.getvalue())
        self.file.flush()

    def sync(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class _Window:
    """Losses accumulated since the last log row (part of the checkpoint, so that a row
    spanning an interruption has the same value as without it)."""

    def __init__(self, sums: dict | None = None, count: int = 0):
        self.sums = dict(sums or {})
        self.count = count
        self.started = time.perf_counter()
        self.samples = 0

    def add(self, losses: dict[str, float], samples: int) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.samples += samples

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def rate(self) -> float:
        secs = time.perf_counter() - self.started
        return self.samples / secs if secs > 0 else 0.0

    def reset(self) -> None:
        self.sums, self.count, self.samples = {}, 0, 0
        self.started = time.perf_counter()

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


# --------------------------------------------------------------------------------------
# Signals.

class _Stop:
    """SIGINT / SIGTERM ask the loop to stop after the current step. The same signal often
    arrives twice within a moment (the terminal's Ctrl-C and torchrun forwarding it); a
    signal more than ``patience`` seconds after the first aborts at once."""

    patience = 3.0

    def __init__(self):
        self.signum: int | None = None
        self.at = 0.0
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None and time.monotonic() - self.at > self.patience:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum, self.at = signum, time.monotonic()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}
        return False


# --------------------------------------------------------------------------------------
# Checkpoints.

def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _plain(obj):
    """JSON round trip, so that tuples and lists (or int keys) compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _read_checkpoint(task: Task, n: int, config: TrainConfig, resume: bool) -> dict | None:
    """The checkpoint to resume from (None: start afresh), checked against this run."""
    out = config.out
    if not out.exists():
        return None
    if not resume:
        raise TrainingError(f"{out}: a checkpoint is already there; resume it (resume=True, "
                            "--resume) or choose another output file")
    ck = load(out, task=task.name)
    if ck.get("format") != CHECKPOINT:
        raise CheckpointError(f"{out}: a weights file, not a checkpoint training can resume")
    old_cfg, new_cfg = _plain(ck.get("task_config")), _plain(task.config())
    if old_cfg != new_cfg:
        keys = sorted(set(old_cfg or {}) | set(new_cfg or {}))
        diff = [k for k in keys if (old_cfg or {}).get(k) != (new_cfg or {}).get(k)]
        shown = ", ".join(f"{k}: {json.dumps((old_cfg or {}).get(k))} in the checkpoint, "
                          f"{json.dumps((new_cfg or {}).get(k))} now" for k in diff[:3])
        raise CheckpointError(f"{out}: cannot resume with another {task.name} configuration ({shown})")
    train_cfg, loop = ck.get("train_config") or {}, ck.get("loop") or {}
    for key, what in (("batch_size", "batch size"), ("seed", "seed")):
        if train_cfg.get(key) != getattr(config, key):
            raise CheckpointError(f"{out}: cannot resume with {what} {getattr(config, key)}; "
                                  f"the checkpoint was trained with {train_cfg.get(key)}")
    if loop.get("samples") != n:
        raise CheckpointError(f"{out}: cannot resume on {n} training samples; the checkpoint "
                              f"was trained on {loop.get('samples')}")
    if (ck.get("rng") or {}).get("scheme") != RNG_SCHEME:
        raise CheckpointError(f"{out}: written by a training loop with other random streams; "
                              "it cannot be resumed exactly")
    if not isinstance(ck.get("step"), int) or not isinstance(ck.get("optimizers"), dict):
        raise CheckpointError(f"{out}: incomplete checkpoint (no step or optimiser state)")
    return ck


def _restore(ck: dict, models: dict, optimizers: dict, path: Path) -> None:
    for kind, have in (("models", models), ("optimizers", optimizers)):
        if set(ck[kind]) != set(have):
            raise CheckpointError(f"{path}: holds {kind} {sorted(ck[kind])}, this task has "
                                  f"{sorted(have)}")
    for name, model in models.items():
        load_state(model, ck["models"][name], path, name)
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(ck["optimizers"][name])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimiser {name!r} does not match this task "
                                  f"({str(e).splitlines()[0][:120]})") from None


# --------------------------------------------------------------------------------------
# The loop.

def _device(config: TrainConfig) -> torch.device:
    if config.device is None:
        return dist.init()
    dev = torch.device(config.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist.local_rank() % max(torch.cuda.device_count(), 1))
    dist.init("nccl" if dev.type == "cuda" else "gloo")
    return dev


def _say(message: str) -> None:
    if dist.is_main():
        from tqdm import tqdm
        tqdm.write(message, file=sys.stderr)


def _everyone(fn):
    """Run ``fn`` on rank 0 only and hand its result, or its exception, to every process
    (so that one bad file stops all processes alike instead of leaving them waiting)."""
    result, error = None, None
    if dist.is_main():
        try:
            result = fn()
        except (TrainingError, CheckpointError) as e:
            error = e
    result, error = dist.broadcast((result, error))
    if error is not None:
        raise error
    return result


def _build(task: Task, dev: torch.device, ck: dict | None, path: Path, world: int):
    """Fresh models (torch seeded first) and optimisers on ``dev``, restored from ``ck``;
    returns (models, optimisers, models as train_step sees them: DDP-wrapped if world > 1)."""
    models = task.build()
    for model in models.values():
        model.to(dev)
    optimizers = task.make_optimizers(models)
    if ck:
        _restore(ck, models, optimizers, path)
    for model in models.values():
        model.train()
    wrapped = {name: _ddp(m, dev) if world > 1 and any(p.requires_grad for p in m.parameters())
               else m for name, m in models.items()}
    return models, optimizers, wrapped


class _Record:
    """Everything the run keeps besides models and optimisers (the loss names, the last
    losses, the log window, the training time), the CSV log, and the checkpoint that holds
    it all. Files are written on rank 0 only."""

    def __init__(self, task: Task, config: TrainConfig, n: int, optimizers: dict, ck: dict | None):
        loop = ck["loop"] if ck else {}
        self.task, self.config, self.n, self.optimizers = task, config, n, optimizers
        self.names: list[str] | None = loop.get("loss_names")
        self.last: dict[str, float] = dict(loop.get("losses") or {})
        window = loop.get("window") or {}
        self.window = _Window(window.get("sums"), window.get("count", 0))
        self.seconds_before = float(loop.get("seconds", 0.0))
        self.t0 = time.perf_counter()
        self.running: dict[str, float] = {}
        self.lr_columns = ["lr"] if len(optimizers) == 1 else [f"lr_{k}" for k in optimizers]
        self.log = _CsvLog(config.log_path, []) if dist.is_main() else None
        if self.log is not None and ck and self.names is not None:
            self.log.columns = self.columns()
            warning = self.log.resume(ck["step"], config.log_every)
            if warning:
                _say(warning)

    def columns(self) -> list[str]:
        return ["step", *self.names, *self.lr_columns, "seconds", "samples_per_s"]

    def start(self) -> None:
        self.t0 = self.window.started = time.perf_counter()

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.t0

    def add(self, step: int, losses: dict[str, float]) -> None:
        self.names, self.last = list(losses), losses
        self.window.add(losses, self.config.batch_size)
        self.running = self.window.means()  # what the bar shows, kept across the row's reset
        if step % self.config.log_every == 0:
            self.row(step)
            self.window.reset()

    def row(self, step: int) -> None:
        if self.log is None or not self.window.count:
            return
        if self.log.file is None:
            self.log.columns = self.columns()
            self.log.start_fresh()
        lrs = [o.param_groups[0]["lr"] for o in self.optimizers.values()]
        self.log.write({"step": step, **{k: f"{v:.8g}" for k, v in self.window.means().items()},
                        **{c: f"{v:.8g}" for c, v in zip(self.lr_columns, lrs)},
                        "seconds": f"{self.seconds():.3f}",
                        "samples_per_s": f"{self.window.rate():.2f}"})

    def checkpoint(self, step: int, models: dict) -> None:
        if not dist.is_main():
            return
        self.log.sync()  # rows up to this step survive a crash from now on
        save({"format": CHECKPOINT, "task": self.task.name, "task_config": self.task.config(),
              "train_config": self.config.to_dict(), "step": step,
              "models": {k: _cpu(unwrap(m).state_dict()) for k, m in models.items()},
              "optimizers": {k: _cpu(o.state_dict()) for k, o in self.optimizers.items()},
              "rng": {"scheme": RNG_SCHEME, "seed": self.config.seed},
              "loop": {"samples": self.n, "world_size": dist.world_size(),
                       "loss_names": self.names, "losses": self.last,
                       "window": self.window.state(), "seconds": self.seconds()}},
             self.config.out)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def train(task: Task, data: TrainData, config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``task`` on ``data`` for ``config.steps`` optimiser steps in all (see the
    module's docstring); ``resume`` continues the checkpoint at ``config.out``.

    Raises :class:`TrainingError` or :class:`~iemlib.checkpoints.CheckpointError` (one
    line, naming the file) when the run cannot start, and :class:`TrainingInterrupted`
    after writing a checkpoint when SIGINT or SIGTERM stopped it."""
    dev = _device(config)
    world, rank = dist.world_size(), dist.rank()
    B, n, out, steps = config.batch_size, len(data), config.out, config.steps
    if B % world:
        raise TrainingError(f"the global batch size {B} does not divide by {world} processes; "
                            f"choose a multiple of {world}")
    if steps_per_epoch(n, B) == 0:
        raise TrainingError(f"{n} training samples are fewer than one batch of {B}")

    ck = _everyone(lambda: _read_checkpoint(task, n, config, resume))
    start = ck["step"] if ck else 0
    if ck and start >= steps:
        _say(f"{out}: already at step {start} (of {steps} asked for); nothing to do")
        return TrainResult(start, start, dict(ck["loop"].get("losses") or {}),
                           checkpoint=out, log=config.log_path)
    if resume:
        _say(f"{out}: resuming at step {start} of {steps}" if ck else
             f"{out}: no checkpoint yet; training from step 0")
    torch.manual_seed(config.seed)
    _, optimizers, models = _build(task, dev, ck, out, world)
    record = _Record(task, config, n, optimizers, ck)

    loader = DataLoader(_Samples(data, config.seed),
                        batch_sampler=_Batches(n, B, config.seed, world, rank, start, steps),
                        num_workers=config.workers, collate_fn=_collate,
                        pin_memory=dev.type == "cuda",
                        worker_init_fn=_quiet_worker if config.workers else None)
    from tqdm import tqdm
    bar = tqdm(total=steps, initial=start, desc=task.name, unit="step", file=sys.stderr,
               disable=not (config.progress and dist.is_main()), dynamic_ncols=True)
    history: list[dict] = []
    step = start
    record.start()
    try:
        with _Stop() as stop:
            for batch in loader:
                batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
                _seed_step(config.seed, step, rank)
                losses = task.train_step(models, optimizers, batch)
                step += 1
                values, stopping = _reduce(task, losses, record.names, stop.signum is not None, dev)
                history.append({"step": step, **values})
                record.add(step, values)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.running.items()}, refresh=False)
                if stopping and step < steps:
                    record.checkpoint(step, models)
                    dist.barrier()  # nobody exits (and gets killed) before the file is whole
                    why = (f"by {signal.Signals(stop.signum).name}" if stop.signum
                           else "by a signal to another process")
                    message = (f"{out}: interrupted {why} at step {step} of {steps}; "
                               "checkpoint written, resume to continue")
                    _say(message)
                    raise TrainingInterrupted(message, stop.signum or signal.SIGTERM)
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < steps:
                    record.checkpoint(step, models)
            record.checkpoint(step, models)  # holds the partial window: see _CsvLog.resume
            record.row(step)
            dist.barrier()
    finally:
        bar.close()
        record.close()
    secs = time.perf_counter() - record.t0
    return TrainResult(start, step, record.last, history, secs,
                       (step - start) * B / secs if secs else 0.0, out, config.log_path)


def _ddp(model: nn.Module, dev: torch.device) -> DistributedDataParallel:
    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _reduce(task: Task, losses, names: list[str] | None, stopping: bool, dev: torch.device):
    """Losses averaged over the processes as floats, and whether any process was asked to
    stop (one all-reduce carries both, so every process stops after the same step)."""
    if not isinstance(losses, dict) or not losses or not all(
            isinstance(v, torch.Tensor) and v.numel() == 1 for v in losses.values()):
        raise TrainingError(f"{task.name}: train_step must return a non-empty dict of 0-d "
                            f"loss tensors, got {type(losses).__name__}")
    if names is not None and list(losses) != names:
        raise TrainingError(f"{task.name}: train_step returned losses {list(losses)}, "
                            f"earlier {names}")
    keys = list(losses)
    vec = torch.stack([losses[k].detach().reshape(()).float().to(dev) for k in keys]
                      + [torch.tensor(float(stopping), device=dev)])
    if dist.active():
        torch.distributed.all_reduce(vec)
        vec[:-1] /= dist.world_size()
    out = vec.tolist()
    return dict(zip(keys, out[:-1])), out[-1] > 0


__all__ = ["TrainConfig", "TrainResult", "TrainData", "Task", "TrainingError",
           "TrainingInterrupted", "train", "unwrap", "sample_generator", "batch_indices",
           "steps_per_epoch", "RNG_SCHEME"]
