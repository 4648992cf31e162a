"""Invariant Information Clustering for segmentation (Ji, Henriques & Vedaldi, ICCV 2019).

A network maps every pixel to a distribution over k clusters. It sees each training image
twice, as ``x`` and as a photometrically jittered, randomly flipped copy ``g(x)`` whose
output is flipped back, and maximises the mutual information between the cluster of a
pixel in one view and the clusters of the pixels near it (displacements up to T = 10 in
each direction) in the other:

    P   = sum over images, pixels u and displacements |t|_inf <= T of
          Phi(x)_u Phi(g(x))_{u+t}^T                 (k x k), normalised to sum 1,
    P   = (P + P^T) / 2,  entries clamped at EPS,
    L   = - sum_ij P_ij (log P_ij - lambda log P_i - lambda log P_j),   lambda = 1

which is -I(z, z') for lambda = 1: it rewards clusters that are both predictable from a
pixel's neighbourhood across the two views and used evenly. Two heads share the trunk:
the main head (k clusters) and an over-clustering head (k_over > k), whose extra capacity
helps the trunk learn; both losses are summed each step (IIC alternates the heads by
epoch; with the short runs a CPU allows, a step of each would waste half the steps).
Adam, lr 1e-4.

The trunk is the VGG-style network of the seed blog, with batch norm and ReLU after every
convolution: 3x3 conv w, 3x3 conv 2w, 2x2 max-pool, two 3x3 convs 4w (dilation 2), two
3x3 convs 8w (dilation 2); each head a 1x1 conv to its clusters, bilinearly up-sampled to
the input size (a 1x1 convolution commutes with bilinear up-sampling, so this equals the
blog's up-sample-then-convolve at a quarter of the cost). w = 64 in the blog.

Training is across the images of the set (IIC learns one clustering for a dataset), with
the project's training loop (:mod:`iemlib.training`): checkpoints, exact resume, torchrun.
Evaluation in IIC maps clusters to classes by one Hungarian matching over the whole
evaluation set; here the main head's clusters become foreground / background per image by
the border rule, and the metrics take the better of mask and complement per image, which
is more lenient than one matching for the set (``result.labels`` keeps the network's own
cluster ids, shared by all images, so that the set-level matching can be computed too).

Differences from the IIC authors' code (read, not copied), all deliberate: the trunk is
the seed blog's (the authors' ``SegmentationNet10a`` pads dilated convolutions by 1, so
its maps shrink, has bias-free heads, upsamples probabilities rather than logits, and
starts from Kaiming initialisation); the input is RGB (their COCO-Stuff runs add two Sobel
channels); both heads' losses are summed every step with lambda = 1 (they alternate heads
by epoch, with lambda 1.5 for some main heads); under torchrun each process forms its
joint distribution from its own share of the batch (theirs gathers the whole batch).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..iem import resolve_device
from .base import Clock, MethodResult, as_images, border_rule, training_folder

TASK = "iic"
EPS = sys.float_info.epsilon


@dataclass(frozen=True)
class IICConfig:
    """k, k_over: clusters of the main and the over-clustering head (2 = object and
    background; 10, IIC's five-fold over-clustering); width: w of the trunk (64);
    displacement: T (10); lam: lambda (1); uncollapsed: one joint per displacement (see
    :func:`iic_loss`); lr: Adam's (1e-4); steps, batch_size: training
    length (a GPU setting; on a CPU pass fewer steps and a narrower trunk); jitter: the
    colour jitter of the second view (brightness, contrast, saturation, hue; IIC's 0.4,
    0.4, 0.4, 0.125); flip: probability of the horizontal flip; seed; out_dir: where the
    checkpoint and log go (None: a temporary folder, removed afterwards; a folder
    resumes an interrupted run); device: None for CUDA when present; progress: the
    training bar."""

    k: int = 2
    k_over: int = 10
    width: int = 64
    displacement: int = 10
    lam: float = 1.0
    uncollapsed: bool = False
    lr: float = 1e-4
    steps: int = 5000
    batch_size: int = 16
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.125)
    flip: float = 0.5
    seed: int = 0
    out_dir: str | None = None
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.k < 2 or self.k_over < 2 or self.width < 1 or self.displacement < 0:
            raise ValueError("IIC: k, k_over >= 2, width >= 1 and displacement >= 0 are required")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("IIC: steps and batch_size must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    def net_dict(self) -> dict:
        return {"k": self.k, "k_over": self.k_over, "width": self.width}


def _conv(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class IICNet(nn.Module):
    """Trunk and two heads. (N, 3, H, W) in [-1, 1], H and W even -> logits
    ((N, k, H, W), (N, k_over, H, W))."""

    def __init__(self, k: int = 2, k_over: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(*_conv(3, w), *_conv(w, 2 * w), nn.MaxPool2d(2),
                                   *_conv(2 * w, 4 * w, 2), *_conv(4 * w, 4 * w, 2),
                                   *_conv(4 * w, 8 * w, 2), *_conv(8 * w, 8 * w, 2))
        self.head = nn.Conv2d(8 * w, k, 1)
        self.head_over = nn.Conv2d(8 * w, k_over, 1)

    def _heads(self, x):
        f = self.trunk(x)
        size = x.shape[-2:]
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        return up(self.head(f)), up(self.head_over(f))

    def forward(self, x: torch.Tensor, pair: torch.Tensor | None = None):
        """Logits of both heads for ``x``; given ``pair`` (the second views), the heads of
        each view from its own pass, so that batch norm normalises each view by its own
        statistics (as IIC does), in one call of the module (one call per backward pass
        under DDP)."""
        if pair is None:
            return self._heads(x)
        return self._heads(x), self._heads(pair)


def _mi_loss(joint: torch.Tensor, lam: float) -> torch.Tensor:
    """-sum P (log P - lam log P_i - lam log P_j) of joints (..., k, k), each normalised
    and symmetrised here; (...)."""
    joint = joint / joint.sum((-2, -1), keepdim=True)
    joint = (joint + joint.transpose(-2, -1)) / 2
    pi = joint.sum(-1, keepdim=True).expand_as(joint)
    pj = joint.sum(-2, keepdim=True).expand_as(joint)
    joint, pi, pj = joint.clamp_min(EPS), pi.clamp_min(EPS), pj.clamp_min(EPS)
    return -(joint * (joint.log() - lam * pi.log() - lam * pj.log())).sum((-2, -1))


def iic_loss(p1: torch.Tensor, p2: torch.Tensor, displacement: int = 10, lam: float = 1.0,
             uncollapsed: bool = False) -> torch.Tensor:
    """IIC's segmentation objective for cluster probabilities p1, p2 (N, k, H, W) of two
    aligned views (see the module notes). A scalar; -I(z, z') when lam = 1.

    ``uncollapsed=False``: one joint distribution over every displacement (the paper's
    formula); ``True``: one joint per displacement, the losses averaged (the variant the
    IIC authors' segmentation runs used, ``--use_uncollapsed_loss``)."""
    # P[i, j] for every displacement at once: a convolution whose batch is the k clusters
    # of view 1 and whose filters are the k clusters of view 2, channels = images
    joint = F.conv2d(p1.transpose(0, 1), p2.transpose(0, 1), padding=displacement)   # (k, k, 2T+1, 2T+1)
    if uncollapsed:
        return _mi_loss(joint.permute(2, 3, 0, 1), lam).mean()
    return _mi_loss(joint.sum((2, 3)), lam)


def colour_jitter(x: torch.Tensor, amounts, rng: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of one image (3, H, W) in [-1, 1],
    factors drawn from ``rng`` (brightness / contrast / saturation factors uniform in
    [1 - a, 1 + a]; hue a rotation of the chroma plane by up to +-a of a turn), applied
    in a random order as torchvision's ColorJitter does. Returns (3, H, W) in [-1, 1]."""
    b, c, s, h = amounts
    img = (x + 1) / 2
    u = torch.rand(4, generator=rng)
    order = torch.randperm(4, generator=rng).tolist()
    grey = lambda t: (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]  # noqa: E731
    for op in order:
        if op == 0 and b:
            img = img * (1 - b + 2 * b * u[0])
        elif op == 1 and c:
            img = (img - grey(img).mean()) * (1 - c + 2 * c * u[1]) + grey(img).mean()
        elif op == 2 and s:
            g = grey(img)
            img = (img - g) * (1 - s + 2 * s * u[2]) + g
        elif op == 3 and h:
            angle = (2 * u[3] - 1) * h * 2 * torch.pi
            # rotate the chroma (I, Q) of YIQ: a hue shift that keeps luma
            yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                               device=img.device)
            t = torch.einsum("ij,jhw->ihw", yiq, img)
            cos, sin = torch.cos(angle), torch.sin(angle)
            t = torch.stack([t[0], cos * t[1] - sin * t[2], sin * t[1] + cos * t[2]])
            img = torch.einsum("ij,jhw->ihw", torch.linalg.inv(yiq), t)
        img = img.clamp(0, 1)
    return img * 2 - 1


class PairedViews:
    """Training data: ``{"image": (3, H, W), "pair": jittered and maybe flipped copy,
    "flip": () bool}``, every draw from the sample's own generator."""

    def __init__(self, images: torch.Tensor, jitter=(0.4, 0.4, 0.4, 0.125), flip: float = 0.5):
        self.images = as_images(images).cpu().contiguous()   # samples are made on the CPU
        self.jitter, self.flip = tuple(jitter), flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        x = self.images[index]
        pair = colour_jitter(x, self.jitter, rng)
        flip = bool(torch.rand((), generator=rng) < self.flip)
        return {"image": x, "pair": pair.flip(-1) if flip else pair,
                "flip": torch.tensor(flip)}


@dataclass
class IICTask:
    """The task of :mod:`iemlib.training`: one Adam step on loss = IIC(main) + IIC(over)."""

    net: dict = field(default_factory=lambda: {"k": 2, "k_over": 10, "width": 64})
    displacement: int = 10
    lam: float = 1.0
    lr: float = 1e-4
    uncollapsed: bool = False
    #: the second view's augmentation: not used by the step, but part of what is trained,
    #: so that a resume with other augmentation is refused
    views: dict = field(default_factory=dict)
    name: str = field(default=TASK, init=False)

    def config(self) -> dict:
        return {"net": dict(self.net), "displacement": self.displacement, "lam": self.lam, "lr": self.lr,
                "uncollapsed": self.uncollapsed, "views": dict(self.views)}

    def build(self) -> dict[str, nn.Module]:
        return {"iic": IICNet(**self.net)}

    def make_optimizers(self, models):
        return {"iic": torch.optim.Adam(models["iic"].parameters(), lr=self.lr)}

    def train_step(self, models, optimizers, batch):
        opt = optimizers["iic"]
        opt.zero_grad(set_to_none=True)
        # one call of the (DDP-wrapped) model per backward pass, each view its own pass
        heads1, heads2 = models["iic"](batch["image"], batch["pair"])
        flip = batch["flip"].view(-1, 1, 1, 1)
        losses = {}
        for name, a, b in zip(("main", "over"), heads1, heads2):
            p1, p2 = a.softmax(1), b.softmax(1)
            p2 = torch.where(flip, p2.flip(-1), p2)      # back into the first view's frame
            losses[name] = iic_loss(p1, p2, self.displacement, self.lam, self.uncollapsed)
        loss = losses["main"] + losses["over"]
        loss.backward()
        opt.step()
        return {k: v.detach() for k, v in losses.items()}


def train_net(x: torch.Tensor, cfg: IICConfig, out: Path):
    """Train on the images x (N, 3, H, W); the trained network (eval mode) and the
    training result."""
    from ..checkpoints import load, load_state
    from ..training import TrainConfig, train
    task = IICTask(net=cfg.net_dict(), displacement=cfg.displacement, lam=cfg.lam, lr=cfg.lr,
                   uncollapsed=cfg.uncollapsed, views={"jitter": list(cfg.jitter), "flip": cfg.flip})
    data = PairedViews(x, cfg.jitter, cfg.flip)
    batch = min(cfg.batch_size, len(data))
    tc = TrainConfig(out=out, steps=cfg.steps, batch_size=batch, seed=cfg.seed,
                     checkpoint_every=max(1, min(500, cfg.steps // 4)), log_every=max(1, min(10, cfg.steps)),
                     device=cfg.device, progress=cfg.progress)
    result = train(task, data, tc, resume=True)
    net = IICNet(**cfg.net_dict())
    load_state(net, load(out, task=TASK)["models"]["iic"], out, "iic")
    return net.eval(), result


@torch.no_grad()
def predict(net: IICNet, x: torch.Tensor, dev: torch.device, batch_size: int = 32):
    """Cluster maps of both heads: ((N, H, W), (N, H, W)) int64 on the CPU."""
    net = net.to(dev)
    mains, overs = [], []
    for i in range(0, x.shape[0], batch_size):
        a, b = net(x[i:i + batch_size].to(dev))
        mains.append(a.argmax(1).cpu())
        overs.append(b.argmax(1).cpu())
    return torch.cat(mains), torch.cat(overs)


def segment(x, config: IICConfig | None = None, progress=None, train_images=None) -> MethodResult:
    """Train on ``train_images`` (default: ``x`` itself, IIC's transductive use), then
    cluster ``x``. ``result.labels`` are the main head's clusters, ``info["over_labels"]``
    the over-clustering head's."""
    cfg = config or IICConfig()
    x = as_images(x)
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"IIC needs even image sides (a 2x2 max-pool), got {tuple(x.shape[-2:])}")
    dev = resolve_device(cfg.device)
    clock = Clock(dev)
    train_x = x if train_images is None else as_images(train_images)
    with training_folder(cfg.out_dir, "IIC") as (folder, _):
        net, result = train_net(train_x, cfg, folder / "iic.pt")
    # the cluster ids are the network's own, shared by every image (IIC's clusters are the
    # dataset's), so a dataset-level matching can still be made from them
    main, over = predict(net, x, dev)
    return MethodResult(masks=border_rule(main), labels=main, seconds=clock.seconds(),
                        info={"over_labels": over, "steps": result.step,
                              "losses": result.losses, "train_images": train_x.shape[0],
                              "train_seconds": result.seconds})
