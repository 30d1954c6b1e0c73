"""The method-agnostic training loop: several optimisers in alternation, unpaired and target-only data,
precisions, exact resume with more than one optimiser, and what the log records about CDTSDE's field."""

import csv
import math
from dataclasses import dataclass

import pytest
import torch
from helpers import InversionPairs, tiny_model, tiny_run_config

from cdtsde.data import TargetOnlyData, UnpairedData
from cdtsde.methods import DataInfo, Method
from cdtsde.run import build_run
from cdtsde.training import TrainConfig, train
from cdtsde.training.batches import StepBatchSampler


def config(**overrides):
    options = dict(max_steps=6, batch_size=4, lr=1e-2, warmup_steps=1, log_every=3, sample_every=0,
                   checkpoint_every=3, seed=5, ema_decay=0.9)
    return TrainConfig(**{**options, **overrides})


@dataclass
class ToyConfig:
    width: int = 4


class ToyAdversarial(Method):
    """A generator G (1x1 conv) and a critic D: D is updated first, then G against the updated D, reusing
    the fake D saw (the pix2pix/CycleGAN order); every call is recorded."""

    name, description, data_kind, config_class = "toy-adversarial", "test double", "paired", ToyConfig

    def __init__(self, config, data):
        super().__init__(config, data)
        self.generator = torch.nn.Conv2d(1, 1, 1)
        self.critic = torch.nn.Sequential(torch.nn.Conv2d(2, config.width, 1), torch.nn.ReLU(), torch.nn.Conv2d(config.width, 1, 1))
        self.calls = []

    def optimizers(self, train):
        return {"critic": torch.optim.Adam([{"params": self.critic.parameters(), "lr_scale": 2.0}], lr=train.lr),
                "generator": torch.optim.Adam([{"params": self.generator.parameters(), "lr_scale": 1.0}], lr=train.lr)}

    def forward(self, batch, phase, generator, shared):
        source, target = batch["source"], batch["target"]
        self.calls.append((phase, "fake" in shared))
        if phase == "critic":
            shared["fake"] = self.generator(source)
            real = self.critic(torch.cat([source, target], 1))
            fake = self.critic(torch.cat([source, shared["fake"].detach()], 1))
            return {"loss": (real - 1).square().mean() + fake.square().mean(), "critic_real": real.mean().detach()}
        fake = self.critic(torch.cat([source, shared["fake"]], 1))
        return {"loss": (fake - 1).square().mean() + (shared["fake"] - target).abs().mean()}

    def generate(self, sources, sampling, generator):
        from cdtsde.methods import TranslationOutput

        return TranslationOutput(self.generator(sources))


def toy(seed=0):
    torch.manual_seed(seed)
    return ToyAdversarial(ToyConfig(), DataInfo(source_channels=1, target_channels=1, image_size=16))


def test_two_optimisers_alternate_and_resume_exactly(tmp_path):
    method = toy()
    straight = train(method, InversionPairs(n=12), config(), tmp_path / "a", progress=False)
    assert method.calls == [("critic", False), ("generator", True)] * 6
    assert [sorted(losses) for losses in straight["phase_losses"]] == [["critic", "generator"]] * 6
    state = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    critic_lr = state["optimizers"]["critic"]["param_groups"][0]["lr"]
    assert critic_lr == pytest.approx(2 * state["optimizers"]["generator"]["param_groups"][0]["lr"])
    train(toy(), InversionPairs(n=12), config(max_steps=3), tmp_path / "b", progress=False)
    resumed = train(toy(seed=9), InversionPairs(n=12), config(), tmp_path / "b", resume=True, progress=False)
    assert resumed["phase_losses"] == straight["phase_losses"][3:]
    other = torch.load(tmp_path / "b" / "state.pt", weights_only=False)
    for key in ("model", "ema"):
        for name, tensor in state[key].items():
            torch.testing.assert_close(other[key][name], tensor, rtol=0, atol=1e-7)
    rows = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [row["step"] for row in rows] == ["3", "6"]
    assert {"loss_critic", "loss_generator", "critic_real", "lr", "seconds"} <= set(rows[0])


