"""The gated-convolution inpainter: layers against naive versions, contextual attention per
sample, the training task with a stand-in loop, and its use inside IEM (gradient, one
forward pass for both inpaintings, early exit, fine-tuning, checkpoint errors)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from iemlib import IEMConfig, iem_objective, inpainting_error, segment
from iemlib import checkpoints as ck
from iemlib.gatedconv_inpainter import FineTune, GatedConvInpainter
from iemlib.holes import free_form_holes
from iemlib.inpainter_task import GatedConvTask, GatedConvTaskConfig, HoledImages, hinge_d_loss
from iemlib.nets.gatedconv import (ContextualAttention, GatedConv2d, GatedConvConfig,
                                   GatedConvGenerator, SameConv2d, SNPatchGAN, count_parameters,
                                   same_padding)

from conftest import blob_masks

TINY = GatedConvConfig(cnum=4, size=32)
CPU = dict(device="cpu")


def lively(net: torch.nn.Module, seed: int = 0, gain: float = 2.5) -> torch.nn.Module:
    """Re-draw the weights so that activations keep their scale through the depth. At the
    official initialisation a fresh network's output is about 1e-8 everywhere, which
    would make every test of its outputs or gradients vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, SameConv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * gain / math.sqrt(fan_in))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
    return net


def tiny_net(seed: int = 0, gain: float = 2.5) -> GatedConvGenerator:
    return lively(GatedConvGenerator(TINY), seed, gain)


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images in [-1, 1] with a non-zero mean: (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, size // 8, size // 8, generator=g)
    return 0.4 + 0.5 * torch.tanh(F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False))


# ------------------------------------------------------------------------ gated convolution
@pytest.mark.parametrize("k, stride, dilation, size", [(3, 1, 1, 9), (5, 1, 1, 8), (3, 2, 1, 8),
                                                      (3, 2, 1, 9), (3, 1, 4, 8)])
