import math

import pytest
import torch

from cdtsde.diffusion.ddpm import DDPMScheduleConfig
from cdtsde.diffusion.schedule import NoiseSchedule, NoiseScheduleConfig, make_betas
from cdtsde.methods.cdtsde.domain_shift import DomainShiftSchedule, DomainShiftScheduleConfig
from cdtsde.settings import from_plain, to_plain


def test_scaled_linear_betas_match_the_formula():
    betas = make_betas("scaled-linear", 1000)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    assert betas[500].item() == pytest.approx((math.sqrt(0.00085) + 500 / 999 * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2)


@pytest.mark.parametrize("name", ["scaled-linear", "linear", "cosine"])
def test_abar_decreases_from_one(name):
    schedule = NoiseSchedule(NoiseScheduleConfig(num_steps=1000, beta_schedule=name))
    assert torch.all(schedule.abar[1:] < schedule.abar[:-1])
    assert 0.9 < schedule.abar[0].item() < 1 and schedule.abar[-1].item() < 0.01


def test_cosine_schedule_matches_nichol_dhariwal():
    schedule = NoiseSchedule(NoiseScheduleConfig(num_steps=1000, beta_schedule="cosine"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert schedule.abar[299].item() == pytest.approx(f(300) / f(0), rel=1e-9)


@pytest.mark.parametrize("eta_schedule", ["cosine", "linear"])
def test_eta_is_increasing_below_t1_and_one_above(eta_schedule):
    schedule = DomainShiftSchedule(DomainShiftScheduleConfig(eta_schedule=eta_schedule))
    t1 = schedule.t1
    assert t1 == 500
    below = schedule.eta[:t1]
    assert torch.all(below[1:] > below[:-1]) and below.max() < 1 and below.min() >= 0
    assert torch.all(schedule.eta[t1:] == 1)
    if eta_schedule == "cosine":
        s = 0.001 + 123 * (0.998 / (t1 - 1))
        assert below[123].item() == pytest.approx((1 - math.cos(math.pi * s)) / 2)
    else:
        assert below[123].item() == pytest.approx(123 / t1)


def test_clean_end_lookups():
    schedule = DomainShiftSchedule()
    like = torch.zeros(3, 1, 2, 2)
    assert schedule.sqrt_abar(-1, like).item() == 1 and schedule.sigma(-1, like).item() == 0
    assert schedule.eta_at(-1, like).item() == 0
    values = schedule.sigma(torch.tensor([-1, 0, 999]), like)
    assert values.shape == (3, 1, 1, 1) and values[0].item() == 0 and values[2].item() > 0.99


@pytest.mark.parametrize("beta_schedule", ["scaled-linear", "linear"])
def test_the_domain_shift_schedule_only_adds_to_the_shared_one(beta_schedule):
    """CDTSDE's schedule reads abar_t and sigma_t from the same tables as DDPM's (truncation changes none)."""
    shared = NoiseSchedule(NoiseScheduleConfig(num_steps=200, beta_schedule=beta_schedule))
    cdtsde = DomainShiftSchedule(DomainShiftScheduleConfig(num_steps=200, beta_schedule=beta_schedule,
                                                           truncation=1 / 3))
    steps, like = torch.arange(-1, 200), torch.zeros(201, 1, 1, 1, dtype=torch.float64)
    assert torch.equal(cdtsde.sqrt_abar(steps, like), shared.sqrt_abar(steps, like))
    assert torch.equal(cdtsde.sigma(steps, like), shared.sigma(steps, like))
    assert cdtsde.t1 == 67 and not hasattr(shared, "t1")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"truncation": 1.0}, "truncation"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule"),
        ({"eta_schedule": "cubic"}, "eta_schedule"),
        ({"num_steps": 1}, "num_steps"),
    ],
)
def test_bad_config(options, match):
    with pytest.raises(ValueError, match=match):
        DomainShiftScheduleConfig(**options)
    if "eta_schedule" not in options and "truncation" not in options:
        with pytest.raises(ValueError, match=match):
            DDPMScheduleConfig(**options)


def test_config_round_trip_and_unknown_keys():
    config = DomainShiftScheduleConfig(truncation=1 / 3, beta_schedule="linear")
    assert from_plain(DomainShiftScheduleConfig, to_plain(config), "schedule") == config
    with pytest.raises(ValueError, match="unknown schedule option.*warmup"):
        from_plain(DomainShiftScheduleConfig, {"warmup": 3}, "schedule")
    with pytest.raises(ValueError, match="schedule.num_steps must be an integer, got 'many'"):
        from_plain(DomainShiftScheduleConfig, {"num_steps": "many"}, "schedule")


def test_the_schedule_sections_of_saved_configs_keep_their_fields():
    """Checkpoints store these sections as JSON: CDTSDE's and the prior's fields, order and defaults."""
    assert to_plain(DomainShiftScheduleConfig()) == {"num_steps": 1000, "beta_schedule": "scaled-linear",
                                                     "truncation": 0.5, "eta_schedule": "cosine"}
    assert to_plain(DDPMScheduleConfig()) == {"num_steps": 1000, "beta_schedule": "linear"}
    with pytest.raises(ValueError, match="unknown schedule option.*truncation"):
        from_plain(DDPMScheduleConfig, {"truncation": 0.5}, "schedule")
