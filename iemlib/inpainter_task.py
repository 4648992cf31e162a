"""Training the gated-convolution inpainter: a Task and a TrainData for the project's
one training loop (:mod:`iemlib.training`), as the paper's Appendix D trains it.

* :class:`GatedConvTask` (``name = "gatedconv"``): loss ``"l1"`` = L1(coarse) + L1(refined),
  each a mean over all pixels, no discriminator (Table 6's "l1 only" rows); loss
  ``"l1+gan"`` adds the SN-PatchGAN hinge losses: one discriminator step, then one
  generator step on -mean D(completed) + L1(coarse) + L1(refined) (weights 1 : 1 : 1).
  Adam, lr 1e-4, betas (0.5, 0.999) for both networks.
* :class:`HoledImages`: wraps a data source of ``{"image": (3, H, W)}`` samples and adds
  a free-form ``"hole"`` (1, H, W) drawn from the sample's own generator.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .holes import HoleConfig, free_form_hole
from .nets.gatedconv import GatedConvConfig, GatedConvGenerator, SNPatchGAN, channels_last

TASK = "gatedconv"
LOSSES = ("l1", "l1+gan")


@dataclass(frozen=True)
class GatedConvTaskConfig:
    """net: the networks' sizes; loss: "l1" or "l1+gan"; lr, betas: Adam's, for the
    generator and the discriminator alike (the official settings)."""

    net: GatedConvConfig = field(default_factory=GatedConvConfig)
    loss: str = "l1+gan"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)

    def __post_init__(self):
        if not isinstance(self.net, GatedConvConfig):
            raise ValueError(f"net must be a GatedConvConfig, got {type(self.net).__name__}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))

    def to_dict(self) -> dict:
        return {"net": self.net.to_dict(), "loss": self.loss, "lr": self.lr, "betas": list(self.betas)}

    @classmethod
    def from_dict(cls, d: dict) -> "GatedConvTaskConfig":
        """The inverse of :meth:`to_dict`; ValueError on anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"task config must be a dict, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown task config keys {sorted(unknown)}")
        d = dict(d)
        d["net"] = GatedConvConfig.from_dict(d.get("net", {}))
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(str(e)) from None


def _module(m: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


@contextmanager
def _frozen(module: nn.Module):
    """Parameters excluded from the graph built inside the block: the generator's step
    differentiates through the discriminator without touching (or, under DDP, reducing)
    the discriminator's gradients."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 mean relu(1 - D(real)) + 0.5 mean relu(1 + D(fake))."""
    return 0.5 * F.relu(1 - real).mean() + 0.5 * F.relu(1 + fake).mean()


class GatedConvTask:
    """The training protocol's Task for the gated-convolution inpainter.

    ``train_step`` expects ``batch = {"image": (B, 3, H, W) in [-1, 1], "hole": (B, 1, H, W)}``
    (see :class:`HoledImages`) and returns detached 0-d means over this process's samples:
    ``l1_coarse``, ``l1_refined``, ``g`` (the generator's total) and, with the GAN,
    ``g_adv`` and ``d``."""

    name = TASK

    def __init__(self, config: GatedConvTaskConfig | None = None):
        self.cfg = config or GatedConvTaskConfig()

    @classmethod
    def from_config(cls, d: dict) -> "GatedConvTask":
        return cls(GatedConvTaskConfig.from_dict(d))

    def config(self) -> dict:
        return self.cfg.to_dict()

    @property
    def adversarial(self) -> bool:
        return self.cfg.loss == "l1+gan"

    def build(self) -> dict[str, nn.Module]:
        """Fresh networks, weights in channels-last layout (faster; see
        :func:`~iemlib.nets.gatedconv.channels_last`)."""
        models = {"generator": GatedConvGenerator(self.cfg.net)}
        if self.adversarial:
            models["discriminator"] = SNPatchGAN(self.cfg.net)
        return {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}

    def make_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {name: torch.optim.Adam(m.parameters(), lr=self.cfg.lr, betas=self.cfg.betas)
                for name, m in models.items()}

    def train_step(self, models, optimizers, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, hole = channels_last(batch["image"]), channels_last(batch["hole"])
        out = models["generator"](x * (1 - hole), hole)
        losses = {"l1_coarse": (x - out.coarse).abs().mean(),
                  "l1_refined": (x - out.refined).abs().mean()}
        g_loss = losses["l1_coarse"] + losses["l1_refined"]
        if self.adversarial:
            d, opt_d = models["discriminator"], optimizers["discriminator"]
            fake = out.refined_pasted
            # real and fake in one forward pass (one DDP reduction), the generator detached
            scores = d(torch.cat([x, fake.detach()]), torch.cat([hole, hole]))
            real_s, fake_s = scores.chunk(2)
            opt_d.zero_grad(set_to_none=True)
            losses["d"] = hinge_d_loss(real_s, fake_s)
            losses["d"].backward()
            opt_d.step()
            with _frozen(_module(d)) as dm:             # the updated discriminator, held fixed
                losses["g_adv"] = -dm(fake, hole).mean()
            g_loss = g_loss + losses["g_adv"]
        losses["g"] = g_loss
        opt_g = optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {k: v.detach() for k, v in losses.items()}


class HoledImages:
    """TrainData: the samples of ``source`` (anything with ``__len__`` and
    ``get(index, rng) -> {"image": (3, H, W), ...}``) with a free-form ``"hole"``
    (1, H, W) added, drawn from the same per-sample generator after the source's own draws
    (crops, flips), so a sample is a pure function of the generator's seed."""

    def __init__(self, source, holes: HoleConfig | None = None):
        self.source = source
        self.holes = holes or HoleConfig()

    def __len__(self) -> int:
        return len(self.source)

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        sample = dict(self.source.get(index, rng))
        h, w = sample["image"].shape[-2:]
        sample["hole"] = free_form_hole(h, w, rng, self.holes)
        return sample


__all__ = ["TASK", "LOSSES", "GatedConvTaskConfig", "GatedConvTask", "HoledImages", "hinge_d_loss"]
