"""Unsupervised image segmentation with Mutual Mean-Teaching (Wu et al.; the MMT seed paper).

Two networks of Kanezaki's architecture (:class:`~iemlib.related.kanezaki.KanezakiNet`),
started from different random weights, are trained on one image, each by the other's
temporal mean (its "mean teacher"). The teachers' labels live in their own label spaces,
so before a network learns from the other's teacher, the teacher's labels are mapped
onto the network's own by the Hungarian algorithm on their overlap matrix (paper Eq. 5:
maximise sum S . D over permutation matrices D; scipy's ``linear_sum_assignment``).

Per iteration (the paper's Algorithm 1), for network a = 1 then 2, with b the other:

    c_b    = argmax f_mean_b(x)                    teacher b's labels
    c'_a   = h_a(c_b)                              aligned to network a's labels
    L_a    = CE(f_a(x), c'_a) + beta L_tv(f_a(x))  (L_tv: Kanezaki 2020's continuity loss)
    theta_a <- SGD step;  theta_mean_a <- alpha theta_mean_a + (1 - alpha) theta_a

The paper's settings: T = 1,000 iterations, q = 100 channels, M = 3 convolutional layers,
alpha = 0.999, SGD lr 0.1, momentum 0.9. It gives no value for beta: 1 is used, the
continuity weight of the code it follows (Kanezaki 2020, demo.py), and L_tv is that code's
mean absolute difference (the paper writes a sum; with beta unstated the scale is a
choice). Algorithm 1 counts t = 2 .. T; T iterations are run here. Network a's labels are
aligned against its *current* arg-max. The result is mean teacher 1's arg-max (mean
teachers are what MMT keeps for inference). There is no stopping rule: every image runs
T iterations.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..iem import resolve_device
from .base import Clock, MethodResult, as_images, border_rule, compact_labels, hungarian_map, per_image
from .kanezaki import KanezakiNet, continuity_loss


@dataclass(frozen=True)
class MMTConfig:
    """channels: q (100); n_conv: M, 3x3 convolutions (3); iters: T per image (1,000);
    alpha: the mean teachers' momentum (0.999); beta: the continuity weight (1, see the
    module notes); lr, momentum: SGD; seed: networks 1 and 2 start from the seeds
    ``seed`` and ``seed + 1`` for every image; device: None for CUDA when present."""

    channels: int = 100
    n_conv: int = 3
    iters: int = 1000
    alpha: float = 0.999
    beta: float = 1.0
    lr: float = 0.1
    momentum: float = 0.9
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.channels < 2 or self.n_conv < 1 or self.iters < 1:
            raise ValueError("MMT: channels >= 2, n_conv >= 1 and iters >= 1 are required")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"MMT: alpha must be in [0, 1), got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _ema(teacher, student, alpha: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s, alpha=1 - alpha)


def fit_one(image: torch.Tensor, cfg: MMTConfig, dev: torch.device) -> torch.Tensor:
    """Both networks and their mean teachers on one image (3, H, W) in [-1, 1]; mean
    teacher 1's final label map (H, W) int64."""
    nets, teachers, opts = [], [], []
    for j in range(2):
        with torch.random.fork_rng(devices=[]):   # seeded, without touching the caller's generator
            torch.manual_seed(cfg.seed + j)
            net = KanezakiNet(cfg.channels, cfg.n_conv)
        net = net.to(dev).train()
        nets.append(net)
        # batch norm stays in training mode (statistics of this image's pixels) in the
        # teachers too, as in the networks they average
        teachers.append(copy.deepcopy(net).requires_grad_(False))
        opts.append(torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum))
    data = ((image + 1) / 2).to(dev)[None]
    q = cfg.channels
    for _ in range(cfg.iters):
        for a in (0, 1):
            b = 1 - a
            with torch.no_grad():
                teacher_labels = teachers[b](data)[0].argmax(0).reshape(-1)
            opts[a].zero_grad(set_to_none=True)
            y = nets[a](data)
            flat = y[0].permute(1, 2, 0).reshape(-1, q)
            own = flat.detach().argmax(1)
            target = hungarian_map(teacher_labels, own, q)[teacher_labels]
            loss = F.cross_entropy(flat, target) + cfg.beta * continuity_loss(y)
            loss.backward()
            opts[a].step()
            _ema(teachers[a], nets[a], cfg.alpha)
    with torch.no_grad():
        return teachers[0](data)[0].argmax(0).cpu()


def segment(x, config: MMTConfig | None = None, progress=None) -> MethodResult:
    """Each image on its own (see the module notes); masks by the border rule."""
    cfg = config or MMTConfig()
    x = as_images(x)
    dev = resolve_device(cfg.device)
    clock = Clock(dev)
    labels = compact_labels(torch.stack(per_image(x, lambda image: fit_one(image, cfg, dev), "MMT", progress)))
    return MethodResult(masks=border_rule(labels), labels=labels, seconds=clock.seconds(),
                        info={"iterations": cfg.iters,
                              "clusters": [int(lab.max()) + 1 for lab in labels]})
