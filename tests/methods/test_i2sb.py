"""I2SB (docs/bridges.md section 6): its symmetric schedule against quadrature and the reference's discrete
betas, its marginal at the ends, its posterior step against the Gaussian product by hand, the whole sampler
against the paper's sampling loop written out, the oracle property, the training target, per-item draws, and
one real BraTS pair learned."""

import math

import pytest
import torch
from helpers import TINY_UNET

from cdtsde.diffusion.gaussian_path import posterior_step, sample_path
from cdtsde.draws import ItemGenerators
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.i2sb import TIME_SCALE, I2SBConfig, SchrodingerBridgePath, SymmetricScheduleConfig
from cdtsde.networks.conditional_unet import UNetConfig

RAMPS = ["sqrt-linear", "linear"]


def i2sb(seed=0, target_channels=1, target_kind="image", **options):
    bridge = SymmetricScheduleConfig(**options.pop("bridge", {}))
    torch.manual_seed(seed)
    return method_class("i2sb")(I2SBConfig(bridge=bridge, unet=UNetConfig(**TINY_UNET), **options),
                                DataInfo(source_channels=1, target_channels=target_channels,
                                         target_kind=target_kind, image_size=16))


def quadrature(path, low, high, n=200_001):
    grid = torch.linspace(low, high, n, dtype=torch.float64)
    return float(torch.trapezoid(path.beta(grid), grid))


@pytest.mark.parametrize("ramp", RAMPS)
def test_the_schedule_is_symmetric_and_its_integrals_match_quadrature(ramp):
    path = SchrodingerBridgePath(SymmetricScheduleConfig(beta_min=0.1, beta_max=0.3, ramp=ramp))
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    beta = path.beta(grid)
    torch.testing.assert_close(beta, beta.flip(0))  # beta_t = beta_{1-t}
    assert float(beta[0]) == pytest.approx(0.1) and int(beta.argmax()) == 50  # largest in the middle
    middle = 0.2 if ramp == "linear" else ((math.sqrt(0.1) + math.sqrt(0.3)) / 2) ** 2  # the ramp cut at 1/2
    assert float(beta[50]) == pytest.approx(middle)
    for t in (0.0, 1e-3, 0.2, 0.5, 0.77, 1.0):
        sigma2 = float(path.sigma2(torch.tensor(t, dtype=torch.float64)))
        bar_sigma2 = float(path.sigma2(torch.tensor(1 - t, dtype=torch.float64)))
        assert sigma2 == pytest.approx(quadrature(path, 0.0, t), rel=1e-8, abs=1e-12)
        assert bar_sigma2 == pytest.approx(quadrature(path, t, 1.0), rel=1e-8, abs=1e-12)
        assert sigma2 + bar_sigma2 == pytest.approx(path.total, rel=1e-12)


