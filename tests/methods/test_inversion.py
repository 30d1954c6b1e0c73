"""The reduced GAN-inversion baseline: the style generator, the inversion objective, training and checkpoints."""

import math

import pytest
import torch
from helpers import InversionPairs

from cdtsde.errors import CdtsdeError
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.inversion import GANInversion, InversionConfig, InversionSampling
from cdtsde.networks.style_generator import ModulatedConv2d, StyleGenerator

TINY = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channels": 8, "discriminator_filters": 8,
        "discriminator_layers": 2}


def make(size=16, channels=1, **overrides):
    torch.manual_seed(0)
    method = GANInversion(InversionConfig(**{**TINY, **overrides}),
                          DataInfo(source_channels=None, target_channels=channels, image_size=size))
    with torch.no_grad():  # w_avg as training would make it: the mean of mapped w
        ws = method.generator.map(torch.randn(256, TINY["z_dim"], generator=torch.Generator().manual_seed(1)))
        method.generator.w_avg.copy_(ws[:, 0].mean(0))
    return method


def known_targets(method, n=2, seed=2):
    with torch.no_grad():
        ws = method.generator.map(torch.randn(n, TINY["z_dim"], generator=torch.Generator().manual_seed(seed)))
        return ws, method.generator(ws)


def test_generator_w_plus_shape_and_output_range():
    generator = StyleGenerator(3, 32, z_dim=8, w_dim=12, mapping_layers=2, channels=8)
    assert generator.num_ws == 2 * 5 - 2  # StyleGAN2's count for 32 px
    ws = generator.map(torch.randn(4, 8))
    assert ws.shape == (4, 8, 12) and torch.equal(ws[:, 0], ws[:, -1])
    images = generator(ws * 10)  # far from w_avg: still inside the range
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1
    assert generator.mean_ws(2).shape == (2, 8, 12) and torch.equal(generator.w_avg, torch.zeros(12))
    generator.update_w_avg(ws)
    torch.testing.assert_close(generator.w_avg, 0.005 * ws[:, 0].mean(0))
    truncated = generator.map(torch.randn(4, 8), truncation=0.0)
    torch.testing.assert_close(truncated, generator.mean_ws(4).expand(4, -1, -1))
    with pytest.raises(ValueError, match=r"W\+ codes \(B, 8, 12\)"):
        generator(ws[:, :3])
    with pytest.raises(ValueError, match="power-of-two image size"):
        StyleGenerator(1, 24)


def test_demodulation_keeps_unit_variance_whatever_the_style():
    torch.manual_seed(0)
    conv = ModulatedConv2d(64, 32, 3, w_dim=16)
    x = torch.randn(4, 64, 40, 40)
    for scale in (0.1, 1.0, 30.0):
        out = conv(x, torch.randn(4, 16) * scale)[..., 1:-1, 1:-1]  # the border sees zero padding
        assert abs(out.std().item() - 1.0) < 0.03, scale
    conv.demodulate = False  # without it the output scales with the style
    assert conv(x, torch.randn(4, 16) * 30)[..., 1:-1, 1:-1].std() > 3


@pytest.mark.slow
@pytest.mark.parametrize("similarity", ["nmi", "lmi"])
def test_the_inversion_loss_decreases_and_recovers_a_generated_target(similarity):
    method = make()
    _, target = known_targets(method)
    result = method.invert(target, InversionSampling(steps=30, similarity=similarity))
    assert len(result.losses) == 30 and result.losses[-1] < result.losses[0] - 0.05
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    assert (result.similarity > result.initial_similarity + 0.03).all()
    assert result.ws.shape == (2, method.generator.num_ws, TINY["w_dim"])
    # the returned images are G of the returned codes, and closer to the target than G(w_avg)
    with torch.no_grad():
        torch.testing.assert_close(method.generator(result.ws), result.images)
        start = method.generator(method.generator.mean_ws(2))
    assert (result.images - target).pow(2).mean() < (start - target).pow(2).mean()


