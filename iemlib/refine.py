"""The refinement phase of the paper (3.3, 4.2): IEM + SegNet, as one configuration.

    protocol = protocol_for("data/weizmann_horse")        # split: 278 train / 49 test
    result = refine(protocol, RefineConfig(), out="runs/horse")
    result.scores["segnet"]                              # {"acc": ..., "iou": ..., "dice": ...}

Stages, each cached in ``out`` so that a rerun resumes where it stopped (a stage whose
inputs or settings changed is computed again, and says so):

1. IEM with the paper's protocol (squares 44, 78, 92, the highest final inpainting error
   per image) on the **training** images (``iem_train.pt``);
2. pseudo-labels: the K masks with the highest final inpainting error (ties broken by
   image order; ``pseudo_labels.json``). The paper keeps 8,000; the default here is
   ``min(8000, available)``, or a fraction of the available masks;
3. ReDO's mask network trained on them with per-pixel binary cross-entropy, Adam, constant
   lr 1e-3, batch 128, 50 epochs, by the project's training loop (checkpoints, exact resume,
   torchrun; ``segnet-<key>-e<epochs>.pt`` and its CSV log). A run of more epochs with
   otherwise the same settings starts from the longest shorter run in ``out`` (its
   checkpoint and log copied, then resumed): the learning rate is constant and every random
   draw is a function of the step, so this is the longer run exactly, and a sweep over
   epochs costs no more than its longest run;
4. its masks on the **test** images, thresholded at 0.5 (``segnet_test-<key>.pt``);
5. IEM on the test images with the same protocol, for the "IEM" row (``iem_test.pt``; the
   training run is reused when training and test images are the same);
6. optionally IEM again, started from the network's masks (the paper's "return to the first
   phase"; ``segnet_iem_test-<key>.pt``).

No ground truth is read before the evaluation: training images are loaded without masks.
Under torchrun every IEM stage is shared over the processes (:mod:`iemlib.sharded`) and the
network is trained with DistributedDataParallel; only rank 0 writes files.

Protocols (:func:`protocol_for`): a separate training folder (``train_dir``); else the set's
own split (Flowers-102 and CUB: ReDO's; a ``test.txt`` in the set folder listing test
image stems, one per line; ``weizmann_horse``: the public copy's 49 test images, packaged);
else transductive: pseudo-labels from all images of the set, evaluated on all of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist
from .atomic import atomic_path
from .data import FolderSet, open_dataset
from .iem import IEMConfig
from .images import ImageError
from .metrics import evaluate
from .sharded import segment_sharded

#: The paper's number of pseudo-labels.
PAPER_TOP = 8000
#: The public Weizmann Horse copy's test images (the other 278 are its training images).
WEIZMANN_TEST = Path(__file__).with_name("sources") / "weizmann_horse_test.txt"


class RefineError(ValueError):
    """Bad input or settings for the refinement phase; the message is one line."""


@dataclass(frozen=True)
class RefineConfig:
    """Every setting of the refinement phase; the defaults are the paper's.

    iem: the IEM protocol of stages 1, 5 and 6 (paper: squares 44, 78, 92, per image).
    top: number of pseudo-labels K: an int, a fraction in (0, 1] of the training images, or
        None for ``min(8000, available)``.
    epochs, batch_size, lr: SegNet training (paper: 50, 128, 1e-3). A batch larger than K
        is cut to K (rounded down to a multiple of the number of processes).
    seed: network initialisation and sample order.
    then_iem: run stage 6.
    threshold: on the network's probabilities (paper: 0.5).
    checkpoint_every: training steps between checkpoints.
    device: for the network (None: CUDA when available); IEM follows ``iem.device``.
    """

    iem: IEMConfig = field(default_factory=IEMConfig.paper)
    top: int | float | None = None
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    then_iem: bool = False
    threshold: float = 0.5
    checkpoint_every: int = 100
    device: str | None = None

    def __post_init__(self):
        if self.top is not None:
            if isinstance(self.top, bool) or not isinstance(self.top, (int, float)):
                raise RefineError(f"top must be a count or a fraction, got {self.top!r}")
            if isinstance(self.top, float) and not 0 < self.top <= 1:
                raise RefineError(f"top as a fraction must be in (0, 1], got {self.top}")
            if isinstance(self.top, int) and self.top < 1:
                raise RefineError(f"top must be at least 1, got {self.top}")
        if self.epochs < 1 or self.batch_size < 1:
            raise RefineError("epochs and batch_size must be at least 1")
        if not 0 < self.threshold < 1:
            raise RefineError(f"threshold must be in (0, 1), got {self.threshold}")

    def pseudo_label_count(self, available: int) -> int:
        """K for ``available`` training masks."""
        if self.top is None:
            return min(PAPER_TOP, available)
        if isinstance(self.top, float):
            return max(1, min(available, round(self.top * available)))
        return min(self.top, available)

    def replace(self, **changes) -> "RefineConfig":
        return dataclasses.replace(self, **changes)


# ----------------------------------------------------------------------------- protocols
@dataclass
class Protocol:
    """Which images train the network and which evaluate it.

    train_x (N, 3, S, S) and train_names: images only (their masks are never loaded);
    test_x (M, 3, S, S), test_y (M, 1, S, S) uint8 ground truth, test_names;
    description: one sentence stated beside every table; transductive: train == test."""

    train_x: torch.Tensor
    train_names: list[str]
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_names: list[str]
    description: str
    transductive: bool

    def head(self, n_train: int, n_test: int | None = None) -> "Protocol":
        """The first ``n_train`` training and ``n_test`` (default ``n_train``) test images,
        in the protocol's order, for a smaller run with the same split (``protocol_for``'s
        ``limit`` cuts the set before splitting, which can leave one side empty). A
        transductive protocol keeps its training and test images the same."""
        n_test = n_train if n_test is None or self.transductive else n_test
        if self.transductive:
            n_train = n_test = min(n_train, n_test)
        if n_train < 1 or n_test < 1:
            raise RefineError(f"head needs at least one image on each side, got {n_train} and {n_test}")
        tr, te = min(n_train, len(self.train_names)), min(n_test, len(self.test_names))
        what = (f"the first {te} of {len(self.test_names)} images" if self.transductive else
                f"the first {tr} of {len(self.train_names)} training and {te} of "
                f"{len(self.test_names)} test images")
        return Protocol(self.train_x[:tr], self.train_names[:tr], self.test_x[:te],
                        self.test_y[:te], self.test_names[:te],
                        f"{self.description}; here {what}", self.transductive)


def _stems(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _split_file(set_dir: Path) -> Path | None:
    if (set_dir / "test.txt").is_file():
        return set_dir / "test.txt"
    if set_dir.name == "weizmann_horse":
        return WEIZMANN_TEST
    return None


def _load_images(ds, indices) -> torch.Tensor:
    """Images only, for training: the ground truth is not even opened (the paper's
    pre-processing, as the set's loader applies it to its images)."""
    from .images import image_to_array, read_image
    try:
        return torch.from_numpy(np.stack([image_to_array(read_image(ds._paths[i][0]), ds.size)
                                          for i in indices]))
    except ImageError as e:
        raise RefineError(str(e)) from None


def protocol_for(set_dir, train_dir=None, limit: int | None = None) -> Protocol:
    """The protocol for a labelled set folder (see the module docstring).

    ``limit``: keep the first N images of the set in file-name order (before splitting)."""
    set_dir = Path(set_dir)
    try:
        ds = open_dataset(set_dir, split="test")
    except ImageError as e:
        raise RefineError(str(e)) from None
    if limit is not None and limit < 1:
        raise RefineError(f"--limit must be at least 1, got {limit}")

    def first(d):
        return list(range(len(d)))[:limit] if limit is not None else list(range(len(d)))

    if train_dir is not None:
        try:
            train = FolderSet(train_dir, require_masks=False)
        except ImageError as e:
            raise RefineError(str(e)) from None
        test_idx, train_idx = first(ds), first(train)
        if not train_idx:
            raise RefineError(f"{train_dir}: no training images")
        train_x = _load_images(train, train_idx)
        x, y = _load_labelled(ds, test_idx)
        return Protocol(train_x, [train.names[i] for i in train_idx], x, y,
                        [ds.names[i] for i in test_idx],
                        f"network trained on the IEM masks of {Path(train_dir).name} "
                        f"({len(train_idx)} images), evaluated on {set_dir.name} ({len(test_idx)})",
                        transductive=False)
    if type(ds).__name__ in ("Flowers102", "CUB200"):
        train = open_dataset(set_dir, split="train")
        test_idx, train_idx = first(ds), first(train)
        x, y = _load_labelled(ds, test_idx)
        return Protocol(_load_images(train, train_idx), [train.names[i] for i in train_idx],
                        x, y, [ds.names[i] for i in test_idx],
                        f"ReDO's split: trained on {len(train_idx)} training images, "
                        f"evaluated on {len(test_idx)} test images", transductive=False)
    idx = first(ds)
    split = _split_file(set_dir)
    if split is not None:
        wanted = set(_stems(split))
        stems = [Path(ds.names[i]).stem for i in idx]
        test_idx = [i for i, s in zip(idx, stems) if s in wanted]
        train_idx = [i for i, s in zip(idx, stems) if s not in wanted]
        if limit is None and len(test_idx) != len(wanted):
            missing = sorted(wanted - set(stems))
            raise RefineError(f"{split}: {len(missing)} listed test images are not in "
                              f"{set_dir} (first: {missing[0]})")
        if test_idx and train_idx:
            x, y = _load_labelled(ds, test_idx)
            return Protocol(_load_images(ds, train_idx), [ds.names[i] for i in train_idx],
                            x, y, [ds.names[i] for i in test_idx],
                            f"the set's split ({split.name}): trained on {len(train_idx)} "
                            f"training images, evaluated on {len(test_idx)} test images",
                            transductive=False)
    x, y = _load_labelled(ds, idx)
    return Protocol(x, [ds.names[i] for i in idx], x, y, [ds.names[i] for i in idx],
                    f"transductive: pseudo-labels from all {len(idx)} images, "
                    f"evaluated on the same {len(idx)}", transductive=True)


def _load_labelled(ds, indices):
    try:
        x, y = ds.load(indices=indices)
    except ImageError as e:
        raise RefineError(str(e)) from None
    if y is None:
        raise RefineError(f"{ds}: no ground-truth masks; refine evaluates against them")
    return x, y


# ----------------------------------------------------------------------------- pipeline
@dataclass
class RefineResult:
    """``scores``: {"iem", "segnet"[, "segnet_iem"]} -> {"acc", "iou", "dice"} (percent);
    ``n`` test images, ``pseudo_labels`` K, ``seconds`` of this call; the masks of every
    row (``masks``), the pseudo-labels' names and errors, and the files written.
    ``steps``: the training's total; ``start_step``: where this call's training started
    (``steps`` when nothing was left to train, 0 for a fresh run)."""

    n: int
    pseudo_labels: int
    seconds: float
    scores: dict
    masks: dict
    protocol: str
    pseudo_label_names: list[str]
    pseudo_label_errors: list[float]
    batch_size: int
    steps: int
    start_step: int = 0
    train_masks: torch.Tensor | None = None
    train_errors: torch.Tensor | None = None
    checkpoint: Path | None = None
    log: Path | None = None


def _key(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _say(message: str) -> None:
    if dist.is_main():
        print(f"refine: {message}", file=sys.stderr, flush=True)


class _Cache:
    """Stage outputs in ``out``: a file is reused only if its key matches."""

    def __init__(self, out: Path):
        self.out = out

    def get(self, name: str, key: str):
        path = self.out / name
        hit = None
        if dist.is_main() and path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(data, dict) and data.get("key") == key:
                    hit = data
                else:
                    _say(f"{path.name}: made with other inputs or settings; computing it again")
            except Exception:
                _say(f"{path.name}: unreadable; computing it again")
        return dist.broadcast(hit)

    def put(self, name: str, key: str, **tensors) -> None:
        if dist.is_main():
            with atomic_path(self.out / name) as tmp:
                torch.save({"key": key, **tensors}, tmp)
        dist.barrier()


def _iem_stage(cache, name, x, names, cfg: IEMConfig, init=None, init_key=None, progress=True):
    key = _key(stage=name, names=names, iem=dataclasses.asdict(cfg), init=init_key)
    hit = cache.get(name, key)
    if hit is not None:
        return hit["masks"], hit["errors"]
    _say(f"IEM on {len(names)} images ({name})")
    res = segment_sharded(x, cfg, init_masks=init, progress=progress)
    cache.put(name, key, masks=res.masks, errors=res.inpainting_error)
    return res.masks, res.inpainting_error


def rank_pseudo_labels(errors: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest errors, highest first; equal errors keep image order."""
    e = torch.as_tensor(errors, dtype=torch.float64)
    order = sorted(range(len(e)), key=lambda i: (-float(e[i]), i))
    return torch.tensor(order[:k], dtype=torch.long)


def _warm_start(out: Path, stem: str, target: Path, steps: int) -> int:
    """Copy the checkpoint (and log) of the run in ``out`` named ``<stem>-e*.pt`` that got
    furthest without passing ``steps`` to ``target``, unless ``target`` exists; returns the
    step it starts from (0: none). Rank 0 only."""
    from .checkpoints import CheckpointError, load

    if target.exists():
        return 0
    best, best_step = None, 0
    for path in sorted(out.glob(f"{stem}-e*.pt")):
        if path == target:
            continue
        try:
            step = load(path, task="segnet").get("step")
        except CheckpointError:
            continue  # a damaged file is not worth starting from
        if isinstance(step, int) and best_step < step <= steps:
            best, best_step = path, step
    if best is None:
        return 0
    for src, dst in ((best, target), (best.with_suffix(".log.csv"), target.with_suffix(".log.csv"))):
        if src.exists():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    _say(f"{target.name}: starting from {best.name} (step {best_step} of {steps})")
    return best_step


def _scores(masks, y) -> dict:
    s = evaluate(masks, y).summary()
    return {k: round(s[k], 3) for k in ("acc", "iou", "dice")}


def refine(protocol: Protocol, config: RefineConfig | None = None, out=None,
           progress: bool = True) -> RefineResult:
    """Run (or resume) the refinement phase; see the module docstring. ``progress``: the
    bars of IEM and of the training on stderr (one line per stage is said either way)."""
    from .segnet_task import MaskedImages, SegNetTask, load_segnet, predict_probabilities
    from .training import TrainConfig, steps_per_epoch, train

    cfg = config or RefineConfig()
    start = time.perf_counter()
    out = Path(out if out is not None else "refine_out")
    if dist.is_main():
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RefineError(f"{out}: cannot create the output folder ({e.strerror})") from None
    dist.barrier()
    cache = _Cache(out)

    # 1-2: IEM on the training images, pseudo-labels by inpainting error
    train_masks, train_err = _iem_stage(cache, "iem_train.pt", protocol.train_x,
                                        protocol.train_names, cfg.iem, progress=progress)
    k = cfg.pseudo_label_count(len(protocol.train_names))
    chosen = rank_pseudo_labels(train_err, k)
    names = [protocol.train_names[i] for i in chosen]
    errs = [float(train_err[i]) for i in chosen]
    if dist.is_main():
        with atomic_path(out / "pseudo_labels.json") as tmp:
            tmp.write_text(json.dumps({"k": k, "names": names, "inpainting_error": errs}, indent=1) + "\n")

    # 3: the network on the pseudo-labels
    world = dist.world_size()
    batch = min(cfg.batch_size, k)
    batch -= batch % world
    if batch < world:
        raise RefineError(f"{k} pseudo-labels cannot be shared by {world} processes")
    steps = cfg.epochs * steps_per_epoch(k, batch)
    task = SegNetTask(lr=cfg.lr)
    base = _key(stage="segnet", names=names, task=task.config(), batch=batch,
                seed=cfg.seed, iem=dataclasses.asdict(cfg.iem))
    tkey = _key(base=base, steps=steps)
    ckpt = out / f"segnet-{base[:8]}-e{cfg.epochs}.pt"
    if dist.is_main():
        _warm_start(out, f"segnet-{base[:8]}", ckpt, steps)
    dist.barrier()
    data = MaskedImages(protocol.train_x[chosen], train_masks[chosen])
    tcfg = TrainConfig(out=ckpt, steps=steps, batch_size=batch, seed=cfg.seed,
                       checkpoint_every=cfg.checkpoint_every, log_every=max(1, steps_per_epoch(k, batch)),
                       device=cfg.device, progress=progress)
    _say(f"SegNet on {k} pseudo-labels: {cfg.epochs} epochs, batch {batch}, {steps} steps -> {ckpt.name}")
    trained = train(task, data, tcfg, resume=ckpt.exists())
    dist.barrier()

    # 4: its masks on the test images
    skey = _key(stage="segnet_test", ckpt=tkey, names=protocol.test_names, t=cfg.threshold)
    hit = cache.get(f"segnet_test-{tkey[:8]}.pt", skey)
    if hit is None:
        net = load_segnet(ckpt, device=tcfg.device or dist.device())
        seg = predict_probabilities(net, protocol.test_x) >= cfg.threshold
        cache.put(f"segnet_test-{tkey[:8]}.pt", skey, masks=seg)
    else:
        seg = hit["masks"]

    # 5: the IEM row on the test images
    if protocol.transductive:
        iem_masks = train_masks
    else:
        iem_masks, _ = _iem_stage(cache, "iem_test.pt", protocol.test_x, protocol.test_names, cfg.iem,
                                  progress=progress)
    masks = {"iem": iem_masks, "segnet": seg}
    # 6: IEM again from the network's masks
    if cfg.then_iem:
        again, _ = _iem_stage(cache, f"segnet_iem_test-{tkey[:8]}.pt", protocol.test_x, protocol.test_names,
                              cfg.iem, init=seg, init_key=skey, progress=progress)
        masks["segnet_iem"] = again
    scores = {name: _scores(m, protocol.test_y) for name, m in masks.items()}
    return RefineResult(n=len(protocol.test_names), pseudo_labels=k,
                        seconds=time.perf_counter() - start, scores=scores, masks=masks,
                        protocol=protocol.description, pseudo_label_names=names,
                        pseudo_label_errors=errs, batch_size=batch, steps=steps,
                        start_step=trained.start_step, train_masks=train_masks, train_errors=train_err, checkpoint=ckpt,
                        log=tcfg.log_path)


__all__ = ["RefineConfig", "RefineError", "RefineResult", "Protocol", "protocol_for",
           "refine", "rank_pseudo_labels", "PAPER_TOP"]
