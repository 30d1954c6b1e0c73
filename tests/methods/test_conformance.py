"""What every registered method must satisfy, checked through the protocol alone (cdtsde.methods.base) and
parametrised over the registry, so that a new method (one folder + one registry line) is tested here with no
test edits: its class declarations, building from its `tiny_config`, translation with each of its
`tiny_sampling` overrides (images and mask targets), the checkpoint round trip, its network-evaluation count,
a short training run, the refusal of unknown sampling options, and, for every diffusion sampler
(`Method.is_diffusion_sampler`), the oracle property: with the truth in place of its clean-target
`estimate`, translation returns the target."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from helpers import tiny_run_config

from cdtsde.errors import CdtsdeError
from cdtsde.methods import REGISTRY, DataInfo, method_class
from cdtsde.methods.base import DATA_KINDS
from cdtsde.settings import from_plain, to_plain
from cdtsde.training import TrainConfig, load_pretrained, save_pretrained, train

SIZE = 16
SOURCE_CHANNELS, TARGET_CHANNELS, MASK_CLASSES = 1, 2, 3
METHODS = list(REGISTRY)


def data_info(cls, target_kind="image") -> DataInfo:
    """The data a method of `cls`'s data kind is told about: a target-only method trains without sources."""
    return DataInfo(source_channels=None if cls.data_kind == "target-only" else SOURCE_CHANNELS,
                    target_channels=MASK_CLASSES if target_kind == "mask" else TARGET_CHANNELS,
                    target_kind=target_kind, image_size=SIZE)


def build(name, target_kind="image", seed=0):
    cls = method_class(name)
    torch.manual_seed(seed)
    return cls(from_plain(cls.config_class, cls.tiny_config, "model"), data_info(cls, target_kind))


