import math

import pytest
import torch
from conftest import randomise
from hypothesis import given, settings
from hypothesis import strategies as st

from cdtsde.methods.cdtsde.domain_shift import DomainShiftSchedule, DomainShiftScheduleConfig
from cdtsde.methods.cdtsde.fields import (
    FIELD_VARIANTS,
    FieldConfig,
    calibrated_logistic,
    make_field,
    position_encoding,
)

SCHEDULE = DomainShiftSchedule()


@settings(max_examples=40, deadline=None)
@given(
    variant=st.sampled_from(FIELD_VARIANTS),
    channels=st.integers(1, 4),
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    t=st.integers(-1, SCHEDULE.num_steps - 1),
    seed=st.integers(0, 10_000),
)
def test_hard_constraints_hold_for_every_variant(variant, channels, height, width, t, seed):
    field = randomise(make_field(variant, SCHEDULE, channels), seed, scale=2.0)
    x_src = torch.rand(2, channels, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    mixing = field(t, x_src)
    assert mixing.shape == x_src.shape
    if t >= SCHEDULE.t1:
        assert torch.all(mixing == 1)
    elif t == -1:
        assert torch.all(mixing == 0)
    else:
        assert torch.all(mixing >= 0) and torch.all(mixing < 1)


@pytest.mark.parametrize("variant", FIELD_VARIANTS)
def test_per_item_steps_match_single_steps(variant):
    field = randomise(make_field(variant, SCHEDULE, 3), 1)
    x_src = torch.rand(4, 3, 6, 5) * 2 - 1
    steps = torch.tensor([-1, 17, 400, 700])
    batched = field(steps, x_src)
    for i, step in enumerate(steps.tolist()):
        torch.testing.assert_close(batched[i : i + 1], field(step, x_src[i : i + 1]))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dynamic", "content"])
def test_learned_fields_vary_in_space_once_trained(variant):
    field = make_field(variant, SCHEDULE, 2)
    x_src = torch.rand(1, 2, 9, 13)
    fresh = field(250, x_src)
    # a new field starts spatially uniform (zero output layer): g = 0, f = eta, then the squash
    eta = SCHEDULE.eta[250].item()
    torch.testing.assert_close(fresh, calibrated_logistic(torch.full_like(fresh, eta), 0.05))
    varied = randomise(field, 3)(250, x_src)
    assert varied.std() > 0.01


def test_content_field_reads_the_source_and_dynamic_does_not():
    a, b = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    dynamic = randomise(make_field("dynamic", SCHEDULE, 1), 4)
    content = randomise(make_field("content", SCHEDULE, 1), 4)
    torch.testing.assert_close(dynamic(100, a), dynamic(100, b))
    assert not torch.allclose(content(100, a), content(100, b))


def test_linear_field_is_eta():
    x_src = torch.zeros(1, 1, 2, 2)
    field = make_field("linear", SCHEDULE, 1)
    for t in (0, 123, SCHEDULE.t1 - 1):
        assert field(t, x_src).flatten()[0].item() == pytest.approx(SCHEDULE.eta[t].item(), rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), degree=st.integers(1, 6))
def test_channel_field_is_monotone_in_t_with_exact_endpoints(seed, degree):
    field = randomise(make_field(FieldConfig("channel", degree=degree), SCHEDULE, 3), seed, scale=3.0)
    x_src = torch.zeros(1, 3, 1, 1)
    values = field(torch.arange(-1, SCHEDULE.num_steps), x_src.expand(SCHEDULE.num_steps + 1, -1, -1, -1))
    values = values[:, :, 0, 0]
    assert torch.all(values[1:] >= values[:-1])
    coefficients = field.coefficients()
    assert torch.all(coefficients[:, 0] == 0) and torch.all(coefficients[:, -1] == 1)


def test_channel_field_starts_as_linear():
    x_src = torch.rand(1, 2, 3, 3)
    channel, linear = make_field("channel", SCHEDULE, 2), make_field("linear", SCHEDULE, 2)
    for t in (0, 50, 321, 499):
        torch.testing.assert_close(channel(t, x_src), linear(t, x_src))


def test_calibrated_logistic_endpoints_and_monotonicity():
    f = torch.linspace(0, 1, 1001, dtype=torch.float64)
    values = calibrated_logistic(f, 0.05)
    assert values[0].item() == pytest.approx(0, abs=1e-12) and values[-1].item() == pytest.approx(1, abs=1e-12)
    assert torch.all(values[1:] > values[:-1])


