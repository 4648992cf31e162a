"""The methods of the field (iemlib.related): the common result of every method, runs that
repeat under a seed, an easy two-colour image each method must get right, and the pieces
the methods are built from (the border rule, the oracle merge, the Hungarian alignment,
the IIC objective, Kanezaki's superpixel targets, ReDO's networks and collapse restarts),
plus segmenting a folder with them.

Every run is on tiny images (32 x 32; ReDO's 128 x 128 with networks two channels wide) for
a handful of steps on one CPU thread, so the module takes seconds.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from iemlib import related
from iemlib.folder import FolderError
from iemlib.images import UNKNOWN
from iemlib.metrics import evaluate
from iemlib.nets.redo import (Discriminator, NoiseEncoder, RegionGenerator,
                              ReDONetsConfig)
from iemlib.related import TRAIN_STEPS, TRAINS_ON_SET
from iemlib.related.base import (align_labels, border_fraction, border_rule, border_width,
                                 compact_labels, hungarian_map, oracle_merge, overlap_matrix)
from iemlib.related.folder import segment_folder_with
from iemlib.related.iic import IICConfig, IICNet, PairedViews, colour_jitter, iic_loss, train_net
from iemlib.related.kanezaki import (AUTHORS_AREA, KanezakiConfig, KanezakiNet, continuity_loss,
                                     majority, superpixels)
from iemlib.related.redo import ReDOConfig, smaller_region, train_mask_net


# tensors this small are fastest on one thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ helpers
FG_COLOUR = (0.8, -0.6, -0.5)     # red
BG_COLOUR = (-0.5, 0.1, 0.7)      # blue


def disc_mask(h: int = 32, w: int | None = None, radius: float = 12,
              centre: tuple[float, float] | None = None) -> torch.Tensor:
    """(H, W) bool: a disc of ``radius`` (centred unless ``centre`` (row, col) is given)."""
    w = w or h
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def paint(mask: torch.Tensor, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: FG_COLOUR on ``mask``, BG_COLOUR elsewhere, Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    fg = torch.tensor(FG_COLOUR)[:, None, None]
    bg = torch.tensor(BG_COLOUR)[:, None, None]
    x = torch.where(mask, fg, bg) + noise * torch.randn(3, *mask.shape, generator=g)
    return x.clamp(-1, 1).float()


def disc_image(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The easy case: x (1, 3, 32, 32), a radius-12 disc (44 % of the pixels) of one colour on
    another; gt (1, 1, 32, 32) uint8 0 / 1."""
    m = disc_mask()
    return paint(m, seed)[None], m[None, None].to(torch.uint8)


def textured(n: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random colour texture (N, 3, H, W) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return (x / x.abs().amax()).clamp(-1, 1)


def tiny_redo(**changes) -> ReDOConfig:
    """ReDO at its CPU budget, shrunk to a smoke test: networks two channels wide."""
    base = dict(steps=2, eval_every=1, batch_size=2, progress=False, mask_width=8,
                nets=ReDONetsConfig(gen_width=2, disc_width=2, enc_width=2, attention=False))
    return ReDOConfig.cpu(**{**base, **changes})


#: a quick configuration of every method, for 32 x 32 images (ReDO: 128 x 128)
QUICK = {
    "iem": lambda: related.config("iem", iters=5, device="cpu"),
    "grabcut": lambda: related.config("grabcut"),
    "kmeans": lambda: related.config("kmeans"),
    "kanezaki": lambda: related.config("kanezaki", max_iters=3),
    "kanezaki-tip": lambda: related.config("kanezaki-tip", max_iters=3),
    "mmt": lambda: related.config("mmt", iters=2, channels=16),
    "iic": lambda: related.config("iic", steps=2, width=4, batch_size=2, progress=False),
    "redo": tiny_redo,
}


def iou(mask: torch.Tensor, gt: torch.Tensor) -> float:
    """The metrics' IoU (better of mask and 1 - mask) of one image."""
    return float(evaluate(mask.reshape(1, 1, *mask.shape[-2:]),
                          gt.reshape(1, 1, *gt.shape[-2:])).iou[0])


def assert_compact(labels: torch.Tensor) -> None:
    """Each image's ids are exactly 0 .. k-1."""
    for lab in labels:
        ids = torch.unique(lab).tolist()
        assert ids == list(range(len(ids))), ids


# ------------------------------------------------------------- 1. one result for all
def test_quick_configurations_cover_every_method():
    assert set(QUICK) == set(related.METHODS)


@pytest.mark.parametrize("method", related.METHODS)
def test_every_method_returns_boolean_masks_labels_and_time(method):
    if method == "redo":
        x = torch.cat([paint(disc_mask(128, radius=40), s)[None] for s in range(2)])
    else:
        x = torch.cat([disc_image(seed=s)[0] for s in range(2)])
    n, _, h, w = x.shape
    result = related.segment(x, method, QUICK[method]())

    assert result.masks.shape == (n, 1, h, w)
    assert result.masks.dtype == torch.bool
    assert result.seconds > 0
    assert result.seconds_per_image == pytest.approx(result.seconds / n)
    if result.labels is None:
        assert method in ("iem", "grabcut", "redo")
    else:
        assert result.labels.shape == (n, h, w)
        assert result.labels.dtype == torch.int64
        if method == "iic":     # the network's own cluster ids, shared by every image
            assert 0 <= int(result.labels.min()) and int(result.labels.max()) < QUICK["iic"]().k
        else:
            assert_compact(result.labels)
        # the masks of the k-cluster methods are the border rule of their labels
        assert torch.equal(result.masks, border_rule(result.labels))
    if method == "redo":
        assert torch.equal(result.masks, result.info["probabilities"] >= 0.5)
        assert result.info["train_images"] == n
    if method == "iic":
        assert result.info["steps"] == 2
        assert result.info["over_labels"].shape == (n, h, w)
        assert int(result.info["over_labels"].max()) < QUICK["iic"]().k_over


def test_segment_refuses_an_unknown_method_and_bad_shapes():
    x = disc_image()[0]
    with pytest.raises(ValueError, match="unknown method 'sam'"):
        related.segment(x, "sam")
    with pytest.raises(ValueError, match="expected images"):
        related.segment(x[:, :2], "kmeans")
    with pytest.raises(ValueError, match="128 x 128"):
        related.segment(x, "redo", tiny_redo())
    with pytest.raises(ValueError, match="even image sides"):
        related.segment(x[..., :31], "iic", QUICK["iic"]())


# ---------------------------------------------------------------- 2. determinism
@pytest.mark.parametrize("method", ["kmeans", "kanezaki", "kanezaki-tip", "mmt", "iic"])
def test_same_config_twice_gives_the_same_masks_and_labels(method):
    x = torch.cat([textured(1, seed=1), disc_image(seed=2)[0]])
    cfg = {"kmeans": QUICK["kmeans"](),
           "kanezaki": related.config("kanezaki", max_iters=5),
           "kanezaki-tip": related.config("kanezaki-tip", max_iters=5),
           "mmt": related.config("mmt", iters=3, channels=16),
           "iic": related.config("iic", steps=5, width=4, batch_size=2, progress=False)}[method]
    a = related.segment(x, method, cfg)
    b = related.segment(x, method, cfg)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.labels, b.labels)