@pytest.mark.slow
def test_inverting_a_contrast_inverted_image_gives_the_same_image():
    """NMI is unchanged by y -> -y (the Parzen bins are symmetric: the joint histogram is permuted), so the
    whole optimisation is: inverting -t finds what inverting t finds."""
    method = make()
    _, target = known_targets(method)
    sampling = InversionSampling(steps=30, similarity="nmi")
    plain, remapped = method.invert(target, sampling), method.invert(-target, sampling)
    assert (plain.similarity > plain.initial_similarity + 0.1).all()  # it moved: the match is not trivial
    torch.testing.assert_close(remapped.similarity, plain.similarity, rtol=0, atol=1e-4)
    torch.testing.assert_close(remapped.images, plain.images, rtol=0, atol=5e-3)


def test_translate_freezes_the_generator_counts_steps_and_is_deterministic():
    method = make()
    sources = InversionPairs(n=2).sources
    flags = [p.requires_grad for p in method.parameters()]
    before = {k: v.clone() for k, v in method.state_dict().items()}
    first = method.translate(sources, steps=5)
    again = method.translate(sources, steps=5)
    assert first.images.shape == (2, 1, 16, 16) and torch.equal(first.images, again.images)
    assert first.diagnostics["similarity"] >= first.diagnostics["initial_similarity"]
    assert [p.requires_grad for p in method.parameters()] == flags and all(p.grad is None for p in method.parameters())
    for key, tensor in method.state_dict().items():
        assert torch.equal(before[key], tensor), key
    assert method.network_evaluations() == 100 and method.network_evaluations(method.sampling_options(steps=7)) == 7
    with pytest.raises(CdtsdeError, match="similarity must be one of nmi, lmi"):
        method.sampling_options(similarity="mse")
    # one image alone is inverted as in the batch (Adam is element-wise)
    alone = method.translate(sources[1:], steps=5).images
    torch.testing.assert_close(alone, first.images[1:], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="differentiable similarity"):
        InversionConfig(similarity={"mode": "reference"})


def test_the_gan_losses_and_phases():
    method = make()
    batch = {"target": InversionPairs(n=4).targets}
    shared = {}
    generator = torch.Generator().manual_seed(0)
    d = method(batch, "discriminator", generator, shared)
    assert {"loss", "d_real", "d_fake", "r1"} <= set(d) and math.isfinite(float(d["loss"].detach()))
    d["loss"].backward()
    assert all(p.grad is None for p in method.generator.parameters())  # the fake was detached for D
    w_avg = method.generator.w_avg.clone()
    g = method(batch, "generator", generator, shared)
    g["loss"].backward()
    assert method.generator.const.grad is not None and not torch.equal(method.generator.w_avg, w_avg)
    with pytest.raises(ValueError, match="phases discriminator and generator"):
        method(batch, "model", generator, shared)
    # a discriminator that says 0 everywhere: StyleGAN's non-saturating losses at their constants, no R1
    last = [m for m in method.discriminator.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    d = method(batch, "discriminator", generator, shared)
    assert float(d["loss"].detach()) == pytest.approx(2 * math.log(2)) and float(d["r1"]) == 0.0
    assert float(d["d_real"]) == float(d["d_fake"]) == 0.5
    assert float(method(batch, "generator", generator, shared)["loss"].detach()) == pytest.approx(math.log(2))


def test_train_save_load_and_translate(tmp_path):
    from cdtsde.data import TargetOnlyData
    from cdtsde.training import TrainConfig, load_pretrained, train

    assert method_class("inversion") is GANInversion and GANInversion.data_kind == "target-only"
    method = make()
    result = train(method, TargetOnlyData(InversionPairs(n=8)),
                   TrainConfig(max_steps=3, batch_size=4, sample_every=0, checkpoint_every=3,
                               **{**GANInversion.train_defaults, "warmup_steps": 1}),
                   tmp_path, progress=False)
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    assert set(result["phase_losses"][0]) == {"discriminator", "generator"}
    loaded = load_pretrained(tmp_path)
    assert loaded.name == "inversion" and loaded.config == method.config and loaded.data.source_channels is None
    for key, tensor in method.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    sources = InversionPairs(n=2).sources
    out = loaded.translate(sources, steps=3, similarity="lmi")
    assert out.images.shape == (2, 1, 16, 16) and out.images.abs().max() <= 1
    torch.testing.assert_close(out.images, method.translate(sources, steps=3, similarity="lmi").images)
