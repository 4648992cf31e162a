"""The methods of IEM's field, each with IEM's signature: images in, masks out.

    from iemlib import related
    result = related.segment(x, "kanezaki")                 # the method's defaults
    result = related.segment(x, "redo", related.config("redo", cpu=True, steps=300))
    result.masks, result.seconds_per_image

=============  ==================================================  ==========================
name           method                                              trains
=============  ==================================================  ==========================
iem            Inpainting Error Maximization (:mod:`iemlib.iem`)   nothing (learning-free)
grabcut        GrabCut from a fixed rectangle (OpenCV)             nothing
kmeans         2-cluster k-means on colour                         nothing
kanezaki       Kanezaki 2018: CNN + SLIC targets                   a network per image
kanezaki-tip   Kim, Kanezaki & Tanaka 2020: + continuity loss      a network per image
mmt            mutual mean-teaching of two Kanezaki networks       two networks per image
iic            Invariant Information Clustering                    one network on the set
redo           ReDO, adversarial redrawing                         four networks on the set
=============  ==================================================  ==========================

:data:`TRAIN_STEPS` names, for every method that trains, the setting that counts its
steps (per-image iterations for the per-image methods), which ``--train-steps`` sets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


from .base import MethodResult, align_labels, border_rule, hungarian_map, oracle_merge

METHODS = ("iem", "grabcut", "kmeans", "kanezaki", "kanezaki-tip", "mmt", "iic", "redo")

#: the config field that ``--train-steps`` overrides, per method that trains
TRAIN_STEPS = {"kanezaki": "max_iters", "kanezaki-tip": "max_iters", "mmt": "iters",
               "iic": "steps", "redo": "steps"}

#: methods that learn from all the images they are given (not image by image)
TRAINS_ON_SET = ("iic", "redo")


@dataclass(frozen=True)
class GrabCutConfig:
    """GrabCut (:func:`iemlib.baselines.grabcut`): the rectangle ("border": the image minus
    ``margin`` pixels; "square": IEM's centred square), OpenCV's iterations, its seed."""

    rect: str = "border"
    margin: int = 8
    iters: int = 5
    seed: int = 0
    device: str | None = None   # GrabCut runs on the CPU; kept so every method takes one

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _config_class(method: str):
    if method == "iem":
        from ..iem import IEMConfig
        return IEMConfig
    if method == "grabcut":
        return GrabCutConfig
    if method == "kmeans":
        from .kmeans import KMeansConfig
        return KMeansConfig
    if method in ("kanezaki", "kanezaki-tip"):
        from .kanezaki import KanezakiConfig
        return KanezakiConfig
    if method == "mmt":
        from .mmt import MMTConfig
        return MMTConfig
    if method == "iic":
        from .iic import IICConfig
        return IICConfig
    if method == "redo":
        from .redo import ReDOConfig
        return ReDOConfig
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def config(method: str, cpu: bool = False, train_steps: int | None = None, **changes):
    """The configuration of ``method``: its defaults (the authors' settings), with
    ``changes``; ``cpu=True`` starts from ReDO's CPU budget (:meth:`ReDOConfig.cpu`);
    ``train_steps`` sets the field named in :data:`TRAIN_STEPS` (and is ignored by the
    methods that do not train). Unknown fields raise a ValueError naming them."""
    cls = _config_class(method)
    if train_steps is not None:
        if train_steps < 1:
            raise ValueError(f"train steps must be at least 1, got {train_steps}")
        if method in TRAIN_STEPS:
            changes[TRAIN_STEPS[method]] = train_steps
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"{method} has no setting {', '.join(unknown)}")
    if method == "kanezaki-tip":
        return cls.tip(**changes)
    if method == "redo" and cpu:
        return cls.cpu(**changes)
    if method == "iem":
        return cls(**changes) if changes else cls()
    return cls(**changes)


def segment(x, method: str, cfg=None, progress=None, train_images=None) -> MethodResult:
    """Segment images ``x`` (N, 3, H, W) in [-1, 1] with ``method`` (see the table above)
    under ``cfg`` (None: :func:`config`'s defaults). ``progress(total, desc)`` makes a
    bar (e.g. :func:`~iemlib.related.base.tqdm_progress`); ``train_images`` lets the
    methods that train on a set train on other images than they segment."""
    from .base import Clock, as_images
    cfg = cfg if cfg is not None else config(method)
    if method == "iem":
        from ..iem import segment as iem_segment
        x = as_images(x)
        clock = Clock(cfg.torch_device())
        r = iem_segment(x, cfg, progress=progress is not None)
        return MethodResult(masks=r.masks.cpu(), seconds=clock.seconds(),
                            info={"inpainting_error": r.inpainting_error.cpu()})
    if method == "grabcut":
        from ..baselines import grabcut
        x = as_images(x)
        clock = Clock()
        masks = grabcut(x, rect=cfg.rect, margin=cfg.margin, iters=cfg.iters, seed=cfg.seed)
        return MethodResult(masks=masks, seconds=clock.seconds())
    if method == "kmeans":
        from . import kmeans as mod
    elif method in ("kanezaki", "kanezaki-tip"):
        from . import kanezaki as mod
    elif method == "mmt":
        from . import mmt as mod
    elif method == "iic":
        from . import iic as mod
        return mod.segment(x, cfg, progress, train_images=train_images)
    elif method == "redo":
        from . import redo as mod
        return mod.segment(x, cfg, progress, train_images=train_images)
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return mod.segment(x, cfg, progress)


__all__ = ["METHODS", "TRAIN_STEPS", "TRAINS_ON_SET", "GrabCutConfig", "MethodResult", "config",
           "segment", "border_rule", "oracle_merge", "align_labels", "hungarian_map"]
