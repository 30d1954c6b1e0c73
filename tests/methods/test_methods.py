"""The method seam: registry, checkpoint format (old and new), sampling options, the identity method."""

import argparse
import importlib
import json
import pkgutil
from dataclasses import dataclass
from dataclasses import field as option

import numpy as np
import pytest
import torch
import yaml
from helpers import FIXTURES, TINY_UNET, tiny_model
from PIL import Image

from cdtsde.cli import main
from cdtsde.cli.sampling import add_sampling_flags, chosen_sampling
from cdtsde.errors import CdtsdeError
from cdtsde.methods import REGISTRY, DataInfo, Method, TranslationOutput, method_class
from cdtsde.methods.identity import Identity, IdentityConfig
from cdtsde.networks.conditional_unet import UNetConfig
from cdtsde.training import load_pretrained, save_pretrained

LEGACY = FIXTURES / "legacy-checkpoint"


def test_every_named_method_class_is_registered_and_unknown_names_are_refused(capsys):
    """The invariant a hand-written list would pin: every method class that names itself, in any module
    under cdtsde/methods, is registered under that name, and the registry names nothing else."""
    import cdtsde.methods

    found = {}
    for module_info in pkgutil.walk_packages(cdtsde.methods.__path__, "cdtsde.methods."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Method) and value.__module__ == module.__name__ \
                    and value.name:
                found[value.name] = f"{module.__name__}:{value.__qualname__}"
    assert found == REGISTRY
    with pytest.raises(CdtsdeError, match="unknown method .pix3pix.; registered: cdtsde, .*identity"):
        method_class("pix3pix")
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cdtsde ") and "paired" in line and "steps, gamma" in line for line in lines)
    assert any(line.startswith("identity ") and "sampling options: none" in line for line in lines)


@dataclass
class FakeConfig:
    """No options."""


@dataclass
class FakeSampling:
    solver: str = option(default="euler", metadata={"help": "fake: the solver", "choices": ("euler", "heun",
                                                                                            "first-order")})


class FakeMethod(Method):
    """A method registered by one test only: its `solver` shares CDTSDE's name but not its choices."""

    name = "fake"
    description = "the source as it is"
    config_class = FakeConfig
    sampling_class = FakeSampling

    def generate(self, sources, sampling, generator):
        return TranslationOutput(self.in_target_space(sources).clone())


@dataclass
class TextSteps:
    steps: str = "many"


class FakeMethodWithTextSteps(FakeMethod):
    sampling_class = TextSteps


def test_a_shared_sampling_flag_takes_every_methods_choices_and_checks_the_loaded_methods(monkeypatch, tmp_path,
                                                                                         capsys):
    monkeypatch.setitem(REGISTRY, "fake", f"{__name__}:FakeMethod")
    parser = argparse.ArgumentParser()
    add_sampling_flags(parser)
    for choice in ("first-order", "dpm++2m", "euler", "heun"):  # CDTSDE's, then the new method's
        assert parser.parse_args(["--solver", choice]).sampling_solver == choice
    with pytest.raises(SystemExit):
        parser.parse_args(["--solver", "rk4"])
    err = capsys.readouterr().err
    assert "invalid choice: 'rk4'" in err and err.count("first-order") == 1
    assert err.index("first-order") < err.index("dpm++2m") < err.index("euler") < err.index("heun")

    fake = FakeMethod(FakeConfig(), DataInfo(source_channels=1, target_channels=1))
    assert chosen_sampling(parser.parse_args(["--solver", "heun"]), fake) == {"solver": "heun"}
    with pytest.raises(CdtsdeError, match=r"the fake method's --solver must be one of euler, heun, first-order, "
                                          r"got 'dpm\+\+2m'"):
        chosen_sampling(parser.parse_args(["--solver", "dpm++2m"]), fake)
    # through the command: a CDTSDE checkpoint asked for the new method's solver
    save_pretrained(tiny_model(), tmp_path / "model")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
    assert main(["translate", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "out"), "--solver", "heun"]) == 2
    assert "the cdtsde method's --solver must be one of first-order, dpm++2m, got 'heun'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # one name, two types: refused when the flags are made
    monkeypatch.setitem(REGISTRY, "fake", f"{__name__}:FakeMethodWithTextSteps")
    with pytest.raises(TypeError, match="sampling option 'steps' is <class 'str'> in fake but <class 'int'> in cdtsde"):
        add_sampling_flags(argparse.ArgumentParser())


def test_a_checkpoint_written_before_the_seam_loads_and_translates_as_it_did():
    """tests/fixtures/legacy-checkpoint was written by commit 3f44b4d (no "method" key) together with the
    translation it gave for fixed sources, steps 3, gamma 1, generator seed 3."""
    from safetensors.torch import load_file

    assert "method" not in json.loads((LEGACY / "config.json").read_text())
    method = load_pretrained(LEGACY)
    assert method.name == "cdtsde" and method.config.field.variant == "dynamic" and method.data.image_size == 16
    expected = load_file(str(LEGACY / "expected.safetensors"))
    result = method.translate(expected["sources"], steps=3, gamma=1.0, generator=torch.Generator().manual_seed(3))
    # equal up to float rounding: the sampler now runs on the Gaussian-path core, whose arithmetic is ordered
    # differently (5e-7 on the machine that wrote the fixture)
    torch.testing.assert_close(result.images, expected["translation"], rtol=0, atol=1e-5)


