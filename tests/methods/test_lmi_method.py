"""The LMI-guided zero-shot method (docs/zero-shot.md section 5): the network's extra input channels are
lmi_condition(reference, x_t) at every evaluation, the reference being the clean target in training and
the source at translation; LMI's invariance to a bijective grey-level remap carries over to translations;
options, checkpoints and the command line."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_UNET, InversionPairs

from cdtsde.errors import CdtsdeError
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.lmi import LMIConfig, LMIGuided
from cdtsde.methods.prior import Prior
from cdtsde.mutual_information import DEFAULT_BINS, LMIOptions, lmi_condition
from cdtsde.networks.conditional_unet import UNetConfig
from cdtsde.settings import from_plain, to_plain


def make(target_channels=1, prediction="eps", seed=0, randomise=True, **lmi):
    torch.manual_seed(seed)
    method = LMIGuided(LMIConfig(unet=UNetConfig(**TINY_UNET), prediction=prediction, lmi=LMIOptions(**lmi)),
                       DataInfo(source_channels=None, target_channels=target_channels, image_size=16))
    if randomise:  # a non-zero output layer, so that translations depend on the network's input
        with torch.no_grad():
            for parameter in method.net.parameters():
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return method


class Spy(torch.nn.Module):
    """Records what the network is given at every call and passes it on."""

    def __init__(self, net):
        super().__init__()
        self.inner, self.calls = net, []

    def forward(self, x_t, condition, t):
        self.calls.append((x_t.clone(), condition.clone(), t.clone()))
        return self.inner(x_t, condition, t)


def test_registry_defaults_and_options():
    assert method_class("lmi") is LMIGuided and LMIGuided.data_kind == "target-only"
    assert issubclass(LMIGuided, Prior)
    method = make(target_channels=3, randomise=False)
    assert method.condition_channels() == 6 and method.net.cond_channels == 6
    assert (method.sampling.steps, method.sampling.eta, method.sampling.clip_denoised) == (50, 0.0, True)
    assert method.network_evaluations() == 50 and method.network_evaluations(method.sampling_options(steps=4)) == 4
    assert method.config.lmi == LMIOptions() and method.config.lmi.resolved().bins == DEFAULT_BINS
    with pytest.raises(ValueError, match="LMI mode must be one of"):
        LMIConfig(lmi=LMIOptions(mode="exact"))
    with pytest.raises(ValueError, match="patch must be an odd"):
        LMIConfig(lmi={"patch": 4})
    with pytest.raises(ValueError, match=r"unknown model.lmi option\(s\): bandwidth"):
        from_plain(LMIConfig, {"lmi": {"bandwidth": 2}}, "model")
    with pytest.raises(CdtsdeError, match="lmi method has no sampling option.*t0"):
        method.sampling_options(t0=0.4)
    # the configuration round trip through plain data (what a checkpoint and a YAML file hold)
    config = LMIConfig(unet=UNetConfig(**TINY_UNET), prediction="x0", lmi=LMIOptions(mode="reference", patch=5))
    plain = json.loads(json.dumps(to_plain(config)))
    assert plain["lmi"]["mode"] == "reference" and plain["lmi"]["value_range"] == [-1.0, 1.0]
    assert from_plain(LMIConfig, plain, "model") == config


def test_the_condition_is_lmi_of_the_clean_target_in_training():
    method = make(target_channels=2)
    method.net = spy = Spy(method.net)
    x0 = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss = method({"target": x0, "name": list("abc")}, "model", torch.Generator().manual_seed(0), {})["loss"]
    loss.backward()
    assert math.isfinite(loss.item()) and len(spy.calls) == 1
    x_t, condition, t = spy.calls[0]
    assert condition.shape == (3, 4, 16, 16) and not condition.requires_grad
    assert torch.equal(condition, lmi_condition(x0, x_t))
    assert not torch.equal(x_t, x0) and t.shape == (3,)


@pytest.mark.parametrize("source_channels, eta", [(1, 0.0), (2, 1.0)])
def test_the_condition_is_lmi_of_the_source_at_every_sampling_step(source_channels, eta, monkeypatch):
    """Two-channel target; a grey source is repeated over the target's channels (in_target_space). The self
    map is computed once per translation (never the full lmi_condition), and the result is still equal."""
    method = make(target_channels=2, mode="reference")
    method.net = spy = Spy(method.net)

    def refuse(*args, **kwargs):
        raise AssertionError("the self map should come from the translation's cache")

    monkeypatch.setattr("cdtsde.methods.lmi.lmi_condition", refuse)
    source = torch.rand(2, source_channels, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    reference = source.expand(-1, 2, -1, -1)
    out = method.translate(source, steps=4, eta=eta, generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (2, 2, 16, 16) and out.abs().max() <= 1
    assert [int(t[0]) for _, _, t in spy.calls] == method.path.times(4)[:-1] == [999, 666, 333, 0]
    for x_t, condition, _ in spy.calls:
        assert torch.equal(condition, lmi_condition(reference, x_t, method.config.lmi))
    crosses = [condition[:, :2] for _, condition, _ in spy.calls]
    assert not torch.equal(crosses[0], crosses[-1])  # recomputed from every iterate
    # the start is pure noise: the source enters through the condition only
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(spy.calls[0][0], torch.randn(reference.shape, generator=generator))
    assert method._own is None  # the self map's cache lives for one translation only


def blocks(levels, generator, bins=DEFAULT_BINS, size=16, block=4):
    """A piecewise-constant image of random grey levels (indices into the LMI bins) on 4 x 4 blocks."""
    coarse = torch.randint(0, levels, (1, 1, size // block, size // block), generator=generator)
    return torch.nn.functional.interpolate(coarse.float(), scale_factor=block, mode="nearest").long()


def test_a_remapped_target_is_translated_exactly_as_the_target_itself():
    """Clean mode, hard bins, grey levels on the bin centres: a non-monotone bijective remap of the target's
    levels (a "modality" with other intensities and the same structure) permutes the rows of every joint
    histogram, so the condition, and hence the translation of any network, is the target's. A source of
    another structure is translated differently."""
    bins = DEFAULT_BINS
    generator = torch.Generator().manual_seed(3)
    index = blocks(bins, generator)
    permutation = torch.randperm(bins, generator=generator)
    assert not (permutation.diff() > 0).all() and not (permutation.diff() < 0).all()  # non-monotone
    level = lambda k: -1 + 2 * k.float() / (bins - 1)  # noqa: E731
    target, remapped, other = level(index), level(permutation[index]), level(blocks(bins, generator))
    assert (remapped - target).abs().max() > 0.5

    method = make(prediction="x0", sigma=0.0)
    runs = {}
    for name, source in (("target", target), ("remapped", remapped), ("other", other)):
        method.net = spy = Spy(method.net if not isinstance(method.net, Spy) else method.net.inner)
        images = method.translate(source.expand(2, -1, -1, -1), steps=5, eta=1.0,
                                  generator=torch.Generator().manual_seed(4)).images
        runs[name] = images, [condition for _, condition, _ in spy.calls]
    for mine, theirs in zip(runs["remapped"][1], runs["target"][1]):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)  # up to the order of the sums
    torch.testing.assert_close(runs["remapped"][0], runs["target"][0], atol=1e-5, rtol=0)
    assert (runs["other"][1][0] - runs["target"][1][0]).abs().max() > 0.1
    assert (runs["other"][0] - runs["target"][0]).abs().max() > 1e-3


def test_train_save_load_and_translate(tmp_path):
    from cdtsde.data import TargetOnlyData
    from cdtsde.training import TrainConfig, load_pretrained, train

    method = make(randomise=False, mode="reference", sigma=6.0)
    result = train(method, TargetOnlyData(InversionPairs(n=8)),
                   TrainConfig(max_steps=3, batch_size=4, sample_every=0, checkpoint_every=3, warmup_steps=1),
                   tmp_path, progress=False)
    assert len(result["losses"]) == 3 and all(math.isfinite(v) for v in result["losses"])
    loaded = load_pretrained(tmp_path)
    assert isinstance(loaded, LMIGuided) and loaded.config == method.config and loaded.sampling == method.sampling
    assert loaded.config.lmi == LMIOptions(mode="reference", sigma=6.0) and loaded.data.source_channels is None
    record = json.loads((tmp_path / "model" / "config.json").read_text())
    assert record["method"] == "lmi" and record["config"]["lmi"]["mode"] == "reference"
    assert record["sampling"] == dataclasses.asdict(loaded.sampling)
    sources = InversionPairs(n=2).sources
    first = loaded.translate(sources, steps=3, generator=torch.Generator().manual_seed(0)).images
    again = loaded.translate(sources, steps=3, generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 1, 16, 16) and torch.equal(first, again) and first.abs().max() <= 1


def test_lmi_trains_and_translates_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from cdtsde.cli import main

    config = {"method": "lmi",
              "data": {"kind": "procedural", "task": "mri-phantom", "n": 4, "n_val": 2, "size": 16, "seed": 1},
              "model": {"unet": TINY_UNET, "prediction": "x0", "lmi": {"mode": "clean", "patch": 5}},
              "train": {"batch_size": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--output", str(run), "--max-steps", "2"]) == 0
    assert "step 2: loss" in capsys.readouterr().out
    record = json.loads((run / "model" / "config.json").read_text())
    assert record["method"] == "lmi" and record["config"]["lmi"]["patch"] == 5
    assert record["sampling"] == {"steps": 50, "eta": 0.0, "clip_denoised": True}
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), "--steps", "2", "--eta", "1"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (16, 16)
