"""ReDO, unsupervised object segmentation by redrawing (Chen, Artieres & Denoyer, NeurIPS 2019).

A mask network F splits an image into two soft regions, m and 1 - m. A generator per
region redraws that region from noise z (it sees only the mask), the rest of the image is
kept, and a discriminator D must not tell the composite from a real photograph; an
encoder must recover z from a fully generated image, so that no region may be empty:

    fake_k  = G_k(m_k, z_k) + (1 - m_k) . x                  k = 1, 2 (both every step)
    L_G     = - mean D(fake) + lambda_z || E(m G_1 + (1 - m) G_2) - z ||^2    (lambda_z 5)
    L_D     = mean max(0, 1 - D(x_real)) + mean max(0, 1 + D(fake))           (hinge)

One generator step (mask network, generators and encoder together) then one
discriminator step (on composites recomputed with the updated networks, same inputs and
noise, against a second, independent batch of real images; the discriminator scores the
real and the generated images in one call, where the authors make two, which gives its
spectral norms one power iteration per step instead of two). Adam with betas (0, 0.9):
mask network lr 1e-5 with weight decay 1e-4, the others lr 1e-4; orthogonal
initialisation, gain 0.8; batch 20 (the paper 25); the authors train for 50,000 steps
and stop at 20-40k, as the masks later collapse to empty or full. Networks:
:mod:`iemlib.nets.redo`, and :class:`~iemlib.nets.segnet.SegNet` (ReDO's own mask
network) with instance norm.

**Collapse and model selection, without labels.** The authors restart a run whose masks
collapse early, and select checkpoints by the IoU of a labelled validation set. Here
neither step reads a label: every ``eval_every`` steps the mask network segments a fixed
set of (at most 64) training images, and the run counts as collapsed when the smaller
region holds less than ``collapse_below`` (2 %) of their pixels: the authors' measure,
this project's threshold (the authors' automatic restart is off by default, threshold 0,
and looks at a training and a validation batch). A
collapse in the first ``restart_within`` of the steps restarts training with the next
seed (at most ``max_restarts`` times); a later one stops training (early stopping), and
the masks come from the last evaluated checkpoint that had not collapsed.

**Cost.** With the authors' widths one step takes tens of seconds on a 2-core CPU, so
their 50,000 steps (38.7 s a step at their widths here: 22 days) are out of reach there; ``ReDOConfig.cpu()`` is the
budget this project runs on the CPU (narrow networks, fewer steps), and its masks are
those of a model trained far less than ReDO's.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..iem import resolve_device
from ..nets.redo import Discriminator, Generators, NoiseEncoder, ReDONetsConfig, orthogonal_init
from ..nets.segnet import SegNet, SegNetConfig
from .base import Clock, MethodResult, as_images, training_folder

TASK = "redo"


@dataclass(frozen=True)
class ReDOConfig:
    """Every setting; defaults are the authors' (GPU). ``cpu()`` gives this project's
    CPU budget. steps: training steps (50,000); batch_size (20); lambda_z (5); lr,
    lr_mask, weight_decay_mask, betas: Adam's; eval_every: steps between collapse checks
    (500, the authors' checkpoint interval); collapse_below: the smaller region's share of
    pixels below which masks count as collapsed; restart_within: the share of the steps
    in which a collapse restarts training (7,000 of 50,000 in the authors' code);
    max_restarts; seed; out_dir: checkpoints and logs (None: a temporary folder); device;
    progress: the training bar."""

    nets: ReDONetsConfig = field(default_factory=ReDONetsConfig)
    mask_width: int = 64
    steps: int = 50000
    batch_size: int = 20
    lambda_z: float = 5.0
    lr: float = 1e-4
    lr_mask: float = 1e-5
    weight_decay_mask: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    eval_every: int = 500
    collapse_below: float = 0.02
    restart_within: float = 0.14
    max_restarts: int = 3
    seed: int = 0
    out_dir: str | None = None
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError("ReDO: steps, batch_size and eval_every must be positive")
        if not 0 <= self.collapse_below < 0.5:
            raise ValueError(f"ReDO: collapse_below must be in [0, 0.5), got {self.collapse_below}")

    @classmethod
    def cpu(cls, **changes) -> "ReDOConfig":
        """The CPU budget: networks an eighth of the authors' widths (the mask network
        half), no self-attention (at 64 x 64 it takes 85 % of a step's time on a CPU),
        batch 10, 2,000 steps with a check every 200 (0.6 s a step on 2 cores, measured by
        benchmarks/related_speed.py)."""
        base = cls(nets=ReDONetsConfig(gen_width=4, disc_width=8, enc_width=8, attention=False),
                   mask_width=32, steps=2000, batch_size=10, eval_every=200)
        return replace(base, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def masks_of(mask_net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The two soft regions (N, 2, H, W) = [m, 1 - m] of images x."""
    m = mask_net(x)
    return torch.cat([m, 1 - m], 1)


def composites(x, masks, pixels):
    """fake_k = G_k + (1 - m_k) x for each region, flattened: (N R, 3, H, W)."""
    fake = pixels + (1 - masks[:, :, None]) * x[:, None]
    return fake.flatten(0, 1)


@dataclass
class ReDOTask:
    """The task of :mod:`iemlib.training` (models "mask", "gen", "disc", "enc"; losses
    "g", "z", "d")."""

    cfg: dict = field(default_factory=lambda: ReDOConfig().to_dict())
    name: str = field(default=TASK, init=False)

    def _c(self) -> ReDOConfig:
        c = dict(self.cfg)
        c["nets"] = ReDONetsConfig(**c["nets"]) if isinstance(c["nets"], dict) else c["nets"]
        c["betas"] = tuple(c["betas"])
        return ReDOConfig(**c)

    def config(self) -> dict:
        c = self._c()
        return {"nets": c.nets.to_dict(), "mask_width": c.mask_width, "lambda_z": c.lambda_z,
                "lr": c.lr, "lr_mask": c.lr_mask, "weight_decay_mask": c.weight_decay_mask,
                "betas": list(c.betas)}

    def build(self):
        c = self._c()
        models = {"mask": SegNet(SegNetConfig(width=c.mask_width)), "gen": Generators(c.nets),
                  "disc": Discriminator(c.nets), "enc": NoiseEncoder(c.nets)}
        for m in models.values():
            orthogonal_init(m, c.nets.init_gain)
        return models

    def make_optimizers(self, models):
        c = self._c()
        return {"mask": torch.optim.Adam(models["mask"].parameters(), lr=c.lr_mask, betas=c.betas,
                                         weight_decay=c.weight_decay_mask),
                "gen": torch.optim.Adam(models["gen"].parameters(), lr=c.lr, betas=c.betas),
                "enc": torch.optim.Adam(models["enc"].parameters(), lr=c.lr, betas=c.betas),
                "disc": torch.optim.Adam(models["disc"].parameters(), lr=c.lr, betas=c.betas)}

    def train_step(self, models, optimizers, batch):
        c = self._c()
        x, real = batch["image"], batch["real"]
        n = x.shape[0]
        z = torch.randn(n, c.nets.regions, c.nets.nz, device=x.device)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        # generator step: mask network, generators and encoder together
        masks = masks_of(models["mask"], x)
        pixels = models["gen"](masks, z)                            # (N, 2, 3, H, W), masked
        fake = composites(x, masks, pixels)
        loss_g = -models["disc"](fake).mean()
        z_hat = models["enc"](pixels.sum(1))                        # m G_1 + (1 - m) G_2
        loss_z = F.mse_loss(z_hat, z)
        (loss_g + c.lambda_z * loss_z).backward()
        for name in ("mask", "gen", "enc"):
            optimizers[name].step()
        # discriminator step, on composites from the updated networks (same x and z)
        optimizers["disc"].zero_grad(set_to_none=True)
        with torch.no_grad():
            masks = masks_of(models["mask"], x)
            fake = composites(x, masks, models["gen"](masks, z))
        scores = models["disc"](torch.cat([real, fake]))          # one call per backward
        loss_d = F.relu(1 - scores[:n]).mean() + F.relu(1 + scores[n:]).mean()
        loss_d.backward()
        optimizers["disc"].step()
        return {"g": loss_g.detach(), "z": loss_z.detach(), "d": loss_d.detach()}


class RealPairs:
    """Training data: ``{"image": the image to redraw, "real": an independent image for
    the discriminator}``, the second drawn from the sample's own generator."""

    def __init__(self, images: torch.Tensor):
        self.images = as_images(images).cpu().contiguous()   # samples are made on the CPU

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        j = int(torch.randint(len(self), (), generator=rng))
        return {"image": self.images[index], "real": self.images[j]}


@torch.no_grad()
def predict(mask_net: nn.Module, x: torch.Tensor, dev, batch_size: int = 32) -> torch.Tensor:
    """Foreground probabilities m (N, 1, H, W) on the CPU (instance norm: per image)."""
    mask_net = mask_net.to(dev).eval()
    return torch.cat([mask_net(x[i:i + batch_size].to(dev)).float().cpu()
                      for i in range(0, x.shape[0], batch_size)])


def smaller_region(probs: torch.Tensor) -> float:
    """The authors' collapse measure: the smaller of the shares of pixels >= 0.5 and < 0.5."""
    fg = float((probs >= 0.5).float().mean())
    return min(fg, 1 - fg)


def _load_mask(path: Path, task: ReDOTask) -> nn.Module:
    from ..checkpoints import load, load_state
    net = task.build()["mask"]
    load_state(net, load(path, task=TASK)["models"]["mask"], path, "mask")
    return net


def _save_json(path: Path, data: dict) -> None:
    import json

    from .. import distributed as dist
    from ..atomic import atomic_path
    if dist.is_main():
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")


def _save_state(path: Path, net: nn.Module) -> None:
    from .. import distributed as dist
    from ..atomic import atomic_path
    if dist.is_main():
        with atomic_path(path) as tmp:
            torch.save(net.state_dict(), tmp)


def train_mask_net(x: torch.Tensor, cfg: ReDOConfig, folder: Path, say=None):
    """Train with collapse checks (see the module notes). Returns the selected mask
    network and a record {"seed", "restarts", "checks": [(step, smaller region)],
    "selected_step", "stopped_early", "log"}.

    Resumable: each seed's checks so far go to ``redo_seed<S>.checks.json`` and the
    selected mask network to ``redo_seed<S>.best.pt`` beside its checkpoint, so a rerun
    on the same folder continues after the last check (or returns at once when the run
    had ended) and makes the same choices as an uninterrupted run."""
    import json
    import sys

    from ..training import TrainConfig, train
    say = say or (lambda message: print(message, file=sys.stderr))
    dev = resolve_device(cfg.device)
    probe = x[:64]
    data = RealPairs(x)
    batch = min(cfg.batch_size, len(data))
    restarts, seed = 0, cfg.seed
    while True:
        out = folder / f"redo_seed{seed}.pt"
        rec_path, best_path = out.with_suffix(".checks.json"), out.with_suffix(".best.pt")
        task = ReDOTask(cfg=replace(cfg, seed=seed).to_dict())
        rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
        checks = [tuple(c) for c in rec.get("checks", [])]
        best_step, collapsed_at = rec.get("best_step", 0), rec.get("collapsed_at")
        best = None
        if best_step and best_path.is_file():
            best = task.build()["mask"]
            best.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
        step = checks[-1][0] if checks else 0
        while collapsed_at is None and step < cfg.steps:
            step = min(cfg.steps, step + cfg.eval_every)
            tc = TrainConfig(out=out, steps=step, batch_size=batch, seed=seed,
                             checkpoint_every=0, log_every=max(1, min(10, cfg.eval_every)),
                             device=cfg.device, progress=cfg.progress)
            train(task, data, tc, resume=True)
            net = _load_mask(out, task)
            share = smaller_region(predict(net, probe, dev))
            checks.append((step, share))
            if share < cfg.collapse_below:
                collapsed_at = step
            else:
                best, best_step = copy.deepcopy(net), step
                _save_state(best_path, best)
            _save_json(rec_path, {"checks": checks, "best_step": best_step, "collapsed_at": collapsed_at})
        early = collapsed_at is not None and collapsed_at <= cfg.restart_within * cfg.steps
        if early and restarts < cfg.max_restarts:
            say(f"ReDO: masks collapsed at step {collapsed_at} (smaller region "
                f"{checks[-1][1]:.3f}); restarting with seed {seed + 1}")
            restarts, seed = restarts + 1, seed + 1
            continue
        if best is None:   # collapsed at the first check and out of restarts
            best, best_step = _load_mask(out, task), checks[-1][0]
        record = {"seed": seed, "restarts": restarts, "checks": checks, "selected_step": best_step,
                  "stopped_early": collapsed_at is not None, "log": str(out.with_suffix(".log.csv"))}
        return best.eval(), record


def segment(x, config: ReDOConfig | None = None, progress=None, train_images=None) -> MethodResult:
    """Train ReDO on ``train_images`` (default: ``x``), then threshold its masks at 0.5."""
    cfg = config or ReDOConfig()
    x = as_images(x)
    if tuple(x.shape[-2:]) != (128, 128):
        raise ValueError(f"ReDO's networks are built for 128 x 128 images, got {tuple(x.shape[-2:])}")
    dev = resolve_device(cfg.device)
    clock = Clock(dev)
    train_x = x if train_images is None else as_images(train_images)
    if tuple(train_x.shape[-2:]) != (128, 128):
        raise ValueError(f"ReDO's networks are built for 128 x 128 images; the training images "
                         f"are {tuple(train_x.shape[-2:])}")
    with training_folder(cfg.out_dir, "ReDO") as (folder, kept):
        net, record = train_mask_net(train_x, cfg, folder)
    if not kept:
        record["log"] = None
    probs = predict(net, x, dev)
    return MethodResult(masks=probs >= 0.5, seconds=clock.seconds(),
                        info={**record, "train_images": train_x.shape[0], "probabilities": probs})