def test_kanezaki_seed_changes_the_labels_of_a_textured_image():
    x = textured(1, seed=3)
    a = related.segment(x, "kanezaki", related.config("kanezaki", max_iters=5, seed=0))
    b = related.segment(x, "kanezaki", related.config("kanezaki", max_iters=5, seed=1))
    assert not torch.equal(a.labels, b.labels)


# ------------------------------------------------------------- 3. the easy two-colour case
@pytest.mark.parametrize("method, cfg", [
    ("kmeans", lambda: related.config("kmeans")),
    # the default rectangle (8 px in from the edge) would cut the disc, which reaches to 4 px
    ("grabcut", lambda: related.config("grabcut", margin=2)),
    ("kanezaki", lambda: related.config("kanezaki", max_iters=100)),
], ids=["kmeans", "grabcut", "kanezaki"])
def test_two_colour_disc_is_segmented(method, cfg):
    x, gt = disc_image()
    assert 0.4 < float(gt.float().mean()) < 0.5
    result = related.segment(x, method, cfg())
    assert iou(result.masks[0], gt) >= 0.9


@pytest.mark.parametrize("method, cfg", [
    ("kanezaki-tip", lambda: related.config("kanezaki-tip", max_iters=100)),
    ("mmt", lambda: related.config("mmt", iters=30, alpha=0.5)),
], ids=["kanezaki-tip", "mmt"])
def test_two_colour_disc_clusters_respect_the_colour_edge(method, cfg):
    """These over-segment (many clusters), so the border rule may merge them badly; the
    clusters themselves must not cross the disc's edge: their oracle merge finds it."""
    x, gt = disc_image()
    result = related.segment(x, method, cfg())
    assert int(result.labels.max()) + 1 >= 2
    assert iou(oracle_merge(result.labels, gt)[0], gt) >= 0.9


def test_iic_training_lowers_its_loss(tmp_path):
    """A short IIC run on copies of the disc image does not reach the disc (the clusters of
    so short a run follow position as much as colour), but its objective must fall from
    about 0 (an untrained network's clusters carry no information) towards -log 2."""
    x = torch.cat([paint(disc_mask(), s)[None] for s in range(3)])
    cfg = IICConfig(steps=100, width=8, batch_size=2, lr=1e-3, displacement=1,
                    jitter=(0.1, 0.1, 0.1, 0.02), progress=False)
    net, result = train_net(x, cfg, tmp_path / "iic.pt")
    main = [h["main"] for h in result.history]
    over = [h["over"] for h in result.history]
    assert len(main) == 100 and result.step == 100
    assert all(v <= 1e-6 for v in main + over)                 # -I(z, z') <= 0
    assert np.mean(main[:5]) > -0.1
    assert np.mean(main[-10:]) < np.mean(main[:5]) - 0.2
    assert np.mean(over[-10:]) < np.mean(over[:5]) - 0.3
    assert np.mean(main[-10:]) >= -math.log(2) - 1e-4

    # the trained network against a fresh one, on the same pair of views
    views = PairedViews(x, cfg.jitter, cfg.flip)
    batch = [views.get(i, torch.Generator().manual_seed(i)) for i in range(2)]

    def loss_of(model):
        model.train()
        images = torch.stack([b["image"] for b in batch])
        pairs = torch.stack([b["pair"] for b in batch])
        flip = torch.stack([b["flip"] for b in batch]).view(-1, 1, 1, 1)
        with torch.no_grad():
            p1 = model(images)[0].softmax(1)
            p2 = model(pairs)[0].softmax(1)
        p2 = torch.where(flip, p2.flip(-1), p2)
        return float(iic_loss(p1, p2, cfg.displacement, cfg.lam))

    torch.manual_seed(0)
    fresh = IICNet(**cfg.net_dict())
    assert loss_of(net) < loss_of(fresh) - 0.2