def test_gated_conv_against_a_naive_one(k, stride, dilation, size):
    torch.manual_seed(0)
    layer = GatedConv2d(5, 6, k, stride, dilation)
    x = torch.randn(2, 5, size, size)
    # TensorFlow's SAME: output ceil(n / stride); the odd pixel of padding goes after
    total = max((math.ceil(size / stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    xp = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
    full = F.conv2d(xp, layer.conv.weight, layer.conv.bias, stride, 0, dilation)   # 6 filters
    expected = F.elu(full[:, :3]) * torch.sigmoid(full[:, 3:])     # first half x gate of the second
    out = layer(x)
    assert out.shape == (2, 3, math.ceil(size / stride), math.ceil(size / stride))
    assert layer.out_channels == 3
    torch.testing.assert_close(out, expected)
    cl = layer(x.contiguous(memory_format=torch.channels_last))    # the inpainter's layout
    torch.testing.assert_close(cl, expected)


def test_relu_gate_and_bad_filters():
    torch.manual_seed(0)
    layer = GatedConv2d(2, 4, 3, activation="relu")
    x = torch.randn(1, 2, 8, 8)
    y = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    torch.testing.assert_close(layer(x), F.relu(y[:, :2]) * torch.sigmoid(y[:, 2:]))
    with pytest.raises(ValueError, match="even"):
        GatedConv2d(2, 5)
    assert same_padding(8, 3, 2, 1) == (0, 1) and same_padding(8, 3, 1, 16) == (16, 16)


def official_count(c: int) -> tuple[int, int]:
    """Parameters of the official layer list (kernel, input channels, filters), counted by
    hand: conv weights k*k*in*F plus F biases; a gated layer outputs F / 2 channels."""
    def n(layers):
        return sum(k * k * cin * f + f for k, cin, f in layers)
    decoder = lambda cin: [(3, cin, 4 * c), (3, 2 * c, 4 * c), (3, 2 * c, 2 * c), (3, c, 2 * c),
                           (3, c, c), (3, c // 2, c // 2), (3, c // 4, 3)]
    dilated = [(3, 2 * c, 4 * c)] * 4
    coarse = ([(5, 5, c), (3, c // 2, 2 * c), (3, c, 2 * c), (3, c, 4 * c), (3, 2 * c, 4 * c),
               (3, 2 * c, 4 * c)] + dilated + decoder(2 * c))
    conv_branch = [(5, 3, c), (3, c // 2, c), (3, c // 2, 2 * c), (3, c, 2 * c), (3, c, 4 * c),
                   (3, 2 * c, 4 * c)] + dilated
    attention_branch = [(5, 3, c), (3, c // 2, c), (3, c // 2, 2 * c), (3, c, 4 * c),
                        (3, 2 * c, 4 * c), (3, 2 * c, 4 * c), (3, 2 * c, 4 * c), (3, 2 * c, 4 * c)]
    return n(coarse), n(conv_branch + attention_branch + decoder(4 * c))


@pytest.mark.parametrize("cnum", [48, 24, 8])
def test_parameter_counts(cnum):
    net = GatedConvGenerator(GatedConvConfig(cnum=cnum))
    assert (count_parameters(net.coarse), count_parameters(net.refine)) == official_count(cnum)
    if cnum == 48:     # the published 1.63M coarse, 2.42M refinement
        assert round(count_parameters(net.coarse) / 1e6, 2) == 1.63
        assert round(count_parameters(net.refine) / 1e6, 2) == 2.42


def test_generator_outputs_and_pasting():
    net = tiny_net()
    x = smooth_images(2, 32)
    hole = free_form_holes(2, 32, 32, 0)
    out = net(x * (1 - hole), hole)
    for t in (out.coarse, out.refined, out.coarse_pasted, out.refined_pasted):
        assert t.shape == (2, 3, 32, 32) and t.abs().max() <= 1
    keep = hole.bool().expand_as(x)
    assert torch.equal(out.coarse_pasted[~keep], x[~keep]) and torch.equal(out.coarse_pasted[keep], out.coarse[keep])
    assert torch.equal(out.refined_pasted[keep], out.refined[keep])
    coarse_only = net(x * (1 - hole), hole, coarse_only=True)
    assert coarse_only.refined is None and torch.equal(coarse_only.coarse, out.coarse)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 3, 28, 32), torch.zeros(1, 1, 28, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        GatedConvConfig(cnum=6)


def test_discriminator_shape_and_spectral_norm():
    torch.manual_seed(0)
    d = SNPatchGAN(GatedConvConfig(cnum=4))                     # widths 5, 10, 20, 20, 20, 20
    x, hole = torch.randn(3, 3, 64, 64), torch.zeros(3, 1, 64, 64)
    for _ in range(30):                                          # power iterations converge
        out = d(x, hole)
    assert out.shape == (3, 20)
    convs = [m for m in d.modules() if isinstance(m, SameConv2d)]
    assert [m.out_channels for m in convs] == [5, 10, 20, 20, 20, 20]
    for m in convs:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1) < 0.05


# ---------------------------------------------------------------- contextual attention
def naive_attention(f: torch.Tensor, hole: torch.Tensor, scale: float = 10.0):
    """Contextual attention at rate 2, 3 x 3 patches, fuse 3, written with explicit loops
    over samples, queries and patches. f (N, C, h, w), hole (N, 1, h, w)."""
    n, c, h, w = f.shape
    hs, ws = h // 2, w // 2
    P = hs * ws
    out = torch.zeros_like(f)
    weights = torch.zeros(n, hs, ws, hs, ws, dtype=f.dtype)
    for i in range(n):
        small = F.pad(f[i, :, ::2, ::2], (1, 1, 1, 1))
        hsmall = F.pad((hole[i, 0, ::2, ::2] > 0.5).float(), (1, 1, 1, 1))
        nb = lambda y, x: small[:, y:y + 3, x:x + 3]             # the neighbourhood of (y, x)
        score = torch.zeros(P, P, dtype=f.dtype)                  # row-major (query, patch)
        for q in range(P):
            for p in range(P):
                patch = nb(p // ws, p % ws)
                score[q, p] = (nb(q // ws, q % ws) * patch).sum() / max(float(patch.norm()), 1e-4)

        def diagonal_sum(s):
            t = torch.zeros_like(s)
            for a in range(P):
                for b in range(P):
                    for d in (-1, 0, 1):
                        if 0 <= a + d < P and 0 <= b + d < P:
                            t[a, b] += s[a + d, b + d]
            return t
        fused = diagonal_sum(score)
        col = lambda k: (k % ws) * hs + k // ws                   # column-major index
        perm = torch.tensor([col(k) for k in range(P)])
        by_col = torch.zeros_like(fused)
        by_col[perm.view(-1, 1), perm.view(1, -1)] = fused
        fused = diagonal_sum(by_col)[perm.view(-1, 1), perm.view(1, -1)]
        valid = torch.tensor([float(hsmall[p // ws:p // ws + 3, p % ws:p % ws + 3].sum() == 0)
                              for p in range(P)], dtype=f.dtype)
        att = torch.softmax(fused * valid * scale, dim=1) * valid
        weights[i] = att.view(hs, ws, hs, ws)
        big = F.pad(f[i], (1, 1, 1, 1))
        acc = torch.zeros(c, h + 2, w + 2, dtype=f.dtype)
        for q in range(P):
            qy, qx = divmod(q, ws)
            for p in range(P):
                py, px = divmod(p, ws)
                acc[:, 2 * qy:2 * qy + 4, 2 * qx:2 * qx + 4] += att[q, p] * big[:, 2 * py:2 * py + 4, 2 * px:2 * px + 4]
        out[i] = acc[:, 1:h + 1, 1:w + 1] / 4
    return out, weights


def two_holes(h=8, w=8):
    hole = torch.zeros(2, 1, h, w)
    hole[0, :, 0:4, 0:4] = 1           # top-left for sample 0
    hole[1, :, 4:8, 2:8] = 1           # bottom for sample 1
    return hole


def test_contextual_attention_against_a_naive_loop():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    hole = two_holes()
    out, att = ContextualAttention()(f, hole, return_attention=True)
    exp_out, exp_att = naive_attention(f, hole)
    torch.testing.assert_close(att, exp_att)
    torch.testing.assert_close(out, exp_out)


def test_each_sample_attends_only_outside_its_own_hole():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 8, 8)
    hole = two_holes()
    _, att = ContextualAttention()(f, hole, return_attention=True)        # (2, 4, 4, 4, 4)
    small = hole[:, :, ::2, ::2]
    touched = F.max_pool2d(small, 3, 1, 1)[:, 0] > 0                       # patch meets the hole
    for i in range(2):
        assert (att[i][..., touched[i]] == 0).all()
        mass = att[i][..., ~touched[i]].sum(-1)           # every query copies from outside
        assert (mass > 0.5).all() and (mass <= 1 + 1e-6).all()
    assert not torch.equal(touched[0], touched[1])          # the two samples differ
    # a hole everywhere leaves nothing to copy: zeros, not NaN
    out = ContextualAttention()(f, torch.ones(2, 1, 8, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_one_sample_never_changes_another():
    net = tiny_net()
    x = smooth_images(3, 32)
    hole = free_form_holes(3, 32, 32, 1)
    base = net(x * (1 - hole), hole).refined
    x2, hole2 = x.clone(), hole.clone()
    x2[0] = -x2[0]
    hole2[0] = free_form_holes(1, 32, 32, 7)[0]          # sample 0's own, different hole
    out = net(x2 * (1 - hole2), hole2).refined
    assert not torch.allclose(out[0], base[0], atol=1e-3)
    torch.testing.assert_close(out[1:], base[1:], rtol=0, atol=1e-6)


# ------------------------------------------------------------------- the training task
class Images:
    """A data source of the protocol: a few fixed images, a random flip from the rng."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def get(self, index, rng):
        flip = bool(torch.rand((), generator=rng) < 0.5)
        return {"image": self.x[index].flip(-1) if flip else self.x[index]}


def stand_in_loop(task, data, steps, batch_size=4, seed=0):
    """The protocol's loop in a few lines: seeded build, per-sample generators that are a
    function of (seed, step, index), stacked batches, one train_step per step."""
    torch.manual_seed(seed)
    models = task.build()
    optimizers = task.make_optimizers(models)
    log = []
    for step in range(steps):
        idx = [(step * batch_size + j) % len(data) for j in range(batch_size)]
        samples = [data.get(i, torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + i)) for i in idx]
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        log.append(task.train_step(models, optimizers, batch))
    return models, log


def test_holed_images_draw_from_the_sample_generator():
    data = HoledImages(Images(smooth_images(3, 32)))
    a = data.get(1, torch.Generator().manual_seed(5))
    b = data.get(1, torch.Generator().manual_seed(5))
    c = data.get(1, torch.Generator().manual_seed(6))
    assert len(data) == 3 and a["image"].shape == (3, 32, 32) and a["hole"].shape == (1, 32, 32)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["hole"], b["hole"])
    assert not torch.equal(a["hole"], c["hole"])


@pytest.mark.parametrize("loss", ["l1", "l1+gan"])
def test_training_steps_lower_the_l1_on_a_fixed_batch(loss):
    # a 10x larger rate than the paper's so that a few steps show; the rate is not under test
    task = GatedConvTask(GatedConvTaskConfig(net=TINY, loss=loss, lr=1e-3))
    x = smooth_images(4, 32, 1)
    fixed = {"image": x, "hole": free_form_holes(4, 32, 32, 2)}

    def l1(models):
        with torch.no_grad():
            out = models["generator"](fixed["image"] * (1 - fixed["hole"]), fixed["hole"])
            return float((x - out.coarse).abs().mean() + (x - out.refined).abs().mean())

    before, _ = stand_in_loop(task, HoledImages(Images(x)), 0)
    after, log = stand_in_loop(task, HoledImages(Images(x)), 30)
    assert sorted(after) == (["discriminator", "generator"] if loss == "l1+gan" else ["generator"])
    expected = {"l1_coarse", "l1_refined", "g"} | ({"d", "g_adv"} if loss == "l1+gan" else set())
    assert set(log[-1]) == expected
    assert all(v.dim() == 0 and not v.requires_grad for v in log[-1].values())
    assert l1(after) < 0.8 * l1(before), (l1(before), l1(after))


def test_the_generator_step_leaves_the_discriminator_gradients_alone():
    task = GatedConvTask(GatedConvTaskConfig(net=TINY, loss="l1+gan"))
    torch.manual_seed(0)
    models = task.build()
    optimizers = task.make_optimizers(models)
    g, d = copy.deepcopy(models["generator"]), copy.deepcopy(models["discriminator"])
    x, hole = smooth_images(2, 64), free_form_holes(2, 64, 64, 3)
    # what the discriminator's gradient must be: its hinge loss alone
    fake = g(x * (1 - hole), hole).refined_pasted.detach()
    real_s, fake_s = d(torch.cat([x, fake]), torch.cat([hole, hole])).chunk(2)
    hinge_d_loss(real_s, fake_s).backward()
    losses = task.train_step(models, optimizers, {"image": x, "hole": hole})
    for p, q in zip(models["discriminator"].parameters(), d.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
        assert p.requires_grad
    assert all(p.grad is not None for p in models["generator"].parameters())
    assert float(losses["d"]) > 0


def test_task_config_round_trip_and_errors():
    task = GatedConvTask(GatedConvTaskConfig(net=GatedConvConfig(cnum=8), loss="l1"))
    again = GatedConvTask.from_config(task.config())
    assert again.cfg == task.cfg and task.name == "gatedconv"
    import json
    assert json.loads(json.dumps(task.config())) == task.config()
    for bad in [{"loss": "l2"}, {"net": {"cnum": 6}}, {"net": {"width": 8}}, {"lr": -1},
                {"betas": [0.5]}, {"extra": 1}, None]:
        with pytest.raises(ValueError):
            GatedConvTaskConfig.from_dict(bad)


# ------------------------------------------------------------------- the IEM inpainter
@pytest.mark.parametrize("output", ["refined", "coarse"])
def test_one_forward_pass_pair_equals_two_calls(output):
    inp = GatedConvInpainter(tiny_net(), output=output)
    x = smooth_images(3, 32)
    m = blob_masks(3, 32, 32, seed=1).float()
    fg, bg = inp.inpaint_both(x, m)
    torch.testing.assert_close(fg, inp(x * (1 - m), 1 - m), rtol=0, atol=1e-6)
    torch.testing.assert_close(bg, inp(x * m, m), rtol=0, atol=1e-6)
    assert not torch.allclose(fg, bg, atol=1e-2)              # two different inpaintings


@pytest.mark.parametrize("output", ["refined", "coarse"])
def test_gradient_of_the_iem_objective_against_finite_differences(output):
    inp = GatedConvInpainter(tiny_net(), output=output)
    x = smooth_images(2, 32).double()
    m0 = blob_masks(2, 32, 32, seed=2).double()

    def objective(m):
        fg, bg = inp.inpaint_both(x, m)
        return iem_objective(x, m, fg, bg, lam=0.001).sum()

    mv = m0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(mv), mv)
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 32, (12, 3), generator=g)
    eps = 1e-6
    for n, i, j in pixels.tolist():
        n %= 2
        e = torch.zeros_like(m0)
        e[n, 0, i, j] = eps
        with torch.no_grad():
            fd = (objective(m0 + e) - objective(m0 - e)) / (2 * eps)
        assert abs(float(grad[n, 0, i, j]) - float(fd)) <= 1e-6 + 1e-5 * abs(float(fd)), (n, i, j)
    assert grad.abs().max() > 1e-4                           # the test is not about zeros


def test_early_exit_gives_identical_results_with_a_learned_inpainter():
    inp = GatedConvInpainter(tiny_net(gain=2.0), output="refined")
    x = smooth_images(6, 32, seed=5)
    cfg = IEMConfig(iters=40, init_sizes=(16,), history=True, keep_masks=True, **CPU)
    inpainted = count_inpaintings(inp)
    on = segment(x, cfg, inpainter=inp)
    with_exit = sum(inpainted)
    off = segment(x, cfg.replace(early_exit=False), inpainter=inp)
    without = sum(inpainted) - with_exit
    assert without == 2 * 6 * 41 and with_exit < without / 2    # settled images left the batch
    assert on.config.impl == "reference"
    # images left the batch on fixed points and on two-cycles (else this proves little)
    assert (on.period == 1).any() and (on.period == 2).any()
    assert torch.equal(on.all_masks, off.all_masks)
    assert torch.equal(on.settled_at, off.settled_at) and torch.equal(on.period, off.period)
    assert torch.equal(on.all_errors, off.all_errors)
    for key in ("inpainting_error", "objective", "masks"):
        assert torch.equal(on.history[key], off.history[key]), key


def count_inpaintings(inp: GatedConvInpainter) -> list:
    """Record the batch size of every forward pass of the inpainter's float32 network."""
    seen = []
    net = inp.network(torch.zeros(1))
    forward = net.forward

    def counting(x_in, hole, **kw):
        seen.append(x_in.shape[0])
        return forward(x_in, hole, **kw)
    net.forward = counting
    return seen


def test_iem_uses_one_forward_pass_per_iteration():
    inp = GatedConvInpainter(tiny_net(), output="coarse")
    seen = count_inpaintings(inp)
    segment(smooth_images(2, 32), IEMConfig(iters=3, init_sizes=(16,), early_exit=False, **CPU),
            inpainter=inp)
    assert seen == [4] * 4                        # 2 images x 2 regions, 3 iterations + final


def test_segment_follows_the_configured_dtype():
    inp = GatedConvInpainter(tiny_net())
    r = segment(smooth_images(1, 32), IEMConfig(iters=2, init_sizes=(16,), dtype="float64", **CPU),
                inpainter=inp)
    assert r.masks.shape == (1, 1, 32, 32)
    assert next(inp.network(torch.zeros(1, dtype=torch.float64)).parameters()).dtype == torch.float64


def test_fine_tuning_adapts_a_copy_and_restarts_every_run(monkeypatch):
    net = tiny_net()
    before = copy.deepcopy(net.state_dict())
    x = smooth_images(2, 32, seed=4)
    cfg = IEMConfig(iters=6, init_sizes=(16,), **CPU)
    fixed = segment(x, cfg, inpainter=GatedConvInpainter(net, output="coarse"))
    inp = GatedConvInpainter(net, output="coarse", finetune=FineTune(steps_per_iter=2, lr=1e-3))
    calls = []
    step = inp._finetune_steps
    monkeypatch.setattr(inp, "_finetune_steps", lambda x, m, t: (calls.append(t), step(x, m, t)))
    a = segment(x, cfg, inpainter=inp)
    assert calls == list(range(7))              # before every evaluation, the final one too
    # fine-tuning lowered the inpainting error of the final masks (the min over psi)
    m = a.masks.float()
    with torch.no_grad():
        pretrained = GatedConvInpainter(net, output="coarse").inpaint_both(x, m)
        tuned = inp.inpaint_both(x, m)
    assert inpainting_error(x, m, *tuned).mean() < inpainting_error(x, m, *pretrained).mean()
    b = segment(x, cfg, inpainter=inp)          # a new run restarts from the loaded weights
    assert torch.equal(a.all_errors, b.all_errors) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.all_errors, fixed.all_errors)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)     # the caller's module
    assert all(p.requires_grad for p in net.parameters())


def save_gatedconv(path, net, task_config=None, task="gatedconv", models=None):
    cfg = task_config if task_config is not None else GatedConvTaskConfig(net=net.config, loss="l1").to_dict()
    return ck.save({"format": ck.CHECKPOINT, "task": task, "task_config": cfg, "step": 3,
                    "models": models if models is not None else {"generator": net.state_dict()}}, path)


def test_inpainter_from_checkpoint_and_float16_weights(tmp_path):
    net = tiny_net()
    path = save_gatedconv(tmp_path / "model.pt", net)
    x = smooth_images(2, 32)
    m = blob_masks(2, 32, 32, seed=5).float()
    from_module = GatedConvInpainter(net).inpaint_both(x, m)
    from_file = GatedConvInpainter(path)
    assert from_file.task_config.loss == "l1"
    for a, b in zip(from_file.inpaint_both(x, m), from_module):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    weights = ck.export_weights(path, tmp_path / "model.weights.pt", {"command": "test"})
    for a, b in zip(GatedConvInpainter(weights).inpaint_both(x, m), from_module):
        torch.testing.assert_close(a, b, rtol=0, atol=0.05)          # float16 weights


@pytest.mark.parametrize("make, problem", [
    (lambda p, net: None, "no such file"),
    (lambda p, net: p.write_bytes(b"not a checkpoint"), "not an iemlib checkpoint"),
    (lambda p, net: save_gatedconv(p, net, task="segnet"), "expected 'gatedconv'"),
    (lambda p, net: save_gatedconv(p, net, task_config={"net": {"cnum": 6}}), "bad task_config"),
    (lambda p, net: save_gatedconv(p, net, task_config={"loss": "l1", "net": {"cnum": 4},
                                                        "colour": 1}), "bad task_config"),
    (lambda p, net: save_gatedconv(p, net, models={"discriminator": net.state_dict()}),
     "holds no 'generator'"),
    (lambda p, net: save_gatedconv(p, net, task_config=GatedConvTaskConfig(
        net=GatedConvConfig(cnum=8)).to_dict()), "does not match"),
])
def test_bad_checkpoints_give_one_line_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.pt"
    make(path, tiny_net())
    with pytest.raises(ck.CheckpointError) as e:
        GatedConvInpainter(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and problem in msg and "\n" not in msg


def test_bad_inpainter_arguments():
    with pytest.raises(ValueError, match="output"):
        GatedConvInpainter(tiny_net(), output="final")
    with pytest.raises(TypeError):
        GatedConvInpainter(42)
    with pytest.raises(ValueError):
        FineTune(steps_per_iter=0)
