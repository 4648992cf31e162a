"""Free-form holes for training inpainters: brush strokes OR'ed with a box, as the
gated-convolution paper's official code draws them (``brush_stroke_mask`` +
``random_bbox``), every length scaled to the image.

One hole, at the official 256 x 256 (lengths scale with the image, see
:class:`HoleConfig`): 1-3 strokes; each of 4-11 vertices from a uniform start, with
steps of length ~ N(R, R / 2) clipped to [0, 2R], R = sqrt(H^2 + W^2) / 8, turning by
angles near 2 pi / 5 (range 2 pi / 15) that alternate a and 2 pi - a; a stroke is drawn
with a width uniform in [12, 40) px and a disc at every vertex. The union with a box of
half the image's sides, shrunk by 0-16 px on each side, placed uniformly. (The official
code also "flips" the stroke image, but discards the flipped copies, so no flip happens
there and none here.)

All randomness comes from the ``torch.Generator`` passed in: the same generator state
gives the same hole, on any machine.

Shapes: :func:`free_form_hole` (1, H, W), :func:`free_form_holes` (N, 1, H, W); float32,
1 = missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class HoleConfig:
    """The generator's settings, in pixels at ``reference`` x ``reference`` (the official
    256); lengths are scaled by (image diagonal) / (reference diagonal), box sides by
    each side over ``reference``.

    strokes, vertices: inclusive ranges of the number of strokes and of vertices.
    mean_angle, angle_range: the turning angles (radians).
    width: [min, max) stroke width.
    box: the box side; box_shrink: the largest shrink of each of its sides."""

    strokes: tuple[int, int] = (1, 3)
    vertices: tuple[int, int] = (4, 11)
    mean_angle: float = 2 * math.pi / 5
    angle_range: float = 2 * math.pi / 15
    width: tuple[float, float] = (12.0, 40.0)
    box: int = 128
    box_shrink: int = 16
    reference: int = 256

    def __post_init__(self):
        for name in ("strokes", "vertices", "width"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range lo <= hi with lo >= 0, got {(lo, hi)}")
        if not 0 < self.box <= self.reference or not 0 <= 2 * self.box_shrink < self.box:
            raise ValueError(f"box {self.box} and box_shrink {self.box_shrink} do not fit "
                             f"a {self.reference} px image")


class Stroke(NamedTuple):
    vertices: list[tuple[int, int]]    # (x, y) pixel coordinates, x along W
    width: int


class HoleShape(NamedTuple):
    """The drawn parameters of one hole (what :func:`render` turns into pixels)."""
    strokes: list[Stroke]
    box: tuple[int, int, int, int]     # top, left, bottom, right (exclusive)


def _generator(rng) -> torch.Generator:
    if isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, int):
        return torch.Generator().manual_seed(rng)
    raise TypeError(f"rng must be a torch.Generator or an int seed, got {type(rng).__name__}")


def sample_hole(height: int, width: int, rng, config: HoleConfig | None = None) -> HoleShape:
    """Draw the strokes and the box of one hole for a ``height`` x ``width`` image."""
    cfg = config or HoleConfig()
    g = _generator(rng)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))

    def integer(lo: int, hi: int) -> int:                      # inclusive range
        return int(torch.randint(lo, hi + 1, (), generator=g))

    scale = math.hypot(height, width) / math.hypot(cfg.reference, cfg.reference)
    radius = math.hypot(height, width) / 8
    strokes = []
    for _ in range(integer(*cfg.strokes)):
        n = integer(*cfg.vertices)
        lo = cfg.mean_angle - uniform(0, cfg.angle_range)
        hi = cfg.mean_angle + uniform(0, cfg.angle_range)
        angles = [2 * math.pi - uniform(lo, hi) if i % 2 == 0 else uniform(lo, hi) for i in range(n)]
        vertices = [(integer(0, width - 1), integer(0, height - 1))]
        for a in angles:
            step = min(max(radius + radius / 2 * float(torch.randn((), generator=g, dtype=torch.float64)),
                           0.0), 2 * radius)
            x = min(max(vertices[-1][0] + step * math.cos(a), 0.0), float(width))
            y = min(max(vertices[-1][1] + step * math.sin(a), 0.0), float(height))
            vertices.append((int(x), int(y)))
        strokes.append(Stroke(vertices, int(uniform(cfg.width[0] * scale, cfg.width[1] * scale))))

    bh = round(height * cfg.box / cfg.reference)
    bw = round(width * cfg.box / cfg.reference)
    top = integer(0, max(height - bh - 1, 0))
    left = integer(0, max(width - bw - 1, 0))
    sh = integer(0, round(height * cfg.box_shrink / cfg.reference))
    sw = integer(0, round(width * cfg.box_shrink / cfg.reference))
    return HoleShape(strokes, (top + sh, left + sw, top + bh - sh, left + bw - sw))


def render(shape: HoleShape, height: int, width: int) -> torch.Tensor:
    """Pixels of a hole: (1, H, W) float32, 1 = missing. A stroke covers every pixel
    within width / 2 of one of its segments (a segment with round ends: the line plus
    the disc at each vertex)."""
    ys = torch.arange(height, dtype=torch.float64).view(height, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, width)
    hole = torch.zeros(height, width, dtype=torch.bool)
    for stroke in shape.strokes:
        v = torch.tensor(stroke.vertices, dtype=torch.float64)          # (K, 2) as (x, y)
        a, d = v[:-1], v[1:] - v[:-1]                                   # segment starts, directions
        ax, ay = a[:, 0].view(-1, 1, 1), a[:, 1].view(-1, 1, 1)
        dx, dy = d[:, 0].view(-1, 1, 1), d[:, 1].view(-1, 1, 1)
        length2 = (dx * dx + dy * dy).clamp_min(1e-12)
        t = (((xs - ax) * dx + (ys - ay) * dy) / length2).clamp(0, 1)  # nearest point's position
        dist2 = (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2
        hole |= (dist2 <= (stroke.width / 2) ** 2).any(0)
    top, left, bottom, right = shape.box
    hole[top:bottom, left:right] = True
    return hole.to(torch.float32).unsqueeze(0)


def free_form_hole(height: int, width: int, rng, config: HoleConfig | None = None) -> torch.Tensor:
    """One free-form hole: (1, H, W) float32, 1 = missing. ``rng``: a torch.Generator
    (or an int seed)."""
    return render(sample_hole(height, width, rng, config), height, width)


def free_form_holes(n: int, height: int, width: int, rng, config: HoleConfig | None = None) -> torch.Tensor:
    """``n`` holes drawn one after another from ``rng``: (N, 1, H, W) float32."""
    g = _generator(rng)
    return torch.stack([free_form_hole(height, width, g, config) for _ in range(n)])


__all__ = ["HoleConfig", "HoleShape", "Stroke", "sample_hole", "render", "free_form_hole",
           "free_form_holes"]
