"""ReDO's mask network as the paper's refinement phase describes it, its training task and
its data."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iemlib import checkpoints as ck
from iemlib.nets.segnet import PyramidPooling, SegNet, SegNetConfig, count_parameters
from iemlib.segnet_task import MaskedImages, SegNetTask, load_segnet
from iemlib.training import TrainConfig, train

from training_toys import two_colour_set


def test_parameter_count_and_shapes_are_the_papers():
    torch.manual_seed(0)
    net = SegNet()
    assert count_parameters(net) == 274_966  # paper_facts, counted from ReDO's code
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        p, z = net(x), net(x, logits=True)
    assert p.shape == z.shape == (2, 1, 128, 128)
    assert torch.equal(p, torch.sigmoid(z)) and 0 < p.min() and p.max() < 1
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.affine for m in norms) and len(norms) == 3 + 2 * 3 + 2
    # encoder 3 -> 16 -> 32 -> 64 and decoder 68 -> 34 -> 17 -> 1, as the spec lists them
    assert [(c.in_channels, c.out_channels) for c in net.encoder if isinstance(c, torch.nn.Conv2d)] == \
        [(3, 16), (16, 32), (32, 64)]
    assert [(c.in_channels, c.out_channels) for c in net.decoder if isinstance(c, torch.nn.Conv2d)] == \
        [(68, 34), (34, 17), (17, 1)]
    assert sum(c.bias is not None for c in convs) == 3 + 4 + 1  # residual second convs, pyramid, last


def test_pyramid_pools_to_1_2_3_6_and_back_to_32():
    pyr = PyramidPooling(64, 32)
    f = torch.randn(1, 64, 32, 32)
    sizes = [F.avg_pool2d(f, k, k).shape[-1] for k in pyr.kernels]
    assert sizes == [1, 2, 3, 6]
    assert pyr(f).shape == (1, 4, 32, 32)


def test_a_samples_mask_does_not_depend_on_its_batch():
    """Instance norm everywhere: what the network says about one image is the same whatever
    else is in the batch (what makes several processes equal one)."""
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(width=16, size=64))
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        alone = net(x[1:2], logits=True)
        together = net(x, logits=True)[1:2]
    assert torch.allclose(alone, together, atol=1e-5)


def test_bad_input_and_configs_are_refused():
    with pytest.raises(ValueError, match=r"expects \(N, 3, 32, 32\) images, got \(1, 3, 64, 64\)"):
        SegNet(SegNetConfig(width=8, size=32))(torch.zeros(1, 3, 64, 64))
    for bad in ({"size": 20}, {"size": 30}, {"width": 6}, {"blocks": -1}):
        with pytest.raises(ValueError):
            SegNetConfig(**bad)


def test_training_lowers_the_bce_on_a_fixed_batch_of_two_colour_images(tmp_path):
    x, m = two_colour_set(32, 64, seed=0)
    task = SegNetTask(net=SegNetConfig(width=16, blocks=1, size=64))
    torch.manual_seed(0)
    fixed_x, fixed_m = x[:8], m[:8].float()
    before_net = task.build()["segnet"]  # the loop seeds torch with the same seed first
    with torch.no_grad():
        before = F.binary_cross_entropy_with_logits(before_net(fixed_x, logits=True), fixed_m).item()
    cfg = TrainConfig(out=tmp_path / "s.pt", steps=30, batch_size=8, log_every=10, progress=False)
    train(task, MaskedImages(x, m), cfg)
    net = load_segnet(cfg.out)
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(net(fixed_x, logits=True), fixed_m).item()
        acc = ((net(fixed_x) > 0.5) == fixed_m.bool()).float().mean().item()
    assert before > 0.5 and after < 0.5 * before  # chance is log 2 = 0.69
    assert acc > 0.9


def test_masked_images_flip_image_and_mask_together():
    x, m = two_colour_set(3, 32, seed=2)
    data = MaskedImages(x, m[:, 0])  # (N, H, W) masks accepted
    flipped = 0
    for seed in range(40):
        s = data.get(1, torch.Generator().manual_seed(seed))
        assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32)
        assert s["mask"].dtype == torch.float32
        if torch.equal(s["image"], x[1]):
            assert torch.equal(s["mask"], m[1].float())
        else:
            assert torch.equal(s["image"], x[1].flip(-1)) and torch.equal(s["mask"], m[1].float().flip(-1))
            flipped += 1
    assert 8 < flipped < 32
    plain = MaskedImages(x, m, flip=False)
    assert all(torch.equal(plain.get(0, torch.Generator().manual_seed(s))["image"], x[0]) for s in range(10))


@pytest.mark.parametrize("masks, problem", [
    (lambda m: m.float() * 2, "only 0 and 1"),
    (lambda m: m[:2], "differ in number or size"),
    (lambda m: m[:, :, :16], "differ in number or size"),
    (lambda m: m.expand(-1, 2, -1, -1), r"masks \(N, 1, H, W\)"),
])
def test_masked_images_refuse_bad_masks(masks, problem):
    x, m = two_colour_set(3, 32)
    with pytest.raises(ValueError, match=problem):
        MaskedImages(x, masks(m))


def test_load_segnet_rebuilds_from_the_file_alone(tmp_path):
    x, m = two_colour_set(8, 32)
    task = SegNetTask(net=SegNetConfig(width=8, blocks=2, size=32))
    cfg = TrainConfig(out=tmp_path / "s.pt", steps=2, batch_size=4, progress=False)
    train(task, MaskedImages(x, m), cfg)
    net = load_segnet(cfg.out)
    assert net.config == task.net and not net.training
    half = load_segnet(ck.export_weights(cfg.out, tmp_path / "w.pt", {"command": "test"}))
    with torch.no_grad():
        assert torch.allclose(net(x), half(x), atol=5e-3)
    (tmp_path / "bad.pt").write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match=r"bad\.pt: not a readable PyTorch file"):
        load_segnet(tmp_path / "bad.pt")


def test_predict_probabilities_in_batches_equals_one_call():
    from iemlib.segnet_task import predict_probabilities
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(width=8, blocks=1, size=32)).eval()
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = net(x)
    got = predict_probabilities(net, x, batch_size=2)
    assert got.shape == (5, 1, 32, 32) and got.dtype == torch.float32
    assert torch.allclose(got, whole, atol=1e-6)
    assert predict_probabilities(net, x[:0]).shape == (0, 1, 32, 32)
