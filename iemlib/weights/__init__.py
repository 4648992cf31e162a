"""Weights trained by this project and shipped with it, each with its provenance.

Every file here was written by ``iem train-inpainter ... --export`` (see the JSON sidecar
beside it: the exact command, the data's file digest, steps, seed, final losses and the
commit that trained it) and its training log (``<name>.log.csv``, the loop's CSV log).
Nothing is downloaded: the files are part of the package.

Names a user may give instead of a path (``--inpainter gatedconv``,
``GatedConvInpainter("gatedconv-l1")``):

* ``gatedconv``: the gated-convolution inpainter trained with L1 + SN-PatchGAN
  (the paper's "GatedConv" rows of Table 6);
* ``gatedconv-l1``: the same network trained with the L1 losses only
  ("GatedConv l1 only", and the network fine-tuned during IEM in the last row).

A path that exists always wins over a name, so a file called ``gatedconv`` in the working
folder is still read as a file.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (weights file, what it is)
SHIPPED: dict[str, tuple[str, str]] = {
    "gatedconv": ("gatedconv_c24_l1_gan.pt", "GatedConv, cnum 24, trained with L1 + SN-PatchGAN"),
    "gatedconv-l1": ("gatedconv_c24_l1.pt", "GatedConv, cnum 24, trained with L1 only"),
}


class MissingWeightsError(FileNotFoundError):
    """A shipped name whose file is not in this installation (one line, naming it)."""


def shipped_path(name: str) -> Path:
    """The file behind a shipped name; :class:`MissingWeightsError` if it is not installed,
    KeyError for an unknown name."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped weights called {name!r}; known: {', '.join(SHIPPED)}")
    path = HERE / SHIPPED[name][0]
    if not path.is_file():
        raise MissingWeightsError(f"{path}: the shipped weights {name!r} are missing from this "
                                  f"installation; retrain them with the command in "
                                  f"{path.name}.json, or give a checkpoint path")
    return path


def resolve(spec) -> Path:
    """A path to weights from a path or a shipped name (an existing path wins)."""
    path = Path(spec)
    if not path.exists() and isinstance(spec, str) and spec in SHIPPED:
        return shipped_path(spec)
    return path


def provenance(name: str) -> dict:
    """The JSON sidecar of a shipped weights file: how it was trained."""
    path = shipped_path(name)
    return json.loads(path.with_name(path.name + ".json").read_text())


def training_log(name: str) -> Path:
    """The CSV log of the run that trained a shipped weights file."""
    path = shipped_path(name)
    return path.with_name(path.name.removesuffix(".pt") + ".log.csv")


__all__ = ["SHIPPED", "MissingWeightsError", "shipped_path", "resolve", "provenance", "training_log"]
