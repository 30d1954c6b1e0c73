"""CycleGAN (Zhu et al., ICCV 2017): the history pool, the learning-rate schedule, the ResNet generator, the
losses, the update order of one step, training on two unaligned folders through checkpoints and the
command line, and exact resume with the pool in use."""

import copy
import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from helpers import InversionPairs
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from cdtsde.cli import main
from cdtsde.data import UnpairedData
from cdtsde.errors import CdtsdeError
from cdtsde.methods import DataInfo
from cdtsde.methods.cyclegan import CycleGAN, CycleGANConfig, ImagePool
from cdtsde.networks.resnet_generator import ResidualBlock, ResnetGenerator, default_blocks
from cdtsde.training import TrainConfig, load_pretrained, train
from cdtsde.training.checkpoint import file_sha256
from cdtsde.training.loop import learning_rate

SMALL = {"generator_filters": 4, "discriminator_filters": 4, "blocks": 1, "pool_size": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small nets run faster on one intra-op thread, and do not stall when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cyclegan(seed=0, size=24, source_channels=1, target_channels=1, **config):
    torch.manual_seed(seed)
    data = DataInfo(source_channels=source_channels, target_channels=target_channels, image_size=size)
    return CycleGAN(CycleGANConfig(**{**SMALL, **config}), data)


def step_config(**overrides):
    options = dict(CycleGAN.train_defaults, max_steps=1, flips=False, sample_every=0, log_every=1,
                   checkpoint_every=1)
    return TrainConfig(**{**options, **overrides})


def images(n, channels=1, size=24, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- the history pool -----------------------------------------------------------------------------------

def authors_query(stored: list, capacity: int, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The authors' ImagePool.query as a list, drawing the same numbers in the same order as ImagePool."""
    out = []
    for image in batch:
        u, slot = torch.rand((), generator=generator), int(torch.randint(capacity, (), generator=generator))
        if len(stored) < capacity:
            stored.append(image.clone())
            out.append(image)
        elif u < 0.5:
            out.append(stored[slot].clone())
            stored[slot] = image.clone()
        else:
            out.append(image)
    return torch.stack(out)


def test_the_pool_fills_first_then_swaps_with_probability_one_half():
    pool = ImagePool(3, channels=1, size=2)
    first = images(3, size=2, seed=1)
    assert torch.equal(pool.query(first[:2], torch.Generator().manual_seed(0)), first[:2])
    assert pool.count.item() == 2 and torch.equal(pool.images[:2], first[:2])
    # the third image fills the pool and comes back as it is; from the fourth on the pool is full
    generator, reference, stored = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4), list(first[:2])
    seen = first.clone()
    swaps, queries = 0, 0
    for index, batch_size in enumerate([2, 1, 3] * 60):
        batch = images(batch_size, size=2, seed=100 + index)
        held = pool.images.clone()
        returned = pool.query(batch, generator)
        assert torch.equal(returned, authors_query(stored, 3, batch, reference))
        assert torch.equal(pool.images, torch.stack(stored)) and pool.count.item() == 3
        seen = torch.cat([seen, batch])
        for new, back in zip(batch, returned):
            # what comes back is the new image or one the pool held (before this query, or stored by an
            # earlier image of the same batch); the pool only ever holds images it was given
            candidates = torch.cat([held, batch])
            assert any(torch.equal(back, c) for c in candidates)
            swaps += not torch.equal(back, new)
            queries += 1
        assert all(any(torch.equal(image, s) for s in seen) for image in pool.images)
    assert 0.42 < swaps / (queries - 1) < 0.58  # the first image of the first batch filled the pool
    # the same seed gives the same returns; the pool is a buffer: its state travels in the state dict
    again = ImagePool(3, channels=1, size=2)
    again.load_state_dict(pool.state_dict())
    batch = images(4, size=2, seed=7)
    assert torch.equal(again.query(batch, torch.Generator().manual_seed(9)),
                       pool.query(batch, torch.Generator().manual_seed(9)))
    assert set(pool.state_dict()) == {"images", "count"}


def test_an_empty_pool_returns_the_latest_fakes_and_a_pool_needs_a_size():
    batch = images(2, size=8)
    assert torch.equal(ImagePool(0, 1, None).query(batch), batch)
    with pytest.raises(ValueError, match="history pool needs the training size"):
        ImagePool(50, 1, None)
    with pytest.raises(ValueError, match=r"holds images of shape \(1, 8, 8\).*got \(1, 16, 16\)"):
        ImagePool(2, 1, 8).query(images(1, size=16))
    method = cyclegan(pool_size=50)
    assert method.pool_target.images.shape == (50, 1, 24, 24)
    assert {"pool_target.images", "pool_target.count", "pool_source.images"} <= set(method.state_dict())


# --- the learning-rate schedule -------------------------------------------------------------------------

def test_defaults_with_half_decay_hold_the_rate_then_decay_it_linearly_to_zero():
    schedule = TrainConfig(**{**CycleGAN.train_defaults, "max_steps": 200, "decay_steps": 100})
    rates = np.array([learning_rate(schedule, step) for step in range(200)])
    assert np.all(rates[:101] == 2e-4)  # no warm-up: constant over the first half
    np.testing.assert_allclose(np.diff(rates[100:]), -2e-6, rtol=1e-9)  # then linear ...
    assert rates[-1] == pytest.approx(2e-6) and learning_rate(schedule, 200) == pytest.approx(0, abs=1e-15)  # ... to 0
    assert CycleGAN.train_defaults == {"lr": 2e-4, "batch_size": 1, "warmup_steps": 1, "ema_decay": 0.0,
                                       "grad_clip": 0.0}
    optimizers = cyclegan().optimizers(schedule)
    assert list(optimizers) == ["generators", "discriminators"]
    for optimizer in optimizers.values():
        assert optimizer.defaults["betas"] == (0.5, 0.999) and optimizer.defaults["lr"] == 2e-4


# --- the ResNet generator -------------------------------------------------------------------------------

def test_generator_follows_the_papers_layout_with_6_or_9_blocks():
    assert [default_blocks(size) for size in (32, 128, 255, 256, 512, None)] == [6, 6, 6, 9, 9, 9]
    paper = ResnetGenerator(3, 3, blocks=9)
    assert sum(p.numel() for p in paper.parameters()) == pytest.approx(11.38e6, rel=1e-3)  # the authors': 11.378M
    convs = [layer for layer in paper.layers if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (64, 7, 1), (128, 3, 2), (256, 3, 2), (128, 3, 2), (64, 3, 2), (3, 7, 1)]  # c7s1-64 d128 d256 .. u128 u64 c7s1-3
    assert isinstance(convs[3], nn.ConvTranspose2d) and isinstance(paper.layers[-1], nn.Tanh)
    assert sum(isinstance(layer, nn.ReflectionPad2d) for layer in paper.modules()) == 2 + 2 * 9
    assert sum(isinstance(layer, nn.InstanceNorm2d) for layer in paper.modules()) == 5 + 2 * 9
    for size, blocks in ((64, 6), (128, 6), (256, 9)):
        method = cyclegan(size=size, pool_size=0, blocks=None)
        assert [sum(isinstance(m, ResidualBlock) for m in g.modules()) for g in (method.generator, method.inverse)] \
            == [blocks, blocks]
    assert cyclegan(size=256, pool_size=0, blocks=3).generator.blocks == 3


@pytest.mark.parametrize("source_channels, target_channels", [(1, 3), (3, 1), (2, 2)])
def test_generators_map_between_the_channel_counts_in_minus_one_to_one(source_channels, target_channels):
    method = cyclegan(source_channels=source_channels, target_channels=target_channels, generator_filters=8)
    x = images(2, source_channels, size=32, seed=1)
    y = method.translate(x).images
    assert y.shape == (2, target_channels, 32, 32) and y.abs().max() <= 1 and y.std() > 0
    assert method.inverse(y).shape == x.shape
    assert method.generator(images(1, source_channels, size=8)).shape == (1, target_channels, 8, 8)
    assert method.generator(torch.zeros(1, source_channels, 24, 40)).shape == (1, target_channels, 24, 40)


def test_generator_and_method_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="multiples of 4 and at least 8 px .* got 30x32"):
        ResnetGenerator(1, 1, 1, 4)(torch.zeros(1, 1, 30, 32))
    with pytest.raises(ValueError, match="got 4x4"):
        ResnetGenerator(1, 1, 1, 4)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="got 30x30"):
        cyclegan(size=30)
    with pytest.raises(ValueError, match="layers = 3 needs images of at least 24 px, the data are 16 px"):
        cyclegan(size=16)
    assert cyclegan(size=16, discriminator_layers=2).discriminator_source.receptive_field == 34
    with pytest.raises(ValueError, match="cannot learn mask targets.*pix2pix"):
        CycleGAN(CycleGANConfig(**SMALL), DataInfo(source_channels=1, target_channels=5, target_kind="mask",
                                                   image_size=24))
    with pytest.raises(ValueError, match="model.lambda_cycle must be >= 0"):
        CycleGANConfig(lambda_cycle=-1)
    assert CycleGANConfig.cpu().generator_filters == 16 and CycleGANConfig().generator_filters == 64


