"""Training ReDO's mask network on (image, pseudo-label) pairs: the refinement phase's task.

The paper (4.2): per-pixel binary cross-entropy, Adam, constant learning rate 1e-3,
mini-batch 128, 50 epochs. Adam's other settings are not stated; PyTorch's defaults are
used (betas 0.9 / 0.999, eps 1e-8, no weight decay).

Augmentation: the paper names none. :class:`MaskedImages` flips image and mask together
horizontally with probability 1/2, the augmentation that changes neither the images'
pre-processing (the paper's resize and centre crop, already applied) nor what the
pseudo-labels mean; ``flip=False`` turns it off.

    task = SegNetTask()
    data = MaskedImages(x, masks)                 # x (N, 3, 128, 128), masks (N, 1, 128, 128)
    train(task, data, TrainConfig(out="segnet.pt", steps=50 * (len(data) // 128), batch_size=128))
    net = load_segnet("segnet.pt")                # eval mode; net(x) -> probabilities
    probs = predict_probabilities(net, x)         # (N, 1, 128, 128), in batches
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import CheckpointError, load, load_state
from .nets.segnet import SegNet, SegNetConfig


@dataclass
class SegNetTask:
    """The training task of :mod:`iemlib.training` for :class:`~iemlib.nets.segnet.SegNet`.

    Batches are ``{"image": (n, 3, S, S) in [-1, 1], "mask": (n, 1, S, S) float 0 / 1}``;
    the one loss ``"bce"`` is the mean over the batch's pixels."""

    net: SegNetConfig = field(default_factory=SegNetConfig)
    lr: float = 1e-3
    name: str = field(default="segnet", init=False)

    def config(self) -> dict:
        return {"net": self.net.to_dict(), "lr": self.lr}

    @classmethod
    def from_config(cls, config: dict) -> "SegNetTask":
        return cls(net=SegNetConfig(**config["net"]), lr=float(config["lr"]))

    def build(self) -> dict[str, nn.Module]:
        return {"segnet": SegNet(self.net)}

    def make_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        return {"segnet": torch.optim.Adam(models["segnet"].parameters(), lr=self.lr)}

    def train_step(self, models, optimizers, batch) -> dict[str, torch.Tensor]:
        opt = optimizers["segnet"]
        opt.zero_grad(set_to_none=True)
        logits = models["segnet"](batch["image"], logits=True)
        loss = F.binary_cross_entropy_with_logits(logits, batch["mask"])
        loss.backward()
        opt.step()
        return {"bce": loss.detach()}


class MaskedImages:
    """Images and their (pseudo-)masks as training data for :class:`SegNetTask`.

    ``images``: (N, 3, S, S) float in [-1, 1]; ``masks``: (N, 1, S, S) or (N, S, S) with
    values 0 / 1 (bool, integer or float). ``get`` returns ``{"image": (3, S, S) float32,
    "mask": (1, S, S) float32}``, flipped together horizontally with probability 1/2 when
    ``flip``."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, flip: bool = True):
        images, masks = torch.as_tensor(images), torch.as_tensor(masks)
        if masks.dim() == 3:
            masks = masks[:, None]
        if images.dim() != 4 or masks.dim() != 4 or masks.shape[1] != 1:
            raise ValueError(f"expected images (N, C, H, W) and masks (N, 1, H, W), got "
                             f"{tuple(images.shape)} and {tuple(masks.shape)}")
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} "
                             "differ in number or size")
        if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must hold only 0 and 1 (pseudo-labels, no unknown pixels)")
        self.images = images.float().contiguous()
        self.masks = masks.float().contiguous()
        self.flip = flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def get(self, index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        x, m = self.images[index], self.masks[index]
        if self.flip and bool(torch.rand((), generator=rng) < 0.5):
            x, m = x.flip(-1), m.flip(-1)
        return {"image": x, "mask": m}


def load_segnet(path, device=None) -> SegNet:
    """The network of a SegNet checkpoint or weights file, in eval mode, on ``device``
    (None: where it is, the CPU). Raises CheckpointError naming the file on a bad file."""
    data = load(path, task="segnet")
    try:
        task = SegNetTask.from_config(data.get("task_config") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unusable SegNet configuration ({e})") from None
    net = SegNet(task.net)
    if "segnet" not in data["models"]:
        raise CheckpointError(f"{path}: holds no 'segnet' model")
    load_state(net, data["models"]["segnet"], path, "segnet")
    return net.to(device or "cpu").eval()


def predict_probabilities(net: SegNet, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The network's foreground probabilities for images ``x`` (N, C, S, S) in [-1, 1]:
    (N, 1, S, S) float32 on the CPU, computed on the network's device ``batch_size``
    images at a time (instance norm makes each image's output independent of its batch)."""
    dev = next(net.parameters()).device
    with torch.no_grad():
        return torch.cat([net(x[i:i + batch_size].to(dev)).float().cpu()
                          for i in range(0, len(x), batch_size)]) if len(x) else \
            torch.zeros(0, 1, *x.shape[-2:])


__all__ = ["SegNetTask", "MaskedImages", "load_segnet", "predict_probabilities"]