def test_dynamic_field_respects_the_eq2_bounds_before_the_squash():
    # with h at its extremes, f = eta^2 (g = -1) and 2 eta - eta^2 (g = 1): Lambda stays between their squashes
    field = make_field("dynamic", SCHEDULE, 1)
    x_src = torch.zeros(1, 1, 4, 4)
    for bias, bound in ((-50.0, lambda e: e**2), (50.0, lambda e: 2 * e - e**2)):
        with torch.no_grad():
            field.net[-1].bias.fill_(bias)
        for t in (10, 200, 450):
            eta = SCHEDULE.eta[t].item()
            expected = calibrated_logistic(torch.tensor(bound(eta)), 0.05).item()
            assert field(t, x_src).mean().item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_position_encoding_covers_the_whole_grid():
    encoding = position_encoding(5, 7, torch.zeros(1))
    assert encoding.shape == (1, 4, 5, 7)
    # x runs from -1 to 1 across the width: sin(pi x) is 0 at both ends and at the centre, cos is -1, 1, -1
    torch.testing.assert_close(encoding[0, 1, 0, [0, 3, 6]], torch.tensor([-1.0, 1.0, -1.0]))
    torch.testing.assert_close(encoding[0, 3, [0, 2, 4], 0], torch.tensor([-1.0, 1.0, -1.0]))
    assert encoding[0, 0, 0, 1].item() == pytest.approx(math.sin(math.pi * (-1 + 2 / 6)), abs=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda f: f(1000, torch.zeros(1, 2, 3, 3)), "t must lie"),
        (lambda f: f(-2, torch.zeros(1, 2, 3, 3)), "t must lie"),
        (lambda f: f(1.5, torch.zeros(1, 2, 3, 3)), "integer"),
        (lambda f: f(3, torch.zeros(1, 3, 3, 3)), "x_src must have shape"),
        (lambda f: f(3, torch.zeros(2, 3, 3)), "x_src must have shape"),
        (lambda f: f(torch.tensor([1, 2, 3]), torch.zeros(2, 2, 3, 3)), "one step per batch item"),
    ],
)
def test_bad_arguments_name_themselves(call, match):
    with pytest.raises(ValueError, match=match):
        call(make_field("dynamic", SCHEDULE, 2))


def test_unknown_variant_and_options():
    with pytest.raises(ValueError, match="field variant"):
        make_field("quadratic", SCHEDULE, 1)
    with pytest.raises(ValueError, match="the linear field has no option.*degree"):
        make_field(FieldConfig("linear", degree=3), SCHEDULE, 1)
    with pytest.raises(ValueError, match="the channel field has no option.*squash_eps"):
        make_field(FieldConfig("channel", squash_eps=0.1), SCHEDULE, 1)


def test_other_truncation_points():
    for truncation, t1 in ((1 / 3, 333), (2 / 3, 667)):
        schedule = DomainShiftSchedule(DomainShiftScheduleConfig(truncation=truncation))
        field = make_field("dynamic", schedule, 1)
        x_src = torch.zeros(1, 1, 2, 2)
        assert schedule.t1 == t1
        assert torch.all(field(t1, x_src) == 1) and torch.all(field(t1 - 1, x_src) < 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant, bias", [("linear", None), ("channel", None), ("dynamic", 50.0),
                                           ("dynamic", -50.0), ("content", 50.0)])
def test_below_t1_the_field_stays_below_one_in_low_precision(dtype, variant, bias):
    """In float32 the dynamic field with g = +1 rounds to exactly 1 within about 8 steps of t1 (1 - eta is
    2.5e-6 there), and in bfloat16 even eta_t does for the last ~15 steps: every t below t1 is checked."""
    field = make_field(variant, SCHEDULE, 2)
    if variant == "channel":
        with torch.no_grad():
            field.logits[:, -1] = -30.0  # the last Bernstein coefficient close to 1: f is 1 - O(1e-13) near t1
    if bias is not None:
        with torch.no_grad():
            field.net[-1].bias.fill_(bias)  # g saturated at +1 (most source allowed) or -1
    field = field.to(dtype)
    steps = torch.arange(SCHEDULE.t1)
    mixing = field(steps, torch.zeros(len(steps), 2, 3, 3, dtype=dtype))
    assert mixing.dtype == dtype
    assert torch.all(mixing < 1) and torch.all(mixing >= 0)
    assert torch.all(field(SCHEDULE.t1, torch.zeros(1, 2, 3, 3, dtype=dtype)) == 1)


def test_a_saturated_field_in_float32_samples_without_clamps():
    """With Lambda rounded to 1 below t1, Ups = 0 made rho infinite and the clamp count spurious."""
    from cdtsde.methods.cdtsde.sampler import sample

    field = make_field("dynamic", SCHEDULE, 1)
    with torch.no_grad():
        field.net[-1].bias.fill_(50.0)
    x_src = torch.rand(2, 1, 4, 4) * 2 - 1
    result = sample(lambda x, src, t: torch.zeros_like(x), x_src, field, steps=100,
                    generator=torch.Generator().manual_seed(0))
    assert result.clamped_pixels == 0 and torch.isfinite(result.x0).all()