def perturbed(method, seed=1):
    """`method` with noise added to every parameter, so that no layer (a zero-initialised output) is trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return method


def sources(n=2, seed=3):
    return torch.rand(n, SOURCE_CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_images(images, channels, n=2):
    assert images.shape == (n, channels, SIZE, SIZE)
    assert torch.isfinite(images).all() and images.abs().max() <= 1


@pytest.mark.parametrize("name", METHODS)
def test_class_declarations_are_valid_and_round_trip(name):
    cls = method_class(name)
    assert cls.name == name and cls.data_kind in DATA_KINDS
    assert isinstance(cls.description, str) and cls.description and "\n" not in cls.description
    assert all(isinstance(key, str) and isinstance(text, str) and text for key, text in cls.diagnostics_help.items())
    assert set(cls.runs_checkpoints_of) <= set(REGISTRY) - {name}
    from_plain(TrainConfig, cls.train_defaults, "train")  # reference settings the training loop accepts
    for options in (cls.config_class, cls.sampling_class):
        assert dataclasses.is_dataclass(options)
        defaults = options()  # every option has a default
        assert from_plain(options, to_plain(defaults), "options") == defaults
    tiny = from_plain(cls.config_class, cls.tiny_config, "model")
    assert from_plain(cls.config_class, to_plain(tiny), "model") == tiny
    assert isinstance(cls.tiny_sampling, tuple) and cls.tiny_sampling
    for overrides in cls.tiny_sampling:
        sampling = from_plain(cls.sampling_class, overrides, "sampling")
        assert from_plain(cls.sampling_class, to_plain(sampling), "sampling") == sampling


@pytest.mark.parametrize("name", METHODS)
def test_translation_gives_finite_images_in_range_for_every_tiny_sampling(name):
    method = build(name)
    assert method.sampling == method.sampling_class()  # a built method records the defaults
    for overrides in method.tiny_sampling:
        output = method.translate(sources(), generator=seeded(), **overrides)
        assert_images(output.images, TARGET_CHANNELS)
        assert set(output.diagnostics) <= set(method.diagnostics_help)


@pytest.mark.parametrize("name", METHODS)
def test_mask_targets_translate_in_range_or_are_refused_when_built(name):
    try:
        method = build(name, target_kind="mask")
    except ValueError as exc:  # a method that cannot learn class maps says so before any work
        assert "mask" in str(exc)
        return
    assert_images(method.translate(sources(), generator=seeded(), **method.tiny_sampling[0]).images, MASK_CLASSES)


@pytest.mark.parametrize("name", METHODS)
def test_a_saved_checkpoint_loads_and_translates_identically(name, tmp_path):
    method = perturbed(build(name)).eval()
    method.sampling = method.sampling_options(**method.tiny_sampling[-1])  # recorded and restored
    save_pretrained(method, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(method) and not loaded.training
    assert (loaded.config, loaded.data, loaded.sampling) == (method.config, method.data, method.sampling)
    expected = method.translate(sources(), generator=seeded(5)).images
    assert torch.equal(loaded.translate(sources(), generator=seeded(5)).images, expected)


@pytest.mark.parametrize("name", METHODS)
def test_network_evaluations_follow_the_sampling_options(name):
    method = build(name)
    assert method.network_evaluations() == method.network_evaluations(method.sampling_class())
    for overrides in method.tiny_sampling:
        sampling = method.sampling_options(**overrides)
        evaluations = method.network_evaluations(sampling)
        assert isinstance(evaluations, int) and evaluations >= 1
        method.sampling = sampling  # the default is the checkpoint's options
        assert method.network_evaluations() == evaluations


@pytest.mark.parametrize("name", METHODS)
def test_unknown_sampling_options_are_refused_by_name(name):
    method = build(name)
    with pytest.raises(CdtsdeError, match=f"the {name} method has no sampling option.*no_such_option") as error:
        method.translate(sources(), no_such_option=1)
    have = sorted(option.name for option in dataclasses.fields(method.sampling_class))
    assert str(error.value).endswith(f"(it has: {', '.join(have) or 'none'})")


@pytest.mark.parametrize("name", METHODS)
def test_a_short_training_run_stays_finite_and_writes_a_loadable_checkpoint(name, tmp_path):
    """Two steps through the training loop on procedural data in the form of the method's data kind: the
    losses and every weight finite, every optimiser's parameters moved, the checkpoint loads and translates."""
    from cdtsde.run import build_run

    method, train_set, _, train_config = build_run(tiny_run_config(name, size=SIZE, log_every=1, warmup_steps=1))
    before = {key: value.clone() for key, value in method.state_dict().items()}
    optimised = [[id(p) for group in optimizer.param_groups for p in group["params"]]
                 for optimizer in method.optimizers(train_config).values()]
    result = train(method, train_set, train_config, tmp_path, progress=False)
    assert all(math.isfinite(loss) for loss in result["losses"])
    assert all(torch.isfinite(value).all() for value in method.state_dict().values() if value.is_floating_point())
    moved = {id(p) for key, p in method.named_parameters() if not torch.equal(p.detach(), before[key])}
    assert all(moved & set(ids) for ids in optimised), "an optimiser's parameters did not move"
    loaded = load_pretrained(tmp_path)
    assert loaded.name == name and loaded.data == method.data
    images = loaded.translate(sources(), generator=seeded(), **loaded.tiny_sampling[0]).images
    assert images.shape == (2, loaded.data.target_channels, SIZE, SIZE) and torch.isfinite(images).all()