# --- the losses -----------------------------------------------------------------------------------------

class Negate(nn.Module):
    def forward(self, x):
        return -x


def silenced(method):
    """Both discriminators output 0 everywhere: LSGAN gives 1 against the label 1 and 0 against 0."""
    with torch.no_grad():
        for discriminator in (method.discriminator_target, method.discriminator_source):
            discriminator.layers[-1].weight.zero_()
            discriminator.layers[-1].bias.zero_()
    return method


def test_cycle_and_identity_losses_vanish_for_identity_generators():
    method = silenced(cyclegan())
    method.generator, method.inverse = nn.Identity(), nn.Identity()
    batch = {"source": images(1, seed=1), "target": images(1, seed=2)}
    shared = {}
    out = method(batch, "generators", None, shared)
    assert method.uses_identity
    assert out["cycle_source"] == out["cycle_target"] == out["identity_g"] == out["identity_f"] == 0
    assert out["gan_g"] == out["gan_f"] == 1 and out["loss"].item() == 2
    out = method(batch, "discriminators", None, shared)
    assert out["loss"].item() == pytest.approx(1.0)  # 0.5 (1 + 0) per discriminator
    assert out["d_target_fake"] == out["d_source_real"] == 0


def test_losses_weigh_cycle_10_and_identity_5():
    """G = -x, F = identity: F(G(x)) = -x, G(F(y)) = -y, G(y) = -y, F(x) = x."""
    method = silenced(cyclegan())
    method.generator, method.inverse = Negate(), nn.Identity()
    x, y = images(1, seed=1), images(1, seed=2)
    out = method({"source": x, "target": y}, "generators", None, {})
    two_x, two_y = (2 * x.abs().mean()).item(), (2 * y.abs().mean()).item()
    assert out["cycle_source"].item() == pytest.approx(two_x) and out["cycle_target"].item() == pytest.approx(two_y)
    assert out["identity_g"].item() == pytest.approx(two_y) and out["identity_f"] == 0
    assert out["loss"].item() == pytest.approx(2 + 10 * (two_x + two_y) + 5 * two_y, rel=1e-6)
    no_identity = silenced(cyclegan(lambda_identity=0.0))
    no_identity.generator, no_identity.inverse = Negate(), nn.Identity()
    out = no_identity({"source": x, "target": y}, "generators", None, {})
    assert "identity_g" not in out and out["loss"].item() == pytest.approx(2 + 10 * (two_x + two_y), rel=1e-6)