def test_snapshots_keep_the_weights_a_shorter_run_ends_with(tmp_path):
    from safetensors.torch import load_file

    train(toy(), InversionPairs(n=12), config(snapshot_steps=(2, 6)), tmp_path / "long", progress=False)
    train(toy(), InversionPairs(n=12), config(max_steps=2), tmp_path / "short", progress=False)
    snapshot = load_file(tmp_path / "long" / "snapshots" / "step-0000002" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "short" / "model" / "model.safetensors").items():
        torch.testing.assert_close(snapshot[name], tensor, rtol=0, atol=0)
    final = load_file(tmp_path / "long" / "model" / "model.safetensors")
    last = load_file(tmp_path / "long" / "snapshots" / "step-0000006" / "model.safetensors")
    assert all(torch.equal(final[name], last[name]) for name in final)
    assert sorted(p.name for p in (tmp_path / "long" / "snapshots").iterdir()) == ["step-0000002", "step-0000006"]
    with pytest.raises(ValueError, match="snapshot_steps must list steps >= 1"):
        config(snapshot_steps=(0,))


def test_previews_are_drawn_from_the_ema_weights_when_due(tmp_path):
    """`preview` gets the EMA weights every sample_every steps and after the last, with the path of its
    figure; the loop draws nothing itself, and sample_every 0 turns previews off."""
    from safetensors.torch import load_file

    drawn = []

    def preview(model, path):
        drawn.append((path, {name: tensor.clone() for name, tensor in model.state_dict().items()}))

    run = tmp_path / "a"
    train(toy(), InversionPairs(n=12), config(max_steps=5, sample_every=2, snapshot_steps=(4,)), run,
          preview=preview, progress=False)
    assert [path for path, _ in drawn] == [run / "samples" / f"step_{n:07d}.png" for n in (2, 4, 5)]
    state = torch.load(run / "state.pt", weights_only=False)
    final = load_file(run / "model" / "model.safetensors")
    for (_, weights), ema in zip(drawn[1:], (load_file(run / "snapshots" / "step-0000004" / "model.safetensors"), final)):
        assert all(torch.equal(weights[name], ema[name]) for name in ema)
    assert not all(torch.equal(state["model"][name], final[name]) for name in final)  # EMA, not the trained ones
    assert not (run / "samples").exists()
    drawn.clear()
    train(toy(), InversionPairs(n=12), config(max_steps=2, sample_every=0), tmp_path / "b", preview=preview,
          progress=False)
    assert drawn == []


def test_a_run_of_another_method_is_not_resumed(tmp_path):
    from cdtsde.errors import CdtsdeError

    train(toy(), InversionPairs(n=8), config(max_steps=3), tmp_path, progress=False)
    with pytest.raises(CdtsdeError, match="a toy-adversarial run cannot be resumed as cdtsde"):
        train(tiny_model(), InversionPairs(n=8), config(), tmp_path, resume=True, progress=False)


class TargetPrior(Method):
    """A target-only test double: learns the mean target image; must never see a source."""

    name, description, data_kind, config_class = "toy-prior", "test double", "target-only", ToyConfig

    def __init__(self, config, data):
        super().__init__(config, data)
        self.mean = torch.nn.Parameter(torch.zeros(1, data.target_channels, 16, 16))

    def forward(self, batch, phase, generator, shared):
        assert set(batch) == {"target", "name"}
        return {"loss": (batch["target"] - self.mean).square().mean()}


def test_target_only_training_sees_targets_alone(tmp_path):
    pairs = InversionPairs(n=8)
    method = TargetPrior(ToyConfig(), DataInfo(source_channels=None, target_channels=1))
    result = train(method, TargetOnlyData(pairs), config(max_steps=60, lr=0.05, flips=False, grad_clip=0),
                   tmp_path, progress=False)
    assert result["losses"][-1] < result["losses"][0]
    assert (method.mean[0] - pairs.targets.mean(0)).abs().mean() < 0.05