@pytest.mark.parametrize("name", METHODS)
def test_an_oracle_estimate_makes_translation_return_the_target(name):
    """The truth in place of the clean-target estimate (`Method.estimate`): paired, each pair's target;
    target-only, the one image of a one-image data set (whatever the source); for every tiny sampling
    setting (step counts, deterministic and stochastic). The oracle sees iterates of the target's shape and
    one time per item, and is asked at most once per network evaluation."""
    cls = method_class(name)
    if not cls.is_diffusion_sampler():
        pytest.skip(f"the {name} method samples no diffusion path")
    method = build(name)
    generator = torch.Generator().manual_seed(7)
    n = 1 if cls.data_kind == "target-only" else 2
    target = (torch.rand(n, TARGET_CHANNELS, SIZE, SIZE, generator=generator) * 2 - 1).expand(2, -1, -1, -1)
    calls = []

    def oracle(x_t, condition, t):
        assert x_t.shape == target.shape and t.shape == (x_t.shape[0],)
        calls.append(t)
        return target

    method.estimate = oracle
    for overrides in cls.tiny_sampling:
        calls.clear()
        images = method.translate(sources(), generator=seeded(), **overrides).images
        torch.testing.assert_close(images, target, rtol=0, atol=1e-5, msg=f"{name} with {overrides}")
        assert 1 <= len(calls) <= method.network_evaluations(method.sampling_options(**overrides))


PAIRED = [name for name in METHODS if method_class(name).data_kind == "paired"]
CONTEXT = 1  # neighbouring slices on each side (DataInfo.context_slices)


def with_neighbours(name, seed=0):
    """`name` built for sources of a slice and its CONTEXT neighbours on each side (3 one-channel slices)."""
    cls = method_class(name)
    torch.manual_seed(seed)
    data = DataInfo(source_channels=2 * CONTEXT + 1, target_channels=1, image_size=SIZE, context_slices=CONTEXT)
    return cls(from_plain(cls.config_class, cls.tiny_config, "model"), data)


@pytest.mark.parametrize("name", PAIRED)
def test_neighbouring_slices_condition_the_translation_and_the_slice_itself_anchors_it(name, monkeypatch):
    """With context the network sees every slice: changing only the neighbours changes the translation; the
    source end of a path and the mixing anchor are the slice itself (`Method.centre_slice`), so a method
    without a network returns it; previews draw the slice itself as the source."""
    import cdtsde.visualize as visualize

    method = perturbed(with_neighbours(name)).eval()
    stack = sources(seed=4).repeat(1, 2 * CONTEXT + 1, 1, 1)[:, :2 * CONTEXT + 1]
    stack = stack + 0.3 * torch.rand(stack.shape, generator=seeded(6)) - 0.15
    centre = stack[:, CONTEXT:CONTEXT + 1]
    assert torch.equal(method.centre_slice(stack), centre)
    assert torch.equal(method.in_target_space(stack), centre)
    moved = stack.clone()
    moved[:, :CONTEXT] = -moved[:, :CONTEXT]
    moved[:, CONTEXT + 1:] = 0.5
    overrides = method.tiny_sampling[0]
    first = method.translate(stack, generator=seeded(), **overrides).images
    again = method.translate(moved, generator=seeded(), **overrides).images
    assert torch.isfinite(first).all() and first.shape == (2, 1, SIZE, SIZE)
    if any(True for _ in method.parameters()):
        assert (first - again).abs().max() > 1e-4, f"{name}: the neighbouring slices do not reach the network"
    else:
        assert torch.equal(first, centre) and torch.equal(again, centre)
    drawn = []
    method.sampling = method.sampling_options(**overrides)  # what the preview translates with
    monkeypatch.setattr(visualize, "save_translation_grid", lambda path, shown, *rest, **options: drawn.append(shown))
    visualize.save_preview(method, [{"source": source, "target": source[:1]} for source in stack], "preview.png")
    assert torch.equal(drawn[0], centre)


@pytest.mark.parametrize("name", [name for name in METHODS if name not in PAIRED])
def test_unpaired_and_target_only_methods_refuse_context_by_name(name):
    with pytest.raises(ValueError, match=f"context_slices is for paired methods .* the {name} method is"):
        with_neighbours(name)


@pytest.fixture(scope="module")
def context_volumes(tmp_path_factory):
    from helpers import ixi_volumes

    return ixi_volumes(tmp_path_factory.mktemp("ixi"), subjects=3, shape=(SIZE, SIZE, 5))