def test_no_identity_loss_between_different_channel_counts():
    method = silenced(cyclegan(source_channels=1, target_channels=3))
    assert not method.uses_identity and method.config.lambda_identity == 0.5
    out = method({"source": images(1, 1), "target": images(1, 3)}, "generators", None, {})
    assert "identity_g" not in out and "identity_f" not in out
    expected = 2 + 10 * (out["cycle_source"] + out["cycle_target"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


# --- one training step ----------------------------------------------------------------------------------

class Items(Dataset):
    """Images as a one-sided set (the items of an image folder)."""

    def __init__(self, tensors):
        self.tensors, self.channels = tensors, tensors.shape[1]

    def __len__(self):
        return len(self.tensors)

    def __getitem__(self, index):
        return {"image": self.tensors[index], "name": f"i{index}"}


def test_a_step_updates_the_generators_first_then_the_discriminators(tmp_path):
    """The loop's step equals, to the bit, a hand-made one: G and F against the current discriminators,
    then D_Y and D_X on real images and the pooled fakes (the pool is filling: the fakes themselves). The
    generator phase leaves the discriminators' gradients empty, the discriminator phase G's and F's."""
    x, y = images(1, seed=1), images(1, 3, seed=2)
    method = cyclegan(target_channels=3)
    by_hand = copy.deepcopy(method)
    config = step_config()
    result = train(method, UnpairedData(Items(x), Items(y)), config, tmp_path, progress=False)
    assert list(result["phase_losses"][0]) == ["generators", "discriminators"]

    optimizers, shared = by_hand.optimizers(config), {}
    discriminators = [by_hand.discriminator_target, by_hand.discriminator_source]
    generators = [by_hand.generator, by_hand.inverse]
    for phase, optimizer in optimizers.items():
        loss = by_hand({"source": x, "target": y}, phase, None, shared)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if phase == "generators":
            assert all(p.grad is None for module in discriminators for p in module.parameters())
            after_generators = [p.grad.clone() for module in generators for p in module.parameters()]
        else:  # the fakes reach the discriminators detached: G's and F's gradients are as they were
            after = [p.grad for module in generators for p in module.parameters()]
            assert all(torch.equal(a, b) for a, b in zip(after, after_generators))
        optimizer.step()
    assert torch.equal(by_hand.pool_target.images[0], shared["fake_target"][0].detach())
    trained = dict(method.state_dict())
    for name, tensor in by_hand.state_dict().items():
        assert torch.equal(trained[name], tensor), name
    assert method.pool_target.count.item() == method.pool_source.count.item() == 1


# --- training on two folders, checkpoints, translation --------------------------------------------------

def test_trains_on_two_unaligned_folders_saves_loads_and_translates(tmp_path, capsys):
    """Grey sources, RGB targets (no identity loss), through build_run, train, load_pretrained and the
    command line; the rate holds and then halves over the last 2 of 4 steps."""
    from cdtsde.run import build_run

    rng = np.random.default_rng(0)
    for folder, count, shape in (("sar", 5, (28, 28)), ("optical", 3, (28, 28, 3))):
        (tmp_path / folder).mkdir()
        for i in range(count):
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(tmp_path / folder / f"{folder}{i}.png")
    side = {"kind": "image-folder", "size": 24, "val_fraction": 0.0, "test_fraction": 0.0}
    config = {"method": "cyclegan",
              "data": {"kind": "unpaired", "source": {**side, "root": "sar"}, "target": {**side, "root": "optical"}},
              "model": SMALL,
              "train": {"max_steps": 4, "decay_steps": 2, "sample_every": 0, "log_every": 1, "checkpoint_every": 4}}
    method, train_set, _, train_config = build_run(config, base_dir=tmp_path)
    assert train_set.stream_sizes == (5, 3) and (method.data.source_channels, method.data.target_channels) == (1, 3)
    assert (train_config.lr, train_config.batch_size, train_config.ema_decay) == (2e-4, 1, 0.0)
    result = train(method, train_set, train_config, tmp_path / "run", progress=False)
    assert len(result["losses"]) == 4
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(row["lr"]) for row in rows] == [2e-4, 2e-4, 2e-4, 1e-4]
    assert {"loss_generators", "loss_discriminators", "gan_g", "gan_f", "cycle_source", "cycle_target",
            "d_target_real", "d_target_fake", "d_source_real", "d_source_fake"} <= set(rows[0])
    assert not any(key.startswith("identity") for key in rows[0])
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["optimizers"]["generators"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert state["model"]["pool_target.count"].item() == 2  # full (2 images) after 4 steps

    from safetensors.torch import load_file

    published = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert set(published) == {key for key in state["model"] if not key.startswith("pool_")}  # the pools stay in state.pt
    loaded = load_pretrained(tmp_path / "run")
    assert loaded.name == "cyclegan" and loaded.data == method.data
    assert loaded.pool_target.count.item() == 0  # a loaded model starts with empty pools
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "run" / "model", broken)
    dropped = sorted(published)[0]
    save_file({k: v for k, v in published.items() if k != dropped}, str(broken / "model.safetensors"))
    record = json.loads((broken / "config.json").read_text())  # a consistent checksum: the tensors are the problem
    record["weights_sha256"] = file_sha256(broken / "model.safetensors")
    (broken / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match=f"model.safetensors: cannot load weights .*missing {re.escape(dropped)}"):
        load_pretrained(broken)
    sources = images(2, 1, seed=3)
    translation = loaded.translate(sources).images
    assert translation.shape == (2, 3, 24, 24) and translation.abs().max() <= 1
    assert torch.equal(translation, method.translate(sources).images)  # no EMA: the trained weights

    grey = (rng.random((20, 23)) * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    translate = ["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "a.png")]
    assert main([*translate, "--output", str(tmp_path / "out")]) == 0
    out = Image.open(tmp_path / "out" / "a.png")
    assert out.size == (23, 20) and out.mode == "RGB"
    capsys.readouterr()
    assert main([*translate, "--output", str(tmp_path / "out2"), "--steps", "3"]) == 2
    assert "the cyclegan method has no sampling option --steps (its options: none)" in capsys.readouterr().err


# --- exact resume ---------------------------------------------------------------------------------------

class Killed(UnpairedData):
    """The run is killed when it fetches the batch of step `at` (batch size 1: one item per step)."""

    def __init__(self, sources, targets, at):
        super().__init__(sources, targets)
        self.left = at

    def __getitem__(self, index):
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        return super().__getitem__(index)


def test_resume_after_a_kill_with_the_pool_in_use_repeats_the_run_bit_for_bit(tmp_path):
    """6 steps straight equal a run killed in step 4 and resumed from its step-3 checkpoint (weights,
    optimisers, pools, losses), with a pool of 2 that is full from step 2 on and swaps, random flips and the
    rate decaying over the last 3 steps; a resume whose pools were emptied gives another run."""
    sides = InversionPairs(n=5, size=24, seed=1), InversionPairs(n=7, size=24, seed=2)
    config = step_config(max_steps=6, checkpoint_every=3, log_every=3, decay_steps=3, flips=True, lr=1e-3)
    straight = train(cyclegan(), UnpairedData(*sides), config, tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cyclegan(), Killed(*sides, at=4), config, tmp_path / "b", progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "state.pt").write_bytes((tmp_path / "b" / "state.pt").read_bytes())
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=False)["step"] == 3
    resumed = train(cyclegan(seed=9), UnpairedData(*sides), config, tmp_path / "b", resume=True, progress=False)
    assert resumed["phase_losses"] == straight["phase_losses"][3:]
    a, b = (torch.load(tmp_path / run / "state.pt", weights_only=False) for run in ("a", "b"))
    assert a["model"]["pool_target.count"].item() == 2
    for name, tensor in a["model"].items():
        assert torch.equal(b["model"][name], tensor), name
    for phase in ("generators", "discriminators"):
        for key, value in a["optimizers"][phase]["state"].items():
            for field, tensor in value.items():
                assert torch.equal(b["optimizers"][phase]["state"][key][field], tensor), (phase, key, field)

    emptied = torch.load(tmp_path / "c" / "state.pt", weights_only=False)
    for pool in ("pool_target", "pool_source"):
        emptied["model"][f"{pool}.images"].zero_()
        emptied["model"][f"{pool}.count"].zero_()
    torch.save(emptied, tmp_path / "c" / "state.pt")
    forgetful = train(cyclegan(), UnpairedData(*sides), config, tmp_path / "c", resume=True, progress=False)
    assert forgetful["phase_losses"][0]["generators"] == straight["phase_losses"][3]["generators"]
    assert forgetful["phase_losses"] != straight["phase_losses"][3:]  # the discriminators saw other images


@pytest.mark.slow
def test_overfits_one_real_brats_pair_through_the_adversarial_and_cycle_losses(shared_data, tmp_path):
    """One BraTS T2 slice as the whole source domain and its T1 partner as the whole target domain (32 px,
    300 steps of batch 1, about 13 s on one core): G must reproduce the T1 slice above 35 dB PSNR, where the
    T2 slice itself scores 22 dB (measured over seeds 0-2: 45, 57, 46 dB). Nothing tells G which T1 image
    belongs to which T2 one but the discriminator and the cycle, so this checks the whole training step on
    real intensities, not only the losses' arithmetic."""
    from cdtsde.data import build_dataset
    from cdtsde.intensity import model_to_unit
    from cdtsde.metrics import image_metrics

    data = build_dataset({"kind": "brats", "root": str(shared_data / "brats-mri"), "size": 32, "hflip": False,
                          "source": "t2", "target": "t1"}, "train")
    item = data[len(data) // 2]

    class OneImage(Dataset):
        source_channels = target_channels = 1

        def __len__(self):
            return 4

        def __getitem__(self, index):
            return item

    torch.manual_seed(0)
    method = CycleGAN(CycleGANConfig(generator_filters=8, discriminator_filters=8, blocks=2, pool_size=0,
                                     discriminator_layers=2),
                      DataInfo(source_channels=1, target_channels=1, image_size=32))
    train(method, UnpairedData(OneImage(), OneImage()),
          TrainConfig(max_steps=300, batch_size=1, lr=2e-3, decay_steps=150, ema_decay=0, sample_every=0,
                      checkpoint_every=10**6, flips=False), tmp_path, progress=False)
    out = method.eval().translate(item["source"][None]).images

    def unit(image):
        return model_to_unit(image).permute(1, 2, 0).numpy()

    assert image_metrics(unit(item["source"]), unit(item["target"]))["psnr"] < 25
    psnr = image_metrics(unit(out[0]), unit(item["target"]))["psnr"]
    assert psnr > 35, psnr
