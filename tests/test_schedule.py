import math

import pytest
import torch

from cdtsde.diffusion.schedule import NoiseSchedule, ScheduleConfig, make_betas
from cdtsde.settings import from_plain, to_plain


def test_scaled_linear_betas_match_the_formula():
    betas = make_betas("scaled-linear", 1000)
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)
    assert betas[500].item() == pytest.approx((math.sqrt(0.00085) + 500 / 999 * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2)


@pytest.mark.parametrize("name", ["scaled-linear", "linear", "cosine"])
def test_abar_decreases_from_one(name):
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule=name))
    assert torch.all(schedule.abar[1:] < schedule.abar[:-1])
    assert 0.9 < schedule.abar[0].item() < 1 and schedule.abar[-1].item() < 0.01


def test_cosine_schedule_matches_nichol_dhariwal():
    schedule = NoiseSchedule(ScheduleConfig(beta_schedule="cosine"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert schedule.abar[299].item() == pytest.approx(f(300) / f(0), rel=1e-9)


@pytest.mark.parametrize("eta_schedule", ["cosine", "linear"])
def test_eta_is_increasing_below_t1_and_one_above(eta_schedule):
    schedule = NoiseSchedule(ScheduleConfig(eta_schedule=eta_schedule))
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
    schedule = NoiseSchedule()
    like = torch.zeros(3, 1, 2, 2)
    assert schedule.sqrt_abar(-1, like).item() == 1 and schedule.sigma(-1, like).item() == 0
    values = schedule.sigma(torch.tensor([-1, 0, 999]), like)
    assert values.shape == (3, 1, 1, 1) and values[0].item() == 0 and values[2].item() > 0.99


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
        ScheduleConfig(**options)


def test_config_round_trip_and_unknown_keys():
    config = ScheduleConfig(truncation=1 / 3, beta_schedule="linear")
    assert from_plain(ScheduleConfig, to_plain(config), "schedule") == config
    with pytest.raises(ValueError, match="unknown schedule option.*warmup"):
        from_plain(ScheduleConfig, {"warmup": 3}, "schedule")
    with pytest.raises(ValueError, match="schedule.num_steps must be an integer, got 'many'"):
        from_plain(ScheduleConfig, {"num_steps": "many"}, "schedule")