def test_unpaired_batches_draw_the_two_sides_independently():
    sources, targets = InversionPairs(n=6, seed=1), InversionPairs(n=10, seed=2)
    data = UnpairedData(sources, targets)
    sampler = StepBatchSampler(data.stream_sizes, 4, seed=3, start_step=0, max_steps=10)
    batches = list(sampler)
    assert all(isinstance(index, tuple) for batch in batches for index in batch)
    firsts = [i for batch in batches for i, _ in batch]
    seconds = [j for batch in batches for _, j in batch]
    assert sorted(firsts[:6]) == list(range(6)) and sorted(seconds[:10]) == list(range(10))  # each stream: epochs
    assert list(StepBatchSampler(data.stream_sizes, 4, seed=3, start_step=4, max_steps=10)) == batches[4:]
    # the two sides are not aligned: some pairs (i, j) have i != j
    assert any(i != j for i, j in zip(firsts, seconds))
    item = data[(2, 7)]
    assert torch.equal(item["source"], sources[2]["source"]) and torch.equal(item["target"], targets[7]["target"])


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "64-true"])
def test_every_accepted_precision_trains_on_the_cpu(tmp_path, precision):
    """Each precision runs the same training (same initialisation and draws) in its own arithmetic: the
    weights in its dtype, the first loss float32's to within that arithmetic's rounding (bf16: a bf16 value)."""
    reference = train(tiny_model(), InversionPairs(n=8), config(max_steps=2), tmp_path / "fp32", progress=False)
    model = tiny_model()
    result = train(model, InversionPairs(n=8), config(max_steps=2, precision=precision), tmp_path, progress=False)
    assert len(result["losses"]) == 2 and all(torch.isfinite(torch.tensor(result["losses"])))
    dtypes = {"bf16-mixed": torch.float32, "bf16-true": torch.bfloat16, "64-true": torch.float64}
    assert {p.dtype for p in model.parameters()} == {dtypes[precision]}
    first, expected = result["losses"][0], reference["losses"][0]
    if precision == "64-true":
        assert first == pytest.approx(expected, rel=1e-6)
    else:
        assert first != expected and float(torch.tensor(first).bfloat16()) == first
        assert first == pytest.approx(expected, rel=1e-2)
    from cdtsde.training import load_pretrained

    loaded = load_pretrained(tmp_path)
    assert torch.isfinite(loaded.translate(InversionPairs(n=2).sources, steps=2).images).all()


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan"])
def test_the_phases_of_a_step_share_their_values_under_mixed_precision(tmp_path, name):
    """The generator phase reads the fake the discriminator phase made (`shared`): under bf16-mixed too, whose
    precision plugin rebuilds the dicts among a module's inputs."""
    method, train_set, _, train_config = build_run(tiny_run_config(name, size=32, precision="bf16-mixed"))
    result = train(method, train_set, train_config, tmp_path, progress=False)
    assert len(result["phase_losses"]) == 2 and all(math.isfinite(v) for step in result["phase_losses"]
                                                    for v in step.values())


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_a_run_in_its_own_dtype_resumes_exactly(tmp_path, precision):
    """The optimiser state is restored after the weights are cast to the run's dtype, so a resumed
    bf16-true or 64-true run continues as if it had never stopped."""
    straight = train(tiny_model(), InversionPairs(n=8), config(precision=precision), tmp_path / "a", progress=False)
    train(tiny_model(), InversionPairs(n=8), config(precision=precision, max_steps=3), tmp_path / "b", progress=False)
    resumed = train(tiny_model(seed=9), InversionPairs(n=8), config(precision=precision), tmp_path / "b",
                    resume=True, progress=False)
    assert resumed["losses"] == straight["losses"][3:]
    a, b = (torch.load(tmp_path / run / "state.pt", weights_only=False) for run in ("a", "b"))
    for name, tensor in a["model"].items():
        assert torch.equal(b["model"][name], tensor), name


@pytest.mark.parametrize("precision, match", [("16-true", "float16.*not supported on the CPU"),
                                              ("16-mixed", "float16.*not supported on the CPU"),
                                              ("half", "precision must be one of")])