def test_the_schedule_is_the_limit_of_the_reference_discrete_betas():
    """The reference's 1000 betas per step: (linspace(sqrt(1e-4), sqrt(0.3 / 1000), 1000))^2, the first half
    mirrored; its sigma^2 after step k (the cumulative sum) is our sigma_t^2 at t = (k + 1) / 1000."""
    n = 1000
    ramp = torch.linspace(math.sqrt(1e-4), math.sqrt(0.3 / n), n, dtype=torch.float64) ** 2
    betas = torch.cat([ramp[: n // 2], ramp[: n // 2].flip(0)])
    path = SchrodingerBridgePath()
    ours = path.sigma2(torch.arange(1, n + 1, dtype=torch.float64) / n)
    torch.testing.assert_close(ours, betas.cumsum(0), rtol=1e-3, atol=0)
    assert path.total == pytest.approx(float(betas.sum()), rel=1e-3)


@pytest.mark.parametrize("ot_ode", [False, True])
def test_the_marginal_is_the_papers_and_pins_both_ends(ot_ode):
    """A = sigma^2 / (sigma^2 + bar sigma^2), B = bar sigma^2 / (...), C^2 = sigma^2 bar sigma^2 / (...)
    (Eq. 11, with the integrals by quadrature); x0 with no variance at t = 0, x1 with none at t = 1."""
    path = SchrodingerBridgePath(SymmetricScheduleConfig(ot_ode=ot_ode))
    like = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    for t in (0.05, 0.3, 0.5, 0.9):
        sigma2, bar_sigma2 = quadrature(path, 0.0, t), quadrature(path, t, 1.0)
        point = path.point(torch.tensor([t], dtype=torch.float64), like)
        assert float(point.a) == pytest.approx(sigma2 / (sigma2 + bar_sigma2), rel=1e-8)
        assert float(point.b) == pytest.approx(bar_sigma2 / (sigma2 + bar_sigma2), rel=1e-8)
        variance = 0.0 if ot_ode else sigma2 * bar_sigma2 / (sigma2 + bar_sigma2)
        assert float(point.c) ** 2 == pytest.approx(variance, rel=1e-8, abs=0)
    x0, x1 = torch.full((1, 1, 2, 2), 0.3, dtype=torch.float64), torch.full((1, 1, 2, 2), -0.8, dtype=torch.float64)
    for t, end in ((0.0, x0), (1.0, x1)):
        point = path.point(torch.tensor([t], dtype=torch.float64), like)
        assert float(point.c) == 0.0
        assert torch.equal(point.mean(x1, x0), end)


def gaussian_product(sigma_1, sigma_2):
    """N(mean_1, sigma_1^2) N(mean_2, sigma_2^2) = N(w_1 mean_1 + w_2 mean_2, variance) up to a constant."""
    w_1, w_2 = sigma_2**2 / (sigma_1**2 + sigma_2**2), sigma_1**2 / (sigma_1**2 + sigma_2**2)
    return w_1, w_2, sigma_1**2 * sigma_2**2 / (sigma_1**2 + sigma_2**2)


def papers_step(path, t, s, x_t, x0_hat, noise):
    """p(x_s | x0_hat, x_t), s < t, of the diffusion from x0 (Eq. 4): x_s ~ N(x0_hat, sigma_s^2) N(x_t,
    sigma_t^2 - sigma_s^2) as a Gaussian product; its mean alone for the OT-ODE (noise None)."""
    sigma2_t, sigma2_s = (float(path.sigma2(torch.tensor(v, dtype=torch.float64))) for v in (t, s))
    w_x0, w_xt, variance = gaussian_product(math.sqrt(sigma2_s), math.sqrt(sigma2_t - sigma2_s))
    mean = w_x0 * x0_hat + w_xt * x_t
    return mean if noise is None else mean + math.sqrt(variance) * noise


@pytest.mark.parametrize("t, s", [(1.0, 0.8), (0.8, 0.55), (0.55, 0.5), (0.3, 0.01), (0.2, 0.0)])
def test_the_posterior_step_is_the_gaussian_product_by_hand(t, s):
    """For any x_t, x0_hat and source y (not on a path), the core's eta = 1 step on I2SB's coefficients is the
    paper's posterior, and the core's implicit step on the OT-ODE coefficients is that posterior's mean;
    y drops out of both. From t = 1, x_t is the source itself (the core's booting step)."""
    path = SchrodingerBridgePath()
    generator = torch.Generator().manual_seed(3)
    y, x0_hat, x_t, z = (torch.randn(2, 1, 4, 4, generator=generator, dtype=torch.float64) for _ in range(4))
    if t == 1.0:
        x_t = y
    now, then = path.point(t, y), path.point(s, y)
    stepped = posterior_step(x_t, y, x0_hat, now, then, 1.0, lambda: z)
    torch.testing.assert_close(stepped, papers_step(path, t, s, x_t, x0_hat, z if s > 0 else None))
    ode = posterior_step(x_t, y, x0_hat, path.ode_point(t, y), path.ode_point(s, y), 0.0, lambda: z)
    torch.testing.assert_close(ode, papers_step(path, t, s, x_t, x0_hat, None))


@pytest.mark.parametrize("options", [{}, {"bridge": {"ot_ode": True}}, {"source_noise": 1.0},
                                     {"bridge": {"ramp": "linear", "beta_max": 1.0}}])
def test_the_sampler_is_the_papers_sampling_loop(options):
    """With an imperfect estimate, translation equals the paper's loop written out: x1 (the source, plus its
    noise drawn first when source_noise > 0), then at each step x0_hat and the posterior step of Eq. 4 (its
    mean for the OT-ODE, no noise onto the clean end), the noise drawn in order from one generator."""
    method = i2sb(**options)
    sources = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def estimate(x_t, condition, t):
        return torch.tanh(1.3 * x_t - 0.4 * condition + 0.1 * t.view(-1, 1, 1, 1).float())

    method.estimate = estimate
    ot_ode, steps = method.config.bridge.ot_ode, 6
    out = method.translate(sources, steps=steps, clip_denoised=False, generator=torch.Generator().manual_seed(5)).images

    generator = torch.Generator().manual_seed(5)
    x = sources
    if method.config.source_noise > 0:
        x = x + method.config.source_noise * torch.randn(sources.shape, generator=generator)
    times = [1 - k / steps for k in range(steps + 1)]
    for t, s in zip(times[:-1], times[1:]):
        x0_hat = estimate(x, sources, torch.full((2,), t, dtype=torch.float64))
        noise = None if ot_ode or s == 0 else torch.randn(x.shape, generator=generator)
        x = papers_step(method.path, t, max(s, 0.0), x, x0_hat, noise)
    torch.testing.assert_close(out, x, rtol=0, atol=2e-6)


@pytest.mark.parametrize("steps", [1, 3, 10])
@pytest.mark.parametrize("options, eta", [({}, 1.0), ({}, 0.0), ({}, 0.5), ({"bridge": {"ot_ode": True}}, 0.0),
                                          ({"source_noise": 0.5}, 1.0)])
def test_an_oracle_estimate_translates_exactly(steps, options, eta):
    method = i2sb(**options)
    generator = torch.Generator().manual_seed(2)
    target, sources = (torch.rand(2, 1, 16, 16, generator=generator) * 2 - 1 for _ in range(2))
    method.estimate = lambda x_t, condition, t: target
    out = method.translate(sources, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


@pytest.mark.parametrize("ot_ode, eta", [(False, 1.0), (False, 0.0), (True, 0.0)])
def test_an_exact_x0_keeps_every_iterate_on_the_forward_marginal(ot_ode, eta):
    """Monte Carlo over 100 000 runs of one pair: each iterate has the marginal's mean A y + B x0 and
    standard deviation C (the OT-ODE's iterates lie exactly on the interpolation)."""
    samples, path = 100_000, SchrodingerBridgePath(SymmetricScheduleConfig(ot_ode=ot_ode))
    generator = torch.Generator().manual_seed(4)
    x0, y = (torch.rand(1, 1, 2, 3, generator=generator) * 2 - 1 for _ in range(2))
    start = y.expand(samples, -1, -1, -1).clone()
    checked = []

    def check(index, t, s, x, x0_hat):
        point = path.point(s, y)
        mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True)
        sigma = float(point.c.max())
        assert (mean - point.mean(y, x0)).abs().max() < 6 * sigma / samples**0.5 + 1e-5
        assert (std - point.c).abs().max() < 6 * sigma / (2 * samples) ** 0.5 + 1e-5
        checked.append(s)

    coefficients = path.ode_point if ot_ode else path.point
    result = sample_path(lambda x, _y, t: x0.expand_as(x), y, lambda time: coefficients(time, y), path.times(5), eta,
                         start, generator=generator, callback=check)
    assert len(checked) == 5 and torch.allclose(result.x0, x0.expand_as(result.x0), atol=1e-6)


class Network(torch.nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x_t, sources, time):
        return self.function(x_t, sources, time)


@pytest.mark.parametrize("options", [{}, {"bridge": {"ot_ode": True}}, {"source_noise": 1.0}])
def test_the_training_loss_is_zero_for_the_true_target(options):
    """A network that outputs (x_t - x0) / sigma_t (Eq. 12, computed from the x_t it is given) has loss 0:
    the closed-form label the loss uses is that quantity."""
    method = i2sb(**options)
    generator = torch.Generator().manual_seed(0)
    batch = {"source": torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1,
             "target": torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1}

    def oracle(x_t, sources, time):
        t = time.double() / TIME_SCALE
        return ((x_t.double() - batch["target"].double()) / method.path.sigma(t, x_t.double())).float()

    method.net = Network(oracle)
    loss = method(batch, generator=ItemGenerators(0, 1, 0, range(4)))["loss"]
    assert float(loss) < 1e-8
    method.net = Network(lambda x_t, sources, time: torch.zeros_like(x_t))  # and a wrong one is not zero
    assert float(method(batch, generator=ItemGenerators(0, 1, 0, range(4)))["loss"]) > 1e-2


def test_a_split_batch_gives_the_whole_batch_loss_and_gradients():
    """Every draw (time, path noise, source noise) is per item: two halves average to the whole batch."""
    method = i2sb(source_noise=0.3)
    generator = torch.Generator().manual_seed(1)
    batch = {"source": torch.rand(8, 1, 16, 16, generator=generator) * 2 - 1,
             "target": torch.rand(8, 1, 16, 16, generator=generator) * 2 - 1}
    results = []
    for parts in ([range(0, 8)], [range(0, 4), range(4, 8)]):
        method.zero_grad(set_to_none=True)
        total = 0.0
        for positions in parts:
            part = {key: value[positions.start:positions.stop] for key, value in batch.items()}
            loss = method(part, generator=ItemGenerators(7, 11, 1, positions))["loss"] / len(parts)
            loss.backward()
            total += float(loss.detach())
        results.append((total, {name: p.grad.clone() for name, p in method.named_parameters()}))
    (whole, whole_grads), (split, split_grads) = results
    assert split == pytest.approx(whole, rel=1e-5)
    for name, gradient in whole_grads.items():
        torch.testing.assert_close(split_grads[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_options_are_checked_and_the_ot_ode_samples_deterministically_for_every_eta():
    """The noiseless path's posterior has no variance: an OT-ODE model's translation depends on neither eta
    nor the generator (the stochastic model's does)."""
    assert (i2sb().sampling.steps, i2sb().sampling.eta) == (1000, 1.0)
    sources = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for options, same in (({"bridge": {"ot_ode": True}}, True), ({}, False)):
        method = i2sb(**options)
        first = method.translate(sources, steps=4, eta=1.0, generator=torch.Generator().manual_seed(0)).images
        for eta, seed in ((1.0, 9), (0.3, 0)):
            again = method.translate(sources, steps=4, eta=eta, generator=torch.Generator().manual_seed(seed)).images
            assert torch.equal(again, first) == same
    with pytest.raises(ValueError, match="ramp must be one of"):
        SymmetricScheduleConfig(ramp="cosine")
    with pytest.raises(ValueError, match="beta_min and beta_max"):
        SymmetricScheduleConfig(beta_min=0.0)
    with pytest.raises(ValueError, match="source_noise"):
        I2SBConfig(source_noise=-1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        SchrodingerBridgePath().point(torch.tensor([1.5]), torch.zeros(1))


def test_masks_are_bridged_in_one_hot_space():
    from cdtsde.data.masks import decode_classes, encode_classes

    method = i2sb(target_channels=5, target_kind="mask")
    classes = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    target = torch.from_numpy(encode_classes(classes.numpy(), 5))
    method.estimate = lambda x_t, sources, t: target
    out = method.translate(torch.rand(2, 1, 16, 16) * 2 - 1, steps=3, generator=torch.Generator().manual_seed(1)).images
    assert (decode_classes(out) == classes.numpy()).all()