# --- issue 15: the envelope control, the budget option, content diagnostics --------------------------------

def test_the_envelope_field_is_eq2s_lower_envelope_after_the_squash():
    from cdtsde.methods.cdtsde.fields import field_envelopes

    field = make_field("envelope", SCHEDULE, 2)
    assert not list(field.parameters())
    x_src = torch.rand(3, 2, 5, 4) * 2 - 1
    for t in (0, 40, 250, SCHEDULE.t1 - 1):
        eta = SCHEDULE.eta_at(torch.tensor([t]), x_src).view(1, 1, 1, 1)
        lower, _ = field_envelopes(eta.expand_as(x_src), 0.05)
        torch.testing.assert_close(field(t, x_src), lower)
        torch.testing.assert_close(lower, calibrated_logistic(eta**2, 0.05).expand_as(x_src))
    assert torch.equal(field(SCHEDULE.t1, x_src), torch.ones_like(x_src))


@pytest.mark.parametrize("variant", ["dynamic", "content"])
def test_a_budget_field_cannot_move_its_mean_only_its_allocation(variant):
    """With budget, adding a constant to the mixer's output bias changes nothing (the logits are centred
    per image and channel); without, it moves the whole field. Either way the field varies in space."""
    x_src = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for budget in (True, False):
        field = randomise(make_field(FieldConfig(variant, budget=budget), SCHEDULE, 2), 3)
        before = field(100, x_src)
        with torch.no_grad():
            field.net[-1].bias += 2.0
        after = field(100, x_src)
        assert before.std() > 1e-3
        assert torch.allclose(before, after, atol=1e-6) == budget
    with pytest.raises(ValueError, match="the linear field has no option"):
        make_field(FieldConfig("linear", budget=True), SCHEDULE, 1)


def test_rank_correlation_matches_scipy_and_content_correlations_read_a_field():
    from scipy.stats import spearmanr

    from cdtsde.methods.cdtsde.fields import content_correlations, rank_correlation

    generator = torch.Generator().manual_seed(5)
    a, b = torch.rand(4, 50, generator=generator), torch.rand(4, 50, generator=generator)
    b[1] = a[1] ** 3  # monotone: 1
    b[2] = -a[2]  # reversed: -1
    ours = rank_correlation(a, b)
    for row in range(4):
        assert ours[row].item() == pytest.approx(spearmanr(a[row], b[row]).statistic, abs=1e-6)
    assert ours[1].item() == pytest.approx(1.0) and ours[2].item() == pytest.approx(-1.0)
    x_src = torch.rand(3, 1, 8, 8, generator=generator)
    follows = content_correlations(0.2 + 0.5 * (x_src + 1) / 2, x_src)
    assert follows["lambda_rank_corr_intensity"].item() == pytest.approx(1.0)
    flat = content_correlations(torch.full_like(x_src, 0.3), x_src)
    assert flat["lambda_rank_corr_intensity"].item() == 0 and flat["lambda_rank_corr_gradient"].item() == 0


def test_envelope_and_budget_fields_train_through_the_cli_and_log_content_correlations(tmp_path):
    import csv

    import yaml
    from helpers import TINY_UNET

    from cdtsde.cli import main

    for name, field in (("envelope", {"variant": "envelope"}), ("budget", {"variant": "content", "budget": True})):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": 16, "seed": 0},
            "model": {"field": field, "unet": TINY_UNET},
            "train": {"max_steps": 2, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "sample_every": 0}}))
        assert main(["train", "--config", str(config), "--output", str(tmp_path / name)]) == 0
        header = next(csv.reader(open(tmp_path / name / "metrics.csv")))
        logged = {"g_mean", "lambda_rank_corr_intensity", "lambda_rank_corr_gradient"} & set(header)
        assert logged == (set() if name == "envelope" else {"g_mean", "lambda_rank_corr_intensity",
                                                             "lambda_rank_corr_gradient"})


def elbo_model(variant="dynamic", restoring_weight=0.0, seed=0):
    from helpers import TINY_UNET

    from cdtsde.methods import DataInfo
    from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
    from cdtsde.networks.conditional_unet import UNetConfig

    torch.manual_seed(seed)
    model = CDTSDE(CDTSDEConfig(field=FieldConfig(variant), unet=UNetConfig(**TINY_UNET), mixer_objective="elbo",
                                restoring_weight=restoring_weight),
                   DataInfo(source_channels=1, target_channels=1, image_size=16))
    randomise(model.field, seed + 1, scale=0.5)
    return model