def test_unsupported_precisions_are_refused_up_front(precision, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(precision=precision)


def test_the_log_records_the_mixer_output_g_not_lambda_minus_eta(tmp_path):
    """A mixer parked on Eq. 2's lower envelope (g = -1) shows as g_at_lower = 1 in the log."""
    model = tiny_model(variant="dynamic")
    with torch.no_grad():
        model.field.net[-1].bias.fill_(-40.0)
    train(model, InversionPairs(n=8), config(max_steps=3, lr=1e-6), tmp_path, progress=False)
    row = list(csv.DictReader(open(tmp_path / "metrics.csv")))[0]
    assert "lambda_minus_eta" not in row
    assert float(row["g_at_lower"]) == 1.0 and float(row["g_at_upper"]) == 0.0
    assert float(row["g_mean"]) == pytest.approx(-1.0, abs=1e-6) and float(row["g_spatial_std"]) < 1e-6
    channel = tiny_model(variant="channel")
    train(channel, InversionPairs(n=8), config(max_steps=3), tmp_path / "channel", progress=False)
    assert "lambda_minus_eta" in list(csv.DictReader(open(tmp_path / "channel" / "metrics.csv")))[0]


def test_unpaired_training_from_two_folders_of_single_images(tmp_path):
    """{kind: unpaired, source: image-folder, target: image-folder}: each side read alone, drawn apart."""
    import numpy as np
    from PIL import Image

    from cdtsde.run import build_run

    rng = np.random.default_rng(0)
    for side, count in (("a", 5), ("b", 7)):
        (tmp_path / side).mkdir()
        for i in range(count):
            Image.fromarray((rng.random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / side / f"{side}{i}.png")
    folder = {"kind": "image-folder", "size": 16, "val_fraction": 0.0, "test_fraction": 0.0}
    config = {"data": {"kind": "unpaired", "source": {**folder, "root": "a"}, "target": {**folder, "root": "b"}},
              "model": {"width": 2}, "train": {"max_steps": 2, "batch_size": 3, "sample_every": 0}}
    from cdtsde.methods import REGISTRY

    REGISTRY["toy-unpaired"] = f"{__name__}:ToyUnpaired"
    try:
        method, train_set, _, train_config = build_run(config, base_dir=tmp_path, method="toy-unpaired")
    finally:
        del REGISTRY["toy-unpaired"]
    assert train_set.stream_sizes == (5, 7) and method.data.source_channels == 1 and method.data.image_size == 16
    item = train_set[(1, 6)]
    assert item["name"] == "a1|b6" and item["source"].shape == item["target"].shape == (1, 16, 16)
    result = train(method, train_set, train_config, tmp_path / "run", progress=False)
    assert len(result["losses"]) == 2
    with pytest.raises(Exception, match="a paired method cannot train on unpaired data|cannot train on unpaired"):
        build_run(config, base_dir=tmp_path, method="cdtsde")


class ToyUnpaired(ToyAdversarial):
    name, data_kind = "toy-unpaired", "unpaired"


def test_learning_rate_warms_up_holds_and_decays_linearly():
    from cdtsde.training.loop import learning_rate

    schedule = TrainConfig(max_steps=10, lr=1.0, warmup_steps=2, decay_steps=4)
    assert [learning_rate(schedule, step) for step in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    assert learning_rate(TrainConfig(max_steps=10, lr=1.0, warmup_steps=1), 9) == 1.0


def test_train_seed_fixes_the_initial_weights():
    """`train.seed` seeds the method's construction: two builds of one configuration start from identical
    weights whatever the global RNG did before, and another seed starts elsewhere."""
    from cdtsde.run import build_run

    config = {"data": {"kind": "procedural", "task": "mri-phantom", "n": 4, "size": 16},
              "model": {"unet": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                                 "attention_resolutions": []}},
              "train": {"max_steps": 1, "seed": 3}}
    first = build_run(config)[0].state_dict()
    torch.rand(100)
    second = build_run(config)[0].state_dict()
    other = build_run({**config, "train": {"max_steps": 1, "seed": 4}})[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
