"""Pix2Pix (Isola et al., CVPR 2017): the 70x70 PatchGAN, the U-Net generator, the losses, the update order
of one training step, checkpoints, the command line, and overfitting one real pair."""

import copy
import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from cdtsde.cli import main
from cdtsde.data import build_dataset
from cdtsde.intensity import model_to_unit
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.pix2pix import Pix2Pix, Pix2PixConfig
from cdtsde.metrics import image_metrics
from cdtsde.networks.patchgan import PatchGANDiscriminator, receptive_field
from cdtsde.networks.unet_generator import UNetGenerator
from cdtsde.training import TrainConfig, load_pretrained, save_pretrained, train

SMALL = {"generator_filters": 8, "discriminator_filters": 8}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are small: one intra-op thread runs them faster than two, and does not stall when the
    other core is busy (two OpenMP threads on two shared cores wait for each other: up to 50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OnePair(Dataset):
    """One item as a training set (the loop then draws it every step, always the same)."""

    def __init__(self, item):
        self.item = item
        self.source_channels, self.target_channels = item["source"].shape[0], item["target"].shape[0]

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.item


def phantom_pair(size=32):
    spec = {"kind": "procedural", "task": "mri-phantom", "n": 1, "size": size, "seed": 3, "hflip": False}
    return build_dataset(spec, "train")[0]


def pix2pix(seed=0, size=32, source_channels=1, target_channels=1, **config):
    torch.manual_seed(seed)
    data = DataInfo(source_channels=source_channels, target_channels=target_channels, image_size=size)
    return Pix2Pix(Pix2PixConfig(**{**SMALL, **config}), data)


def step_config(**overrides):
    options = dict(Pix2Pix.train_defaults, max_steps=1, lr=1e-3, flips=False, sample_every=0, log_every=1,
                   checkpoint_every=1)
    return TrainConfig(**{**options, **overrides})


# --- the PatchGAN ---------------------------------------------------------------------------------------

def test_patchgan_receptive_field_is_70_analytically_and_empirically():
    """With positive weights (and BatchNorm in eval mode: a positive per-channel scale) no gradient
    cancels, so the input pixels that one output pixel depends on are exactly those with a non-zero
    gradient: a 70x70 square for n_layers = 3."""
    assert [PatchGANDiscriminator(2, 4, n).receptive_field for n in (1, 2, 3, 4)] == [16, 34, 70, 142]
    disc = PatchGANDiscriminator(2, base_filters=4, n_layers=3).double().eval()
    assert receptive_field(disc.layers) == 70
    with torch.no_grad():
        for layer in disc.modules():
            if isinstance(layer, nn.Conv2d):
                layer.weight.fill_(1.0 / layer.weight[0].numel())
                if layer.bias is not None:
                    layer.bias.zero_()
    x = torch.rand(1, 2, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    out = disc(x)
    assert out.shape == (1, 1, 14, 14)
    out[0, 0, 7, 7].backward()
    seen = x.grad.abs().sum(1)[0] > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    assert len(rows) == len(cols) == 70
    assert rows[-1] - rows[0] == cols[-1] - cols[0] == 69  # one contiguous window
    assert seen[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and seen.sum() == 70 * 70


def test_patchgan_sizes_and_the_smallest_input():
    disc = PatchGANDiscriminator(2, base_filters=4)
    assert disc.smallest_input == 24
    assert disc(torch.zeros(2, 2, 32, 32)).shape == (2, 1, 2, 2)
    assert disc(torch.zeros(2, 2, 24, 24)).shape == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="needs inputs of at least 24 px, got \\(16, 16\\)"):
        disc(torch.zeros(1, 2, 16, 16))
    assert PatchGANDiscriminator(2, 4, norm="instance")(torch.zeros(1, 2, 24, 24)).shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="norm must be one of batch, instance"):
        PatchGANDiscriminator(2, 4, norm="group")


# --- the U-Net generator --------------------------------------------------------------------------------

@pytest.mark.parametrize("size, source_channels, target_channels", [(32, 1, 3), (64, 1, 5), (32, 3, 1)])
def test_generator_keeps_the_size_and_maps_source_to_target_channels(size, source_channels, target_channels):
    method = pix2pix(size=size, source_channels=source_channels, target_channels=target_channels)
    assert method.generator.depth == int(np.log2(size))  # a 1x1 bottleneck
    sources = torch.rand(2, source_channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = method.translate(sources).images
    assert images.shape == (2, target_channels, size, size)
    assert images.abs().max() <= 1 and images.std() > 0


def test_generator_follows_the_papers_layout_and_refuses_other_sizes():
    unet = UNetGenerator(3, 3, depth=8, base_filters=4)
    encoder_widths = [block[0].out_channels for block in unet.encoder]
    assert encoder_widths == [4, 8, 16, 32, 32, 32, 32, 32]  # C64-C128-C256-C512-C512-C512-C512-C512 / 16
    normed = [any(isinstance(layer, nn.BatchNorm2d) for layer in block) for block in unet.encoder]
    assert normed == [False] + [True] * 6 + [False]  # none on the first layer (paper) nor the 1x1 bottleneck
    dropout = [any(isinstance(layer, nn.Dropout) for layer in block) for block in unet.decoder]
    assert dropout == [True] * 3 + [False] * 5  # CD512-CD1024-CD1024-C1024-...
    assert isinstance(unet.decoder[-1][-1], nn.Tanh)
    # a shallower net takes any multiple of 2**depth (here a 4x4 bottleneck)
    assert UNetGenerator(1, 1, depth=4, base_filters=4)(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="depth 5 needs image sides that are multiples of 32 .* got 48x48"):
        UNetGenerator(1, 1, depth=5, base_filters=4)(torch.zeros(1, 1, 48, 48))
    with pytest.raises(ValueError, match="needs a power-of-two size; got 48"):
        pix2pix(size=48)
    with pytest.raises(ValueError, match="multiples of 32 .* got 48x48"):
        pix2pix(size=48, depth=5)
    assert pix2pix(size=48, depth=4).generator.depth == 4
    with pytest.raises(ValueError, match="layers = 3 needs images of at least 24 px, the data are 16 px"):
        pix2pix(size=16)


# --- the objective and one training step ----------------------------------------------------------------

@pytest.mark.parametrize("gan_mode, d_loss, g_gan", [("vanilla", np.log(2), np.log(2)), ("lsgan", 0.5, 1.0)])
def test_losses_are_eq_4_with_d_halved(gan_mode, d_loss, g_gan):
    """With D's output fixed at 0: vanilla (BCE with logits, Eq. 1) gives log 2 per term, LSGAN 1 (to the
    label 1) and 0 (to 0); D's loss is halved (Section 3.3), G's is the GAN term + 100 L1 (Eq. 4)."""
    method = pix2pix(gan_mode=gan_mode)
    with torch.no_grad():
        method.discriminator.layers[-1].weight.zero_()
    pair = phantom_pair()
    batch = {"source": pair["source"][None], "target": pair["target"][None]}
    shared = {}
    out = method(batch, "discriminator", None, shared)
    assert out["loss"].item() == pytest.approx(d_loss, rel=1e-6)
    out = method(batch, "generator", None, shared)
    l1 = (shared["fake"] - batch["target"]).abs().mean().item()
    assert out["g_gan"].item() == pytest.approx(g_gan, rel=1e-6) and out["l1"].item() == pytest.approx(l1)
    assert out["loss"].item() == pytest.approx(g_gan + 100 * l1, rel=1e-6)
    with pytest.raises(ValueError, match="model.gan_mode must be one of vanilla, lsgan"):
        Pix2PixConfig(gan_mode="wgan")


def test_a_step_updates_d_first_then_g_against_it_and_g_leaves_d_alone(tmp_path):
    """The loop's step equals, to the bit, a hand-made one that updates D, then G against the updated D;
    the generator phase neither changes D's weights nor adds to its gradients. (No dropout, so that the
    step has no random draw to reproduce.)"""
    pair = phantom_pair()
    method = pix2pix(dropout=0.0)
    by_hand = copy.deepcopy(method)
    config = step_config()
    result = train(method, OnePair(pair), config, tmp_path, progress=False)
    assert list(result["phase_losses"][0]) == ["discriminator", "generator"]

    optimizers = by_hand.optimizers(config)
    assert list(optimizers) == ["discriminator", "generator"]
    for optimizer in optimizers.values():
        assert optimizer.defaults["betas"] == (0.5, 0.999) and optimizer.param_groups[0]["lr_scale"] == 1.0
    batch = {"source": pair["source"][None], "target": pair["target"][None]}
    shared, states = {}, []
    for phase, optimizer in optimizers.items():
        loss = by_hand(batch, phase, None, shared)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        states.append({name: (p.detach().clone(), p.grad.clone())
                       for name, p in by_hand.discriminator.named_parameters()})
    after_d, after_g = states
    for name, (weight, grad) in after_d.items():
        assert torch.equal(after_g[name][0], weight) and torch.equal(after_g[name][1], grad)
    assert all(p.requires_grad for p in by_hand.discriminator.parameters())
    trained, expected = dict(method.named_parameters()), dict(by_hand.named_parameters())
    for name, parameter in expected.items():
        assert torch.equal(trained[name], parameter), name
    for name, (weight, _) in after_d.items():
        assert torch.equal(method.discriminator.get_parameter(name), weight), name


# --- checkpoints and translation ------------------------------------------------------------------------

def test_checkpoints_round_trip_to_identical_translations(tmp_path):
    method = pix2pix(size=32)
    pair = phantom_pair()
    batch = {key: pair[key][None].repeat(2, 1, 1, 1) for key in ("source", "target")}
    with torch.no_grad():  # a training-mode pass: the BatchNorm running statistics leave their initial values
        method(batch, "discriminator", None, {})
    save_pretrained(method, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["method"] == "pix2pix" and record["sampling"] == {"dropout": False}
    assert record["config"]["lambda_l1"] == 100.0 and record["config"]["depth"] is None
    loaded = load_pretrained(tmp_path)
    sources = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plain = method.translate(sources).images
    assert torch.equal(loaded.translate(sources).images, plain)
    assert method.generator.training  # translation left the training mode as it was

    def with_dropout(model, seed):
        return model.translate(sources, generator=torch.Generator().manual_seed(seed), dropout=True).images

    noisy = with_dropout(method, 5)
    assert torch.equal(with_dropout(loaded, 5), noisy) and not torch.equal(noisy, plain)
    assert not torch.equal(with_dropout(loaded, 6), noisy)


def test_train_and_translate_from_the_command_line(tmp_path, capsys):
    config = {"method": "pix2pix",
              "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "n_val": 2, "size": 32,
                       "seed": 1},
              "model": SMALL, "train": {"max_steps": 3, "batch_size": 2, "sample_every": 0}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    torch.manual_seed(0)
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--output", str(run)]) == 0
    assert "step 3" in capsys.readouterr().out
    assert json.loads((run / "model" / "config.json").read_text())["method"] == "pix2pix"
    state = torch.load(run / "state.pt", weights_only=False)
    recipe = state["train"]  # the method's train_defaults under the configuration's own settings
    assert recipe["ema_decay"] == 0.0 and recipe["lr"] == 2e-4 and recipe["batch_size"] == 2
    row = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    assert {"loss_discriminator", "loss_generator", "l1", "d_real", "d_fake", "g_gan"} <= set(row)
    image = (np.random.default_rng(0).random((20, 23)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    translate = ["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png")]
    assert main([*translate, "--output", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "a.png").size == (23, 20)
    assert main([*translate, "--output", str(tmp_path / "noisy"), "--dropout", "--samples", "2"]) == 0
    assert (tmp_path / "noisy" / "a_std.tif").is_file()
    capsys.readouterr()
    assert main([*translate, "--output", str(tmp_path / "out2"), "--steps", "3"]) == 2
    error = capsys.readouterr().err
    assert "the pix2pix method has no sampling option --steps (its options: --dropout)" in error


def test_registered_with_its_recipe():
    assert method_class("pix2pix") is Pix2Pix
    assert Pix2Pix.train_defaults == {"lr": 2e-4, "batch_size": 1, "warmup_steps": 1, "ema_decay": 0.0,
                                  "grad_clip": 0.0}


# --- learning -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_overfits_one_real_brats_pair(shared_data, tmp_path):
    """One BraTS T1 -> T2 slice at 32 px, the default objective and architecture (16 base filters), lr 1e-3.
    Measured (one thread, 2 shared CPU cores): 200 steps in 4.3 s of training plus 0.7 s (warm file cache)
    to 3.5 s (cold) to read the volumes; PSNR 39.1 dB on the pair (30.2 dB after 100 steps, 34.7 after
    150)."""
    spec = {"kind": "brats", "root": str(shared_data / "brats-mri"), "source": "t1", "target": "t2",
            "size": 32, "subjects": ["Brats18_2013_11_1"], "val_subjects": 0, "test_subjects": 0,
            "min_foreground": 0.3, "slice_step": 8, "hflip": False}
    pair = build_dataset(spec, "train")[0]
    method = pix2pix(generator_filters=16, discriminator_filters=16)
    train(method, OnePair(pair), step_config(max_steps=200, log_every=200, checkpoint_every=200), tmp_path,
          progress=False)
    translation = method.translate(pair["source"][None]).images[0]
    score = image_metrics(model_to_unit(translation)[0].numpy(), model_to_unit(pair["target"])[0].numpy())
    assert score["psnr"] > 30