@pytest.mark.parametrize("name", PAIRED)
def test_a_model_trained_with_context_records_it_and_translates_a_volume_through_the_cli(name, context_volumes,
                                                                                        tmp_path):
    """Two training steps on NIfTI slices with CONTEXT neighbours; the checkpoint records k (config.json), and
    `cdtsde translate` of a volume builds each slice's neighbours, writing the volume with its affine; a 2-D
    image is refused naming the file and k (exit 1: that file failed)."""
    import json

    import nibabel as nib
    from helpers import ixi_volumes

    from cdtsde.cli import main
    from cdtsde.run import build_run
    from cdtsde.translate import translate_file

    cls = method_class(name)
    config = tiny_run_config(name, size=SIZE)
    config["data"] = {"kind": "ixi", "root": str(context_volumes), "size": SIZE, "context_slices": CONTEXT,
                      "val_subjects": 1, "test_subjects": 0}
    config["sampling"] = dict(cls.tiny_sampling[0])
    method, train_set, _, train_config = build_run(config)
    assert method.data.context_slices == CONTEXT and method.data.source_channels == train_set.source_channels == 3
    train(method, train_set, train_config, tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["data"]["context_slices"] == CONTEXT
    assert load_pretrained(tmp_path / "run").data == method.data

    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    ixi_volumes(tmp_path, subjects=1, shape=(SIZE, SIZE, 4), seed=9, affine=affine)
    volume = tmp_path / "IXI000-Guys-0001-T1.nii.gz"
    assert main(["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(volume),
                 "--output", str(tmp_path / "out")]) == 0
    out = nib.load(tmp_path / "out" / volume.name)
    assert out.shape == (SIZE, SIZE, 4)
    np.testing.assert_allclose(out.affine, affine)
    data = out.get_fdata()
    assert np.isfinite(data).all() and 0 <= data.min() and data.max() <= 1

    slice_file = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(nib.load(volume).get_fdata()[:, :, 1], affine), slice_file)
    with pytest.raises(CdtsdeError, match=rf"{slice_file}: a 2-D image, but the model was trained with "
                                          rf"context_slices: {CONTEXT}"):
        translate_file(load_pretrained(tmp_path / "run"), slice_file, tmp_path / "out2")
    assert main(["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(slice_file),
                 "--output", str(tmp_path / "out2")]) == 1
    assert not (tmp_path / "out2" / slice_file.name).exists()


@pytest.mark.parametrize("name", METHODS)
def test_volume_noise_reaches_every_method_through_its_draws(name):
    """A volume of equal slices: with "shared" noise every slice translates alike (the method draws all its
    randomness through cdtsde.draws), "correlated" slices differ where "independent" ones do (a stochastic
    method), and "independent" is the translation of the whole batch with the one generator of the seed."""
    from cdtsde.intensity import model_to_unit, unit_to_model
    from cdtsde.translate import VolumeNoise, translate_slices

    method = perturbed(build(name)).eval()
    sampling = method.sampling_options(**method.tiny_sampling[-1])
    volume = model_to_unit(sources(1)).permute(0, 2, 3, 1).repeat(3, 1, 1, 1).numpy()
    out = {kind: translate_slices(method, volume, sampling, seed=4, batch_size=3, noise=VolumeNoise(kind)).mean
           for kind in ("independent", "shared", "correlated")}
    assert all(torch.allclose(torch.from_numpy(cut), torch.from_numpy(out["shared"][0]), atol=1e-6)
               for cut in out["shared"])

    def differs(translation):
        return not torch.allclose(torch.from_numpy(translation[0]), torch.from_numpy(translation[1]), atol=1e-6)

    assert differs(out["correlated"]) == differs(out["independent"])
    # laid out as translate_slices lays its batches out (repeated per sample): strides decide a convolution's last bits
    batch = unit_to_model(torch.from_numpy(volume).permute(0, 3, 1, 2)).repeat_interleave(1, dim=0)
    today = method.translate(batch, sampling, seeded(4)).images
    assert torch.equal(torch.from_numpy(out["independent"]), model_to_unit(today).permute(0, 2, 3, 1))