def test_the_elbo_weight_is_the_snr_drop_between_consecutive_steps():
    model = elbo_model()
    anchor = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    t = torch.tensor([0, 1, 120, SCHEDULE.t1])
    mixing = model.field(t, anchor)
    weights = model.elbo_weights(mixing, anchor, t)
    assert torch.equal(weights[0], torch.zeros_like(weights[0]))  # t = 0: the last step predicts x0 itself
    def snr(lam, step):
        abar = float(SCHEDULE.sqrt_abar(step, anchor)) ** 2
        return abar * (1 - lam) ** 2 / (1 - abar)

    for index in (1, 2, 3):
        step = int(t[index])
        lam, before = model.field(step, anchor[index:index + 1]), model.field(step - 1, anchor[index:index + 1])
        expected = (snr(before, step - 1) - snr(lam, step)).clamp(min=0)  # float32 SNRs in the hundreds: rtol
        torch.testing.assert_close(weights[index:index + 1], expected, rtol=1e-3, atol=1e-4)
    assert (weights[3] > 0).all()  # at t1 the source is all of x_t (SNR 0): the whole step-t1-1 SNR is the drop


def test_the_elbo_objective_trains_the_mixer_and_the_denoiser_in_separate_phases():
    """Phase "model": the denoiser's x0-MSE, no gradient to the field; phase "mixer": the ELBO-weighted
    error plus beta E[g^2], no gradient to the denoiser; both on one draw of t and noise."""
    model = elbo_model(restoring_weight=0.5)
    optimizers = model.optimizers(TrainConfig_like())
    assert list(optimizers) == ["model", "mixer"]
    assert {id(p) for g in optimizers["mixer"].param_groups for p in g["params"]} == {id(p) for p in model.field.parameters()}
    batch = {"source": torch.rand(4, 1, 16, 16) * 2 - 1, "target": torch.rand(4, 1, 16, 16) * 2 - 1}
    shared, generator = {}, torch.Generator().manual_seed(0)
    model_out = model(batch, "model", generator, shared)
    model_out["loss"].backward()
    assert all(p.grad is None for p in model.field.parameters())
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    drawn = shared["t"].clone()
    mixer_out = model(batch, "mixer", generator, shared)
    assert torch.equal(shared["t"], drawn)
    mixer_out["loss"].backward()
    assert all(p.grad is None for p in model.net.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.field.parameters())
    torch.testing.assert_close(mixer_out["loss"], mixer_out["elbo_fit"] + 0.5 * mixer_out["g_squared"])


def TrainConfig_like():
    from cdtsde.training import TrainConfig

    return TrainConfig(lr=1e-3)


def test_the_elbo_objective_is_refused_where_there_is_no_mixer_and_trains_through_the_cli(tmp_path):
    import csv

    import yaml
    from helpers import TINY_UNET

    from cdtsde.cli import main
    from cdtsde.methods.cdtsde import CDTSDEConfig

    with pytest.raises(ValueError, match="elbo trains a mixer: the dynamic or content field, not 'linear'"):
        CDTSDEConfig(field=FieldConfig("linear"), mixer_objective="elbo")
    with pytest.raises(ValueError, match="restoring_weight belongs to mixer_objective: elbo"):
        CDTSDEConfig(restoring_weight=0.1)
    config = tmp_path / "elbo.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": 16, "seed": 0},
        "model": {"field": {"variant": "content"}, "unet": TINY_UNET, "mixer_objective": "elbo",
                  "restoring_weight": 0.01},
        "train": {"max_steps": 2, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "sample_every": 0}}))
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "run")]) == 0
    header = next(csv.reader(open(tmp_path / "run" / "metrics.csv")))
    assert {"loss_model", "loss_mixer", "elbo_fit", "g_squared", "lambda_rank_corr_intensity"} <= set(header)


def test_field_maps_are_titled_with_t_and_eta_and_drawn_with_a_colour_bar(tmp_path):
    from helpers import tiny_model
    from PIL import Image

    from cdtsde.visualize import save_translation_grid

    model = tiny_model(variant="content")
    sources = torch.rand(2, 1, 16, 16) * 2 - 1
    maps = model.preview_maps(sources)
    assert list(maps) == [f"Lambda, t={t}, eta={float(SCHEDULE.eta_at(t, sources)):.2f}"
                          for t in (SCHEDULE.t1 // 4, SCHEDULE.t1 // 2, 3 * SCHEDULE.t1 // 4)]
    plain = save_translation_grid(tmp_path / "plain.png", sources, sources, sources, {})
    with_maps = save_translation_grid(tmp_path / "maps.png", sources, sources, sources, maps)
    assert Image.open(with_maps).size[0] > Image.open(plain).size[0]
