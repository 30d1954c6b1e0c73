import pytest
import torch
from conftest import randomise

from cdtsde.diffusion.schedule import CLEAN_END
from cdtsde.methods.cdtsde.domain_shift import (
    DomainShiftSchedule,
    derived_quantities,
    q_sample,
    timestep_grid,
)
from cdtsde.methods.cdtsde.fields import FIELD_VARIANTS, DynamicField, bounded_field, make_field
from cdtsde.methods.cdtsde.sampler import sample

SCHEDULE = DomainShiftSchedule()
SAMPLES = 100_000  # Monte-Carlo draws per pixel for the marginal checks
TOLERANCE = 6.0  # standard errors


FIXED = ("linear", "envelope")  # fields without parameters, flat in space


def random_pair(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) * 2 - 1, torch.rand(shape, generator=generator) * 2 - 1


def spatial_field(variant, channels, seed):
    field = make_field(variant, SCHEDULE, channels)
    return randomise(field, seed, scale=1.5) if variant not in FIXED else field


@pytest.mark.parametrize("variant", FIELD_VARIANTS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_oracle_denoiser_keeps_every_iterate_on_the_forward_marginal(variant, gamma, steps):
    """docs/cdtsde.md, section 5: with x0_hat = x0 and x(t1) drawn from the forward marginal, every iterate has mean
    sqrt(abar) d_t and standard deviation sigma_t, per pixel, and the output is x0."""
    shape = (1, 2, 3, 4)
    x0, x_src = random_pair(shape, seed=steps)
    field = spatial_field(variant, 2, seed=7)
    if variant not in FIXED:
        assert field(SCHEDULE.t1 // 2, x_src).std() > 0.01, "the field must really vary in space"
    generator = torch.Generator().manual_seed(11)
    x_start = q_sample(field, x0.expand(SAMPLES, *shape[1:]), x_src.expand(SAMPLES, *shape[1:]), SCHEDULE.t1,
                       generator=generator).x_t
    checked = []

    def check(step):
        if step.t == CLEAN_END:
            return
        mixing = field(step.t, x_src)  # Eqs. 1 and 6: sqrt(abar_t) (Lambda_t x_src + (1 - Lambda_t) x0)
        expected_mean = SCHEDULE.sqrt_abar(step.t, x0) * (mixing * x_src + (1 - mixing) * x0)
        sigma = SCHEDULE.sigma(step.t, x0).item()
        mean, std = step.x.mean(0, keepdim=True), step.x.std(0, keepdim=True)
        assert (mean - expected_mean).abs().max().item() < TOLERANCE * sigma / SAMPLES**0.5 + 1e-5
        assert (std - sigma).abs().max().item() < TOLERANCE * sigma / (2 * SAMPLES) ** 0.5 + 1e-5
        checked.append(step.t)

    result = sample(lambda x, src, t: x0.expand_as(x), x_src, field, steps=steps, gamma=gamma,
                    generator=generator, x_start=x_start, callback=check)
    assert checked == result.timesteps[1:-1]
    assert torch.equal(result.x0, x0.expand(SAMPLES, *shape[1:]))


@pytest.mark.parametrize("variant", ["linear", "channel"])
def test_stochastic_step_equals_the_papers_u_coordinate_update(variant):
    """gamma = 1: u_t = rho^2 u_s + (1 - rho^2) x0_hat + lam_t sqrt(1 - rho^2) z with rho = lam_t / lam_s
    (Prop. 1 in u-coordinates), checked for the second step with an arbitrary (non-oracle) denoiser."""
    shape = (3, 2, 5, 6)
    x_src, x_start_noise = random_pair(shape, seed=3)
    x_src = x_src.double()
    field = spatial_field(variant, 2, seed=5).double()
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def denoiser(x, src, t):  # anything smooth in its inputs will do
        return torch.tanh(weights * x + 0.3 * src + t.view(-1, 1, 1, 1) / 1000)

    x_start = SCHEDULE.sqrt_abar(SCHEDULE.t1, x_src) * x_src + SCHEDULE.sigma(SCHEDULE.t1, x_src) * x_start_noise.double()
    iterates = []
    result = sample(denoiser, x_src, field, steps=3, gamma=1.0, generator=torch.Generator().manual_seed(9),
                    x_start=x_start, callback=iterates.append)
    z_first, z_second = (torch.randn(shape, generator=g, dtype=torch.float64) for g in [torch.Generator().manual_seed(9)] * 2)
    s, t = result.timesteps[1], result.timesteps[2]
    x_s = iterates[0].x
    x0_hat = denoiser(x_s, x_src, torch.full((3,), s))
    at_s = derived_quantities(SCHEDULE, field(s, x_src), s)
    at_t = derived_quantities(SCHEDULE, field(t, x_src), t)
    rho = at_t.lam / at_s.lam
    u_t = rho**2 * at_s.to_u(x_s, x_src) + (1 - rho**2) * x0_hat + at_t.lam * torch.sqrt(1 - rho**2) * z_second
    torch.testing.assert_close(at_t.to_u(iterates[1].x, x_src), u_t, rtol=1e-9, atol=1e-9)
    # and the first step from t1 (rho = 0) is u = x0_hat + lam z
    at_first = derived_quantities(SCHEDULE, field(s, x_src), s)
    x0_first = denoiser(x_start, x_src, torch.full((3,), SCHEDULE.t1))
    torch.testing.assert_close(at_first.to_u(x_s, x_src), x0_first + at_first.lam * z_first, rtol=1e-9, atol=1e-9)


def test_deterministic_update_is_ddim_like_in_u_coordinates():
    """gamma = 0: u_t = rho u_s + (1 - rho) x0_hat (the exact VE ODE step with a frozen x0_hat)."""
    shape = (2, 1, 4, 4)
    x_src, noise = random_pair(shape, seed=8)
    x_src = x_src.double()
    field = spatial_field("channel", 1, seed=2).double()
    x_start = SCHEDULE.sqrt_abar(SCHEDULE.t1, x_src) * x_src + SCHEDULE.sigma(SCHEDULE.t1, x_src) * noise.double()
    iterates = []

    def denoiser(x, src, t):
        return torch.sin(x) * 0.5

    result = sample(denoiser, x_src, field, steps=4, gamma=0.0, x_start=x_start, callback=iterates.append)
    s, t = result.timesteps[1], result.timesteps[2]
    at_s, at_t = (derived_quantities(SCHEDULE, field(k, x_src), k) for k in (s, t))
    rho = at_t.lam / at_s.lam
    u_t = rho * at_s.to_u(iterates[0].x, x_src) + (1 - rho) * denoiser(iterates[0].x, None, None)
    torch.testing.assert_close(at_t.to_u(iterates[1].x, x_src), u_t, rtol=1e-9, atol=1e-9)


def test_monotone_fields_need_no_clamp_and_a_non_monotone_one_reports_it():
    x_src = torch.rand(2, 3, 8, 8)
    denoiser = lambda x, src, t: torch.zeros_like(x)  # noqa: E731
    for variant in ("linear", "channel"):
        field = spatial_field(variant, 3, seed=1)
        assert sample(denoiser, x_src, field, steps=20, generator=torch.Generator().manual_seed(0)).clamped_pixels == 0
    # a field whose modulation g drops from +1 to -1 as eta passes 1/2 is not monotone in t (f falls
    # from 2 eta - eta^2 to eta^2 there): the clamp acts and is counted. (An earlier version of this test
    # built a -1 -> +1 jump, which is monotone; its clamps came from Lambda rounding to 1 below t1.)
    class Jump(DynamicField):
        def below_truncation(self, eta, x_src):
            g = torch.where(eta < 0.5, 1.0, -1.0).expand_as(x_src)
            return bounded_field(eta, g, self.squash_eps), g

    field = Jump(SCHEDULE, 3)
    result = sample(denoiser, x_src, field, steps=200, generator=torch.Generator().manual_seed(0))
    assert result.clamped_pixels > 0
    assert torch.isfinite(result.x0).all()


def test_seeds_and_determinism():
    x_src = torch.rand(2, 1, 6, 7) * 2 - 1
    field = spatial_field("dynamic", 1, seed=3)

    def denoiser(x, src, t):
        return torch.tanh(x + src)

    def run(seed, gamma, **kwargs):
        return sample(denoiser, x_src, field, steps=5, gamma=gamma, generator=torch.Generator().manual_seed(seed), **kwargs).x0

    assert torch.equal(run(1, 1.0), run(1, 1.0))
    assert not torch.allclose(run(1, 1.0), run(2, 1.0))
    assert not torch.allclose(run(1, 0.5), run(2, 0.5))
    x_start = torch.randn(2, 1, 6, 7)
    assert torch.equal(run(1, 0.0, x_start=x_start), run(2, 0.0, x_start=x_start))


def test_batch_items_are_independent_and_shapes_are_kept():
    field = spatial_field("content", 3, seed=6)
    x_src = torch.rand(3, 3, 9, 14) * 2 - 1  # non-square, items differ

    def denoiser(x, src, t):
        return 0.5 * torch.tanh(x - src)

    x_start = torch.randn(3, 3, 9, 14)
    whole = sample(denoiser, x_src, field, steps=4, gamma=0.0, x_start=x_start).x0
    assert whole.shape == x_src.shape
    for i in range(3):
        alone = sample(denoiser, x_src[i : i + 1], field, steps=4, gamma=0.0, x_start=x_start[i : i + 1]).x0
        torch.testing.assert_close(alone, whole[i : i + 1])


def test_collapse_field_uses_the_mean_of_the_field():
    field = spatial_field("dynamic", 1, seed=2)
    x_src = torch.rand(1, 1, 8, 8)
    seen = {}

    def denoiser(x, src, t):
        return torch.zeros_like(x)

    def record(step):
        seen.setdefault(step.s, step.mixing)

    sample(denoiser, x_src, field, steps=3, gamma=0.0, collapse_field=True, callback=record)
    s = sorted(seen)[1]
    torch.testing.assert_close(seen[s], field(s, x_src).mean().expand(1, 1, 8, 8))


def test_timestep_grid():
    assert timestep_grid(500, 1) == [500, CLEAN_END]
    assert timestep_grid(500, 5) == [500, 400, 300, 199, 99, CLEAN_END]
    assert timestep_grid(4, 5) == [4, 3, 2, 1, 0, CLEAN_END]
    quadratic = timestep_grid(500, 10, "quadratic")
    gaps = [a - b for a, b in zip(quadratic[:-2], quadratic[1:-1])]
    assert quadratic[0] == 500 and gaps == sorted(gaps, reverse=True)
    for steps in range(1, 32):  # every count up to t1 + 1: distinct steps from t1, one per evaluation
        grid = timestep_grid(30, steps)
        assert grid[0] == 30 and len(grid) == steps + 1 and all(a > b for a, b in zip(grid, grid[1:]))
    assert timestep_grid(30, 31)[:-1] == list(range(30, -1, -1))
    with pytest.raises(ValueError, match="at most t1 \\+ 1 = 31"):
        timestep_grid(30, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": 502}, "at most t1 \\+ 1"),
        ({"gamma": 1.5}, "gamma must lie in"),
        ({"gamma": -0.1}, "gamma must lie in"),
        ({"spacing": "log"}, "spacing must be one of"),
        ({"x_start": torch.zeros(2, 1, 5, 4)}, "does not match x_src"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    field = make_field("linear", SCHEDULE, 1)
    with pytest.raises(ValueError, match=match):
        sample(lambda x, s, t: x, torch.zeros(2, 1, 4, 4), field, **kwargs)


def test_q_sample_rejects_mismatched_shapes():
    field = make_field("linear", SCHEDULE, 1)
    with pytest.raises(ValueError, match="same shape"):
        q_sample(field, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), 10)


def gaussian_problem(shape=(4096, 1, 2, 3), seed=0):
    """Data x0 ~ N(m, s^2) per pixel, for which the optimal denoiser and the exact probability flow are
    known: in u-coordinates x0_hat = m + s^2 / (s^2 + lam^2) (u - m), and the flow started at t1 with noise
    eps passes through u(lam) = m + eps sqrt(s^2 + lam^2)."""
    generator = torch.Generator().manual_seed(seed)
    x_src = (torch.rand(1, *shape[1:], generator=generator) * 2 - 1).double()
    m = (torch.rand(1, *shape[1:], generator=generator) - 0.5).double()
    s = (0.2 + 0.5 * torch.rand(1, *shape[1:], generator=generator)).double()
    eps = torch.randn(shape, generator=generator, dtype=torch.float64)
    field = spatial_field("channel", shape[1], seed=seed).double()
    x_start = SCHEDULE.sqrt_abar(SCHEDULE.t1, x_src) * x_src + SCHEDULE.sigma(SCHEDULE.t1, x_src) * eps

    def denoiser(x, src, t):
        step = int(t[0])
        if step >= SCHEDULE.t1:
            return m.expand_as(x)
        at = derived_quantities(SCHEDULE, field(step, x_src), step)
        return m + s**2 / (s**2 + at.lam**2) * (at.to_u(x, x_src) - m)

    def flow_error(step):
        """Mean distance of an iterate from the exact flow at its own noise level."""
        at = derived_quantities(SCHEDULE, field(step.t, x_src), step.t)
        return (at.to_u(step.x, x_src) - (m + eps * torch.sqrt(s**2 + at.lam**2))).abs().mean().item()

    return denoiser, x_src, field, x_start, m + s * eps, flow_error


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_second_order_solver_follows_the_exact_flow_more_closely(spacing):
    denoiser, x_src, field, x_start, exact, flow_error = gaussian_problem()
    flow, final = {}, {}
    for solver in ("first-order", "dpm++2m"):
        for steps in (10, 20):
            iterates = []
            out = sample(denoiser, x_src, field, steps=steps, gamma=0.0, x_start=x_start, solver=solver,
                         spacing=spacing, callback=iterates.append).x0
            flow[solver, steps] = flow_error(iterates[-2])  # the last iterate before the clean end
            final[solver, steps] = (out - exact).abs().mean().item()
    for steps in (10, 20):
        assert flow["dpm++2m", steps] < 0.25 * flow["first-order", steps]
        assert final["dpm++2m", steps] < final["first-order", steps]
    # the first-order error about halves with twice the steps
    assert 0.4 < flow["first-order", 20] / flow["first-order", 10] < 0.7


def test_second_order_solver_is_deterministic_only():
    field = make_field("linear", SCHEDULE, 1)
    with pytest.raises(ValueError, match="gamma must be 0"):
        sample(lambda x, s, t: x, torch.zeros(1, 1, 4, 4), field, gamma=0.5, solver="dpm++2m")
    with pytest.raises(ValueError, match="solver must be one of"):
        sample(lambda x, s, t: x, torch.zeros(1, 1, 4, 4), field, solver="heun")