# ------------------------------------------------------------------------ 4. Hungarian
def random_labels(k: int, shape=(32, 32), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(k, shape, generator=g)


@pytest.mark.parametrize("k, seed", [(2, 0), (5, 1), (9, 2)])
def test_hungarian_recovers_a_permutation(k, seed):
    original = random_labels(k, seed=seed)
    p = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 100))
    if k > 1 and torch.equal(p, torch.arange(k)):
        p = p.roll(1)
    permuted = p[original]
    inverse = torch.argsort(p)

    perm = hungarian_map(permuted, original, k)
    assert perm.dtype == torch.int64
    assert torch.equal(perm, inverse)
    assert torch.equal(perm[p], torch.arange(k))
    aligned = align_labels(permuted, original, k)
    assert torch.equal(aligned, original)

    # 5 % of the pixels relabelled at random: the permutation still wins
    g = torch.Generator().manual_seed(seed + 200)
    noisy = permuted.clone().reshape(-1)
    idx = torch.randperm(noisy.numel(), generator=g)[: noisy.numel() // 20]
    noisy[idx] = torch.randint(k, (idx.numel(),), generator=g)
    noisy = noisy.reshape(permuted.shape)
    assert (noisy != permuted).any()
    assert torch.equal(hungarian_map(noisy, original, k), inverse)
    assert float((align_labels(noisy, original, k) == original).float().mean()) >= 0.95


def test_overlap_matrix_counts_pixels_per_label_pair():
    k = 4
    source, target = random_labels(k, (2, 9, 7), seed=3), random_labels(k, (2, 9, 7), seed=4)
    s = overlap_matrix(source, target, k)
    brute = torch.zeros(k, k, dtype=torch.int64)
    for a, b in zip(source.reshape(-1).tolist(), target.reshape(-1).tolist()):
        brute[a, b] += 1
    assert s.dtype == torch.int64
    assert torch.equal(s, brute)
    assert int(s.sum()) == source.numel()


# ----------------------------------------------------------------------- 5. border rule
def test_border_width_and_fraction():
    assert border_width(128, 128) == 16
    assert border_width(32, 48) == 4
    assert border_width(5, 5) == 1
    lab = torch.zeros(32, 32, dtype=torch.int64)
    lab[8:24, 8:24] = 1
    share, even = border_fraction(lab)
    band = 32 * 32 - 24 * 24
    assert even == pytest.approx(band / (32 * 32))
    assert share[0].item() == pytest.approx(band / (32 * 32 - 256))
    assert share[1].item() == 0


@pytest.mark.parametrize("square_id", [0, 1])
def test_border_rule_two_clusters_centred_square_is_foreground(square_id):
    lab = torch.full((32, 32), 1 - square_id, dtype=torch.int64)
    lab[10:22, 8:24] = square_id
    masks = border_rule(lab[None])
    assert masks.shape == (1, 1, 32, 32) and masks.dtype == torch.bool
    assert torch.equal(masks[0, 0], lab == square_id)


def test_border_rule_edge_ring_and_an_object_of_two_clusters():
    """A 1-px ring along the image edge (what zero padding makes), the background just
    inside it, an object of two clusters: foreground = exactly the object's two clusters."""
    lab = torch.ones(64, 64, dtype=torch.int64)
    lab[0, :], lab[-1, :], lab[:, 0], lab[:, -1] = 0, 0, 0, 0
    lab[20:32, 20:44] = 2
    lab[32:44, 20:44] = 3
    masks = border_rule(lab[None])
    assert torch.equal(masks[0, 0], (lab == 2) | (lab == 3))


def test_border_rule_single_cluster_is_all_foreground():
    """One cluster spreads evenly (its border share equals the band's), so it counts as
    foreground, and with a single cluster nothing can be made background: every pixel is
    foreground (the metrics' flip makes that the same score as all background)."""
    lab = torch.full((2, 16, 20), 7, dtype=torch.int64)
    masks = border_rule(lab)
    assert masks.shape == (2, 1, 16, 20)
    assert bool(masks.all())


def test_border_rule_with_non_contiguous_ids():
    lab = torch.full((32, 32), 5, dtype=torch.int64)
    lab[8:24, 8:24] = 9
    assert torch.equal(border_rule(lab[None])[0, 0], lab == 9)
    lab2 = torch.where(lab == 9, 5, 9)            # the same partition, ids swapped
    assert torch.equal(border_rule(lab2[None])[0, 0], lab2 == 5)


def test_border_rule_stripes_the_inner_ones_are_foreground():
    """Four vertical stripes: the two outer ones lie mostly in the border band, the inner
    ones less often than an evenly spread cluster but more than half as often, so no
    cluster passes as foreground and the one touching the band least (the first on a tie)
    is foreground. Four concentric square rings of 8 px in 64 x 64: the outer ring is the
    band itself, the inner three never touch it, foreground."""
    lab = (torch.arange(32)[None, :] // 8).expand(32, 32).clone()
    share, even = border_fraction(lab)
    assert even / 2 < float(share[1]) < even < float(share[0])
    assert torch.equal(border_rule(lab[None])[0, 0], lab == 1)
    i = torch.arange(64)
    edge = torch.minimum(torch.minimum(i[:, None], 63 - i[:, None]), torch.minimum(i[None, :], 63 - i[None, :]))
    rings = (edge // 8).clamp(max=3)
    share_r, even_r = border_fraction(rings)
    assert (share_r <= even_r / 2).nonzero().flatten().tolist() == [1, 2, 3]
    assert torch.equal(border_rule(rings[None])[0, 0], rings >= 1)


def test_border_rule_clusters_spread_evenly_still_leave_a_background():
    """A checkerboard: both clusters touch the border exactly as often as an even spread,
    so neither passes as foreground; the rule then makes the one touching it least (the
    first on a tie) foreground, and the other stays background."""
    lab = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).to(torch.int64)
    share, even = border_fraction(lab)
    assert torch.allclose(share, torch.full((2,), even, dtype=share.dtype))
    m = border_rule(lab[None])[0, 0]
    assert torch.equal(m, lab == 0)


def test_compact_labels_renumbers_by_first_appearance():
    lab = torch.tensor([[[7, 7, 3], [3, 9, 7]],
                        [[2, 0, 0], [5, 2, 0]]])
    out = compact_labels(lab)
    assert out.dtype == torch.int64
    assert out.tolist() == [[[0, 0, 1], [1, 2, 0]],
                            [[0, 1, 1], [2, 0, 1]]]
    # equal partitions give equal maps, whatever their ids
    assert torch.equal(compact_labels(lab * 10 + 3), out)


# ----------------------------------------------------------------------- 6. oracle merge
def flip_iou(mask: np.ndarray, gt: np.ndarray) -> float:
    """The metrics' IoU by hand: the better of mask and 1 - mask against the foreground,
    unknown pixels (UNKNOWN) left out."""
    valid = gt != UNKNOWN
    g = (gt == 1) & valid
    best = 0.0
    for m in (mask, ~mask):
        union = ((m | g) & valid).sum()
        best = max(best, float(((m & g) & valid).sum() / union) if union else 0.0)
    return best


def brute_force_oracle_iou(lab: np.ndarray, gt: np.ndarray) -> float:
    """The best IoU the metrics can give a union of whole clusters: every subset of the k
    clusters, each also flipped (what the metrics score too)."""
    ids = np.unique(lab)
    return max(flip_iou(np.isin(lab, subset), gt)
               for r in range(len(ids) + 1) for subset in itertools.combinations(ids, r))


def random_case(seed: int):
    """Random blocky labels (k <= 6) and a random ground truth with unknown pixels."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    small = rng.integers(0, k, (6, 6))
    lab = np.kron(small, np.ones((3, 3), np.int64))               # 18 x 18
    gt = (rng.random(lab.shape) < rng.uniform(0.15, 0.6)).astype(np.uint8)
    gt[rng.random(lab.shape) < 0.1] = UNKNOWN
    return lab, gt


def test_brute_force_oracle_agrees_with_the_metrics():
    """The brute force above scores a mask exactly as iemlib.metrics does."""
    for seed in range(3):
        lab, gt = random_case(seed)
        for subset in ([0], [0, 1], [1], list(range(int(lab.max()) + 1))):
            m = np.isin(lab, subset)
            assert iou(torch.from_numpy(m), torch.from_numpy(gt)) == pytest.approx(flip_iou(m, gt))


def test_oracle_merge_finds_a_union_of_clusters_exactly():
    lab = torch.from_numpy(np.kron(np.arange(16).reshape(4, 4) % 5, np.ones((4, 4), np.int64)))
    gt = ((lab == 1) | (lab == 3)).to(torch.uint8)
    out = oracle_merge(lab[None], gt[None, None])
    assert out.shape == (1, 1, 16, 16) and out.dtype == torch.bool
    assert iou(out[0], gt) == 1.0
    # a boolean ground truth (no unknown pixels) the same
    assert iou(oracle_merge(lab[None], gt.bool()[None])[0], gt) == 1.0


def test_oracle_merge_ignores_unknown_pixels():
    """Cluster 1 is foreground except where the ground truth is unknown: it is chosen, and
    scores an IoU of 1."""
    lab = torch.zeros(16, 16, dtype=torch.int64)
    lab[4:12, 4:12] = 1
    gt = torch.zeros(16, 16, dtype=torch.uint8)
    gt[5:11, 5:11] = 1
    gt[4:12, 4:12][gt[4:12, 4:12] == 0] = UNKNOWN   # the object's rim: unknown
    gt[0, :] = UNKNOWN                               # some background too
    out = oracle_merge(lab[None], gt[None, None])
    assert iou(out[0], gt) == 1.0
    # counted as background, the rim would have kept cluster 1 from a perfect score
    assert iou(out[0], torch.where(gt == UNKNOWN, 0, gt)) < 1.0


def test_oracle_merge_equals_brute_force_over_all_subsets():
    gaps = []
    for seed in range(12):
        lab, gt = random_case(seed)
        out = oracle_merge(torch.from_numpy(lab)[None], torch.from_numpy(gt)[None, None])
        got = iou(out[0], torch.from_numpy(gt))
        best = brute_force_oracle_iou(lab, gt)
        assert got <= best + 1e-9          # never better than the best union of clusters
        gaps.append(best - got)
    assert max(gaps) < 1e-9, [round(g, 3) for g in gaps]


def test_oracle_merge_is_never_below_merging_every_cluster():
    """Four clusters with (object, background) pixel counts as an over-clustering head made
    them: merging all of them scores |object| / |image| = 0.44; the oracle may not do worse."""
    counts = [(115, 177), (27, 6), (16, 36), (22, 10)]
    lab, gt = [], []
    for c, (on_object, on_background) in enumerate(counts):
        lab += [c] * (on_object + on_background)
        gt += [1] * on_object + [0] * on_background
    lab = torch.tensor(lab).reshape(1, 1, -1)
    gt = torch.tensor(gt, dtype=torch.uint8).reshape(1, 1, 1, -1)
    everything = 180 / 409
    assert float(gt.double().mean()) == pytest.approx(everything)
    best = brute_force_oracle_iou(lab[0].numpy(), gt[0, 0].numpy())
    assert best >= everything - 1e-12
    got = iou(oracle_merge(lab, gt)[0], gt[0])
    assert got >= everything - 1e-12
    assert got == pytest.approx(best)


# --------------------------------------------------------------------------- 7. IIC loss
@pytest.mark.parametrize("k", [2, 3, 5])
def test_iic_loss_of_perfect_balanced_clusters_is_minus_log_k(k):
    h, w = 10, 6 * k
    ids = (torch.arange(w) // 6).expand(h, w)                         # k equal stripes
    p = torch.nn.functional.one_hot(ids, k).permute(2, 0, 1)[None].double()
    loss = iic_loss(p, p.clone(), displacement=0)
    assert float(loss) == pytest.approx(-math.log(k), abs=1e-5)


def test_iic_loss_of_independent_random_clusters_is_about_zero():
    g = torch.Generator().manual_seed(0)
    p1 = torch.rand(2, 5, 24, 24, generator=g).softmax(1)
    p2 = torch.rand(2, 5, 24, 24, generator=g).softmax(1)
    loss = float(iic_loss(p1, p2, displacement=2))
    assert -0.05 < loss <= 1e-6


def test_iic_loss_is_symmetric_in_its_arguments():
    """Swapping the views transposes the joint distribution and mirrors the displacements,
    which the symmetrisation and the sum over displacements undo."""
    g = torch.Generator().manual_seed(1)
    # spatially smooth clusters (4 x 4 blocks), the second view a noisy copy of the first
    logits = 3 * torch.randn(2, 4, 4, 4, generator=g).repeat_interleave(4, -1).repeat_interleave(4, -2)
    p1 = logits.softmax(1)
    p2 = (logits + torch.randn(2, 4, 16, 16, generator=g)).softmax(1)
    for t in (0, 1, 3):
        a, b = iic_loss(p1, p2, t), iic_loss(p2, p1, t)
        assert float(a) == pytest.approx(float(b), abs=1e-6)
        assert float(a) < -0.05          # the views share information: not a trivial zero


def test_iic_net_shapes_and_colour_jitter_range():
    net = IICNet(k=3, k_over=7, width=2)
    a, b = net(torch.zeros(2, 3, 16, 12))
    assert a.shape == (2, 3, 16, 12) and b.shape == (2, 7, 16, 12)
    x = paint(disc_mask(), 0)
    y = colour_jitter(x, (0.4, 0.4, 0.4, 0.125), torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert float(y.min()) >= -1 and float(y.max()) <= 1
    assert not torch.allclose(x, y)
    assert torch.allclose(colour_jitter(x, (0, 0, 0, 0), torch.Generator().manual_seed(0)), x, atol=1e-6)


# ---------------------------------------------------------------------- 8. Kanezaki pieces
def test_majority_matches_brute_force():
    rng = np.random.default_rng(0)
    for k, n_sp, n in [(3, 5, 200), (7, 30, 500), (100, 12, 300)]:
        target = rng.integers(0, k, n)
        spx = rng.integers(0, n_sp, n)
        expected = np.empty(n, np.int64)
        for s in np.unique(spx):
            counts = np.bincount(target[spx == s], minlength=k)
            expected[spx == s] = int(np.argmax(counts))          # ties: the smaller label
        got = majority(torch.from_numpy(target), torch.from_numpy(spx), k)
        assert np.array_equal(got.numpy(), expected)


def test_majority_ties_go_to_the_smaller_label():
    target = torch.tensor([4, 2, 2, 4, 1])
    spx = torch.tensor([0, 0, 0, 0, 1])
    assert majority(target, spx, 5).tolist() == [2, 2, 2, 2, 1]


def test_continuity_loss():
    assert float(continuity_loss(torch.full((1, 4, 8, 8), 3.0))) == 0.0
    ramp = torch.arange(8.0).expand(1, 2, 8, 8)              # +1 per column, none per row
    assert float(continuity_loss(ramp)) == pytest.approx(1.0)
    assert float(continuity_loss(ramp.transpose(-1, -2) * 2)) == pytest.approx(2.0)


def test_kanezaki_net_shape_and_config():
    y = KanezakiNet(channels=7, n_conv=3)(torch.rand(2, 3, 9, 11))
    assert y.shape == (2, 7, 9, 11)
    tip = KanezakiConfig.tip()
    assert tip.slic is False and tip.continuity == 1.0
    assert KanezakiConfig().slic is True and KanezakiConfig().continuity == 0.0
    with pytest.raises(ValueError, match="continuity"):
        KanezakiConfig(continuity=-1)


def test_superpixel_count_keeps_the_authors_superpixel_size(monkeypatch):
    import skimage.segmentation

    real = skimage.segmentation.slic
    asked = []

    def spy(image, **kwargs):
        asked.append(kwargs["n_segments"])
        return real(image, **kwargs)

    monkeypatch.setattr(skimage.segmentation, "slic", spy)
    x = textured(1, 128, 128, seed=5)[0]
    spx = superpixels(x, None, 100.0)
    expected = 10000 * 128 * 128 / AUTHORS_AREA
    assert asked == [round(expected)] == [1061]
    assert spx.shape == (128, 128) and spx.dtype == torch.int64
    count = int(torch.unique(spx).numel())
    assert expected / 2 <= count <= expected * 2
    superpixels(textured(1, 32, 48)[0], None, 100.0)
    assert asked[-1] == round(10000 * 32 * 48 / AUTHORS_AREA)
    superpixels(x, 10000, 100.0)
    assert asked[-1] == 10000


# -------------------------------------------------------------------------- 9. ReDO pieces
def test_region_generator_is_zero_outside_a_hard_mask():
    torch.manual_seed(0)
    gen = RegionGenerator(width=2, nz=4, attention=True)
    m = torch.zeros(2, 1, 128, 128)
    m[0, :, 30:90, 20:70] = 1
    m[1, :, :64] = 1
    with torch.no_grad():
        out = gen(m, torch.randn(2, 4))
    assert out.shape == (2, 3, 128, 128)
    assert bool((out[m.expand_as(out) == 0] == 0).all())
    assert float(out[m.expand_as(out) == 1].abs().sum()) > 0
    assert float(out.abs().max()) <= 1


def test_discriminator_and_noise_encoder_shapes():
    cfg = ReDONetsConfig(gen_width=2, disc_width=2, enc_width=2, nz=5, attention=True)
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    d = Discriminator(cfg)(x)
    assert d.shape == (3,)
    z = NoiseEncoder(cfg)(x)
    assert z.shape == (3, 2, 5)


def test_smaller_region():
    assert smaller_region(torch.ones(2, 1, 8, 8)) == 0.0
    assert smaller_region(torch.zeros(2, 1, 8, 8)) == 0.0
    half = torch.zeros(2, 1, 8, 8)
    half[..., :4] = 0.9
    assert smaller_region(half) == 0.5
    quarter = torch.zeros(1, 1, 8, 8)
    quarter[..., :2] = 0.5                                  # >= 0.5 counts as foreground
    assert smaller_region(quarter) == 0.25


def test_train_mask_net_restarts_once_after_an_early_collapse_then_stops(tmp_path):
    """collapse_below 0.49: a smaller region below 49 % counts as collapsed (any untrained
    network's masks); restart_within 1.0 makes every collapse early: the run restarts once
    with the next seed, collapses at its first check again, and stops there."""
    x = torch.cat([paint(disc_mask(128, radius=40), s)[None] for s in range(2)])
    cfg = tiny_redo(steps=3, collapse_below=0.49, restart_within=1.0, max_restarts=1, seed=5)
    said = []
    net, record = train_mask_net(x, cfg, tmp_path, say=said.append)
    assert record["restarts"] == 1
    assert record["seed"] == cfg.seed + 1
    assert record["stopped_early"] is True
    assert len(record["checks"]) == 1 and record["checks"][0][0] == 1     # stopped at step 1
    assert record["checks"][0][1] < 0.49
    assert record["selected_step"] == 1
    assert len(said) == 1 and "restarting with seed 6" in said[0]
    assert (tmp_path / "redo_seed5.pt").is_file() and (tmp_path / "redo_seed6.pt").is_file()
    assert not (tmp_path / "redo_seed7.pt").exists()
    assert not net.training
    assert net(x[:1]).shape == (1, 1, 128, 128)


def test_train_mask_net_without_collapse_runs_every_check(tmp_path):
    x = torch.cat([paint(disc_mask(128, radius=40), s)[None] for s in range(2)])
    cfg = tiny_redo(steps=2, collapse_below=0.0)
    _, record = train_mask_net(x, cfg, tmp_path, say=lambda m: None)
    assert record["restarts"] == 0 and record["seed"] == 0
    assert [s for s, _ in record["checks"]] == [1, 2]
    assert record["selected_step"] == 2 and record["stopped_early"] is False


# ------------------------------------------------------------------------- 10. config
def test_config_unknown_setting_is_named():
    with pytest.raises(ValueError, match="kmeans has no setting bogus"):
        related.config("kmeans", bogus=1)
    with pytest.raises(ValueError, match="alpha_z, bogus"):
        related.config("redo", bogus=1, alpha_z=2)
    with pytest.raises(ValueError, match="unknown method"):
        related.config("nope")


@pytest.mark.parametrize("method", sorted(TRAIN_STEPS))
def test_config_train_steps_sets_the_methods_field(method):
    cfg = related.config(method, train_steps=7)
    assert getattr(cfg, TRAIN_STEPS[method]) == 7
    default = related.config(method)
    others = {k: v for k, v in cfg.to_dict().items() if k != TRAIN_STEPS[method]}
    assert others == {k: v for k, v in default.to_dict().items() if k != TRAIN_STEPS[method]}
    with pytest.raises(ValueError, match="at least 1"):
        related.config(method, train_steps=0)


def test_train_steps_fields_and_set_learners():
    assert TRAIN_STEPS == {"kanezaki": "max_iters", "kanezaki-tip": "max_iters", "mmt": "iters",
                           "iic": "steps", "redo": "steps"}
    assert set(TRAINS_ON_SET) == {"iic", "redo"}
    assert set(TRAIN_STEPS) | {"iem", "grabcut", "kmeans"} == set(related.METHODS)


@pytest.mark.parametrize("method", ["kmeans", "grabcut", "iem"])
def test_config_train_steps_is_ignored_by_methods_that_do_not_train(method):
    assert related.config(method, train_steps=7) == related.config(method)


def test_config_variants():
    tip = related.config("kanezaki-tip")
    assert tip.slic is False and tip.continuity == 1.0
    assert related.config("kanezaki-tip", train_steps=9).max_iters == 9
    assert related.config("kanezaki-tip", continuity=5.0).slic is False
    assert related.config("kanezaki").slic is True
    assert related.config("redo", cpu=True) == ReDOConfig.cpu()
    assert related.config("redo", cpu=True, train_steps=11) == ReDOConfig.cpu(steps=11)
    assert related.config("redo").steps == 50000
    assert related.config("kmeans", cpu=True) == related.config("kmeans")


# ------------------------------------------------------------------ 11. a folder of images
SHAPES = {"a": (40, 32), "b": (32, 48), "c": (36, 36)}      # (width, height)


def ellipse_image(width: int, height: int, seed: int) -> tuple[Image.Image, np.ndarray]:
    """Two colours: an ellipse over the middle half of each side; its mask (H, W) bool."""
    yy, xx = np.mgrid[:height, :width]
    inside = ((yy - (height - 1) / 2) / (0.3 * height)) ** 2 + \
             ((xx - (width - 1) / 2) / (0.3 * width)) ** 2 < 1
    rng = np.random.default_rng(seed)
    arr = np.where(inside[..., None], [200, 60, 50], [50, 110, 210]) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)), inside


@pytest.fixture
def image_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    truth = {}
    for i, (stem, (w, h)) in enumerate(SHAPES.items()):
        img, inside = ellipse_image(w, h, i)
        img.save(src / f"{stem}.png")
        truth[stem] = inside
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return src, truth


def read_binary_mask(path, size) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        assert img.size == size
        arr = np.asarray(img)
    assert set(np.unique(arr).tolist()) <= {0, 255}
    return arr == 255


def test_segment_folder_with_kmeans_writes_masks_skips_and_refuses(image_folder, tmp_path):
    src, truth = image_folder
    out = tmp_path / "out"
    reports = []
    s = segment_folder_with("kmeans", related.config("kmeans"), src, out, size=32,
                            report=lambda kind, message: reports.append((kind, message)))
    assert (s.segmented, s.done_before, s.failed, s.ignored) == (3, 0, 1, 0)
    assert [kind for kind, _ in reports] == ["error"]
    assert "broken.png" in reports[0][1]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["a.png", "b.png", "c.png", "iem.json"]
    for stem, size in SHAPES.items():
        m = read_binary_mask(out / f"{stem}.png", size)
        assert iou(torch.from_numpy(m), torch.from_numpy(truth[stem])) >= 0.9, stem
    settings = json.loads((out / "iem.json").read_text())["settings"]
    assert settings["method"] == "kmeans" and settings["size"] == 32

    # a rerun finds the three masks done (the broken file fails again)
    s = segment_folder_with("kmeans", related.config("kmeans"), src, out, size=32)
    assert (s.segmented, s.done_before, s.failed) == (0, 3, 1)

    # another method refuses to mix its masks with these
    with pytest.raises(FolderError, match="method"):
        segment_folder_with("kanezaki", related.config("kanezaki", max_iters=2), src, out, size=32)
    # ... unless told to redo them
    s = segment_folder_with("kanezaki", related.config("kanezaki", max_iters=2), src, out,
                            size=32, overwrite=True)
    assert (s.segmented, s.done_before, s.failed) == (3, 0, 1)
    assert json.loads((out / "iem.json").read_text())["settings"]["method"] == "kanezaki"


def test_segment_folder_with_iic_trains_on_the_folder_and_cleans_up(image_folder, tmp_path):
    src, _ = image_folder
    out = tmp_path / "out"
    cfg = related.config("iic", train_steps=2, width=4, batch_size=2, displacement=1,
                         progress=False)
    s = segment_folder_with("iic", cfg, src, out, size=32)
    assert (s.segmented, s.done_before, s.failed) == (3, 0, 1)
    for stem, size in SHAPES.items():
        read_binary_mask(out / f"{stem}.png", size)
    assert not (out / ".iem-train-iic").exists()
    settings = json.loads((out / "iem.json").read_text())["settings"]
    assert settings["method"] == "iic" and settings["steps"] == 2 and settings["batch_size"] == 2
    (src / "broken.png").unlink()
    s = segment_folder_with("iic", cfg, src, out, size=32)
    assert (s.segmented, s.done_before, s.failed) == (0, 3, 0)
    assert not (out / ".iem-train-iic").exists()


def test_segment_folder_with_iic_rerun_skips_done_masks_beside_a_bad_file(image_folder, tmp_path):
    src, _ = image_folder
    out = tmp_path / "out"
    cfg = related.config("iic", train_steps=1, width=2, batch_size=2, displacement=1,
                         progress=False)
    s = segment_folder_with("iic", cfg, src, out, size=32)
    assert (s.segmented, s.failed) == (3, 1)
    s = segment_folder_with("iic", cfg, src, out, size=32)
    assert (s.segmented, s.done_before, s.failed) == (0, 3, 1)


def test_redo_rerun_on_its_folder_resumes_after_the_last_check(tmp_path, monkeypatch):
    """A rerun continues from the recorded checks and the saved selection: the same
    record and the same mask network as one uninterrupted run, and a finished run trains
    no further step."""
    from iemlib import training
    from iemlib.related import redo as redo_mod
    x = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = tmp_path / "whole"
    net_a, rec_a = redo_mod.train_mask_net(x, tiny_redo(steps=4, eval_every=2), whole, say=lambda m: None)
    parts = tmp_path / "parts"
    redo_mod.train_mask_net(x, tiny_redo(steps=2, eval_every=2), parts, say=lambda m: None)
    net_b, rec_b = redo_mod.train_mask_net(x, tiny_redo(steps=4, eval_every=2), parts, say=lambda m: None)
    assert [c[0] for c in rec_b["checks"]] == [2, 4]
    assert [c[1] for c in rec_b["checks"]] == pytest.approx([c[1] for c in rec_a["checks"]])
    assert rec_b["selected_step"] == rec_a["selected_step"]
    for (k, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained again")
    monkeypatch.setattr(training, "train", no_training)
    net_c, rec_c = redo_mod.train_mask_net(x, tiny_redo(steps=4, eval_every=2), whole, say=lambda m: None)
    assert [tuple(c) for c in rec_c["checks"]] == [tuple(c) for c in rec_a["checks"]]
    assert rec_c["selected_step"] == rec_a["selected_step"]


def test_redo_refuses_training_images_of_another_size():
    with pytest.raises(ValueError, match="128 x 128"):
        related.segment(torch.zeros(2, 3, 128, 128), "redo", tiny_redo(),
                        train_images=torch.zeros(2, 3, 64, 64))


def test_iic_loss_uncollapsed_is_the_mean_over_displacements():
    g = torch.Generator().manual_seed(3)
    p1 = torch.rand(2, 3, 8, 8, generator=g).softmax(1)
    p2 = torch.rand(2, 3, 8, 8, generator=g).softmax(1)
    from iemlib.related.iic import iic_loss
    assert float(iic_loss(p1, p2, 0, uncollapsed=True)) == pytest.approx(float(iic_loss(p1, p2, 0)), abs=1e-6)
    one = [float(iic_loss(p1, torch.roll(p2, (dy, dx), (2, 3)), 0)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    # with zero padding instead of rolling, the displaced joints differ at the edges: compare loosely
    assert float(iic_loss(p1, p2, 1, uncollapsed=True)) == pytest.approx(np.mean(one), abs=0.05)