def test_checkpoint_records_method_versions_data_and_sampling(tmp_path):
    from cdtsde import __version__

    model = tiny_model(variant="channel")
    model.sampling = model.sampling_options(steps=7, gamma=0.0)
    save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["method"] == "cdtsde" and record["format_version"] == 2 and record["cdtsde_version"] == __version__
    assert record["data"] == {"source_channels": 1, "target_channels": 1, "target_kind": "image", "image_size": 16,
                              "nifti_percentile": 99.5, "source_reading": None, "target_reading": None,
                              "slice_axis": 2, "training_scale": "resized", "target_band_names": None,
                              "context_slices": 0, "nifti_orientation": "ras"}
    assert len(record["weights_sha256"]) == 64
    assert record["config"]["field"]["variant"] == "channel" and record["config"]["unet"]["channel_mults"] == [1, 2]
    assert record["sampling"]["steps"] == 7 and record["sampling"]["gamma"] == 0.0
    loaded = load_pretrained(tmp_path)
    assert loaded.sampling.steps == 7 and loaded.config == model.config and loaded.data == model.data
    del record["data"]["context_slices"]  # checkpoints written before it was recorded: no context
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert load_pretrained(tmp_path).data == model.data
    record["data"]["context_slices"] = 1  # 3 slices of one channel each cannot make 1 source channel
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match="context_slices 1 needs sources of 3 slices x the modality's channels, "
                                          "got 1 source channel"):
        load_pretrained(tmp_path)
    record["data"]["context_slices"] = 0
    record["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match="format 99 by a newer cdtsde"):
        load_pretrained(tmp_path)
    record.update(format_version=2, config={**record["config"], "field": {"variant": "linear", "degree": 2}})
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match="invalid cdtsde configuration.*linear field has no option"):
        load_pretrained(tmp_path)


def test_sampling_options_are_checked_by_name_and_value():
    model = tiny_model()
    assert model.sampling_options(steps=3).steps == 3 and model.sampling.steps == 5
    with pytest.raises(CdtsdeError, match="gamma must lie in"):
        model.sampling_options(gamma=1.5)
    with pytest.raises(CdtsdeError, match="sampling.steps must be an integer"):
        model.sampling_options(steps="five")
    # more steps than the model's schedule holds: refused when the options are set, not inside sampling
    assert model.sampling_options(steps=501).steps == 501  # t1 = 500: one evaluation per step at most
    with pytest.raises(CdtsdeError, match="steps must be at most t1 \\+ 1 = 501"):
        model.sampling_options(steps=502)
    bbdm = method_class("bbdm")(method_class("bbdm").config_class(unet=UNetConfig(**TINY_UNET)),
                                DataInfo(source_channels=1, target_channels=1, image_size=16))
    with pytest.raises(CdtsdeError, match=r"steps must lie in \[1, 1000\], got 1001"):
        bbdm.sampling_options(steps=1001)


def test_too_many_steps_are_refused_before_any_work(tmp_path, capsys):
    """In a run configuration (before training starts) and as a translate flag (exit 2, nothing written)."""
    config = {"data": {"kind": "procedural", "n": 4, "size": 16}, "model": {"unet": TINY_UNET},
              "sampling": {"steps": 600}, "train": {"max_steps": 1, "batch_size": 2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--output", str(tmp_path / "run")]) == 2
    assert "sampling.steps must be at most t1 + 1 = 501 (one evaluation per step), got 600" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    save_pretrained(tiny_model(), tmp_path / "model")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "a.png")
    assert main(["translate", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "out"), "--steps", "600"]) == 2
    assert "--steps must be at most t1 + 1 = 501 (one evaluation per step), got 600" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_several_samples_per_source_through_x_start():
    """K x_start draws per source: the sources are repeated (source-major), not a crash inside the UNet."""
    model = tiny_model()
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.normal_(0, 0.05)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    x_start = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    many = model.translate(sources, x_start=x_start, gamma=0.0, steps=2).images
    assert many.shape == (6, 1, 8, 8)
    alone = model.translate(sources[1:], x_start=x_start[3:6], gamma=0.0, steps=2).images
    torch.testing.assert_close(many[3:], alone)
    with pytest.raises(ValueError, match="not a multiple of the 2 sources"):
        model.translate(sources, x_start=x_start[:5], steps=2)


def test_identity_is_the_source_in_the_target_space_and_background_for_masks():
    grey_to_rgb = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=3))
    source = torch.rand(2, 1, 5, 4) * 2 - 1
    assert torch.equal(grey_to_rgb.translate(source).images, source.expand(-1, 3, -1, -1))
    masks = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=5, target_kind="mask"))
    out = masks.translate(source).images
    assert torch.equal(out.argmax(1), torch.zeros(2, 5, 4, dtype=torch.long)) and set(out.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(CdtsdeError, match="identity method has no sampling option.*steps.*it has: none"):
        masks.translate(source, steps=5)


def test_identity_trains_and_translates_from_the_command_line(tmp_path, capsys):
    config = {"method": "identity",
              "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "n_val": 2, "size": 16, "seed": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--output", str(run)]) == 0
    assert "identity has nothing to train" in capsys.readouterr().out
    assert json.loads((run / "model" / "config.json").read_text())["method"] == "identity"
    image = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), image)
    # a sampling flag the checkpoint's method does not have is an error, not silently ignored
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "out2"), "--steps", "3"]) == 2
    assert "the identity method has no sampling option --steps (its options: none)" in capsys.readouterr().err


def test_train_with_an_unknown_method_is_a_clear_error(tmp_path, capsys):
    config = {"data": {"kind": "procedural", "n": 4, "size": 16}, "model": {"unet": TINY_UNET}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--method", "nope", "--output", str(tmp_path / "r")]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
