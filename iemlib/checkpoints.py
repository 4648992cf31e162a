"""Checkpoint and weight files of the project's learned networks.

Two formats, both ``torch.save`` dictionaries readable with ``weights_only=True`` (no
pickled code runs when a file is opened):

* a **checkpoint** (``format = "iemlib-checkpoint"``) is everything training needs to
  resume exactly: ``task`` (e.g. "gatedconv", "segnet"), ``task_config`` (JSON-able dict),
  ``train_config``, ``step``, ``models`` ({name: state_dict}), ``optimizers``, ``rng``;
* a **weights file** (``format = "iemlib-weights"``) keeps only ``task``, ``task_config``
  and ``models``, usually in float16 to ship small, with a JSON sidecar ``<file>.json``
  recording its provenance (command, data, steps, seed, final losses, commit).

Both are read by :func:`load`, which turns every problem into one :class:`CheckpointError`
whose message names the file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_path

CHECKPOINT = "iemlib-checkpoint"
WEIGHTS = "iemlib-weights"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file."""


def save(payload: dict, path) -> Path:
    """Write ``payload`` (a dict with at least ``format``, ``task``, ``models``) to ``path``
    atomically: a reader never sees half a file, an interrupted save keeps the old one."""
    path = Path(path)
    for key in ("format", "task", "models"):
        if key not in payload:
            raise ValueError(f"checkpoint payload lacks {key!r}")
    with atomic_path(path) as tmp:
        torch.save({"version": VERSION, **payload}, tmp)
    return path


def load(path, task: str | None = None, map_location="cpu") -> dict:
    """Read a checkpoint or weights file; ``task`` given, refuse a file of another task.

    Raises :class:`CheckpointError` ("<path>: <problem>") for a missing or unreadable file,
    a file that is not one of ours, a newer format version or the wrong task."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch file "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'empty'})") from None
    except Exception as e:  # the unpickler raises many types for foreign files
        raise CheckpointError(f"{path}: not an iemlib checkpoint ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("format") not in (CHECKPOINT, WEIGHTS):
        raise CheckpointError(f"{path}: not an iemlib checkpoint or weights file")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer iemlib (format version "
                              f"{data.get('version')}, this one reads {VERSION})")
    if task is not None and data.get("task") != task:
        raise CheckpointError(f"{path}: holds a {data.get('task')!r} model, expected {task!r}")
    if not isinstance(data.get("models"), dict) or not data["models"]:
        raise CheckpointError(f"{path}: holds no model weights")
    return data


def load_state(module: torch.nn.Module, state: dict, path, name: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming the file when the
    keys or shapes do not match (e.g. a checkpoint of another width). Floating-point
    tensors are cast to the module's own dtype, so float16 weights load into float32."""
    own = module.state_dict()
    cast = {k: v.to(own[k].dtype) if k in own and torch.is_floating_point(v) else v
            for k, v in state.items()}
    try:
        module.load_state_dict(cast)
    except (RuntimeError, KeyError) as e:
        lines = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:3])[:200]
        raise CheckpointError(f"{path}: model {name!r} does not match this network ({detail})") from None


def export_weights(checkpoint, out, provenance: dict, half: bool = True,
                   keep: tuple[str, ...] | None = None) -> Path:
    """Write the models of ``checkpoint`` (a path or a loaded dict) as a weights file
    ``out`` (float16 if ``half``) plus the sidecar ``out.json`` holding ``provenance``.

    ``keep`` names the models to write (None: all). Inference needs fewer than training:
    the gated-convolution inpainter ships its generator without the discriminator, which
    is larger than the generator and used only to train it."""
    data = load(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    if keep is not None:
        missing = sorted(set(keep) - set(data["models"]))
        if missing:
            raise CheckpointError(f"{checkpoint if not isinstance(checkpoint, dict) else 'checkpoint'}: "
                                  f"holds no model {', '.join(map(repr, missing))} "
                                  f"(has {sorted(data['models'])})")
    cast = (lambda t: t.half() if torch.is_floating_point(t) else t) if half else (lambda t: t)
    models = {name: {k: cast(v.detach().cpu()) for k, v in sd.items()}
              for name, sd in data["models"].items() if keep is None or name in keep}
    out = Path(out)
    save({"format": WEIGHTS, "task": data["task"], "task_config": data.get("task_config", {}),
          "models": models}, out)
    meta = {"task": data["task"], "task_config": data.get("task_config", {}),
            "dtype": "float16" if half else "float32", "models": sorted(models), **provenance}
    with atomic_path(sidecar(out)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def sidecar(path) -> Path:
    """The provenance file beside a weights file: ``<name>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


__all__ = ["CHECKPOINT", "WEIGHTS", "CheckpointError", "save", "load", "load_state",
           "export_weights", "sidecar"]
