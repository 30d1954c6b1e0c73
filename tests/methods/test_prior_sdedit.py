"""The target-only DDPM prior and SDEdit on it (docs/zero-shot.md): the DDPM path and its ancestral step, the
two parameterisations, SDEdit's limits (t0 = 0, a point-mass prior, a Gaussian prior), masked editing,
repeats, and training, checkpoints and translation through the library and the command line. The oracle
property of the sampler on the DDPM path (eta 0, 0.5, 1) is in tests/test_bridges.py's universal test."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_UNET, InversionPairs

from cdtsde.diffusion.ddpm import DDPMPath, DDPMScheduleConfig
from cdtsde.diffusion.gaussian_path import posterior_step
from cdtsde.diffusion.schedule import CLEAN_END
from cdtsde.errors import CdtsdeError
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.prior import Prior, PriorConfig
from cdtsde.methods.sdedit import SDEdit
from cdtsde.networks.conditional_unet import ConditionalUNet, UNetConfig


def make(name="sdedit", target_channels=1, prediction="eps", seed=0, randomise=False, **config):
    cls = method_class(name)
    torch.manual_seed(seed)
    method = cls(cls.config_class(unet=UNetConfig(**TINY_UNET), prediction=prediction, **config),
                 DataInfo(source_channels=None, target_channels=target_channels, image_size=16))
    if randomise:  # a non-zero output layer, so that translations depend on the iterate
        with torch.no_grad():
            for parameter in method.net.parameters():
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return method


class Oracle(torch.nn.Module):
    """The network of a prior whose posterior mean E[x0 | x_t] is `posterior_mean(x_t, t)`, in the method's
    parameterisation."""

    def __init__(self, method, posterior_mean):
        super().__init__()
        self.path, self.prediction, self.posterior_mean = method.path, method.config.prediction, posterior_mean

    def forward(self, x_t, condition, t):
        assert condition is None
        x0 = self.posterior_mean(x_t, t)
        if self.prediction == "x0":
            return x0
        point = self.path.point(t, x_t)
        return (x_t - point.b * x0) / point.c


def point_mass(image):
    return lambda x_t, t: image.expand_as(x_t)


def gaussian(path, mu, s):
    """x0 ~ N(mu, s^2) per pixel: E[x0 | x_t] = mu + b s^2 / (b^2 s^2 + c^2) (x_t - b mu)."""

    def mean(x_t, t):
        point = path.point(t, x_t)
        return mu + point.b * s**2 / (point.b**2 * s**2 + point.c**2) * (x_t - point.b * mu)

    return mean


# --- the network and the path ---------------------------------------------------------------------------
def test_the_unet_without_condition_channels_is_unconditional():
    net = ConditionalUNet(2, 0, UNetConfig.tiny())
    x_t = torch.randn(3, 2, 9, 7)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    out = net(x_t, None, torch.tensor([0, 5, 999]))
    assert out.shape == x_t.shape and out.abs().sum() > 0
    torch.testing.assert_close(net(x_t, x_t[:, :0], torch.tensor([0, 5, 999])), out)
    with pytest.raises(ValueError, match=r"x_src must have shape \(B, 1, H, W\), got None"):
        ConditionalUNet(2, 1, UNetConfig.tiny())(x_t, None, 3)
    with pytest.raises(ValueError, match="channel counts must be >= 1"):
        ConditionalUNet(2, -1, UNetConfig.tiny())


def test_the_ddpm_path_grids_and_start_steps():
    path = DDPMPath()
    like = torch.zeros((), dtype=torch.float64)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    for t in (0, 399, 999):
        point = path.point(t, like)
        assert float(point.a) == 0 and float(point.b) == pytest.approx(math.sqrt(abar[t]), rel=1e-12)
        assert float(point.c) == pytest.approx(math.sqrt(1 - abar[t]), rel=1e-12)
    clean = path.point(CLEAN_END, like)
    assert (float(clean.a), float(clean.b), float(clean.c)) == (0.0, 1.0, 0.0)
    assert float(path.point(999, like).b) < 0.007  # x_{T-1} is N(0, I) to 0.6%: sampling may start there
    assert path.times(1000) == [*range(999, -1, -1), CLEAN_END]  # DDPM's full chain
    assert path.times(5000) == path.times(1000)
    assert path.times(5, start=399) == [399, 299, 200, 100, 0, CLEAN_END]
    assert path.times(40, start=9) == [*range(9, -1, -1), CLEAN_END]  # capped: one evaluation per step
    assert path.times(3, start=CLEAN_END) == [CLEAN_END]
    assert [path.start_step(t0) for t0 in (0.0, 0.0004, 0.4, 1.0)] == [CLEAN_END, CLEAN_END, 399, 999]
    with pytest.raises(ValueError, match="t0 must lie in"):
        path.start_step(1.5)
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        DDPMScheduleConfig(beta_schedule="quadratic")
    path = DDPMPath(DDPMScheduleConfig(num_steps=100, beta_schedule="cosine"))
    assert path.times(3) == [99, 50, 0, CLEAN_END] and path.start_step(0.4) == 39


def test_the_ancestral_step_is_ddpms():
    """At eta = 1 the core's step from t to t - 1 is DDPM's (Ho et al. 2020, Eqs. 6-7):
    mean sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    variance beta_tilde = beta_t (1 - abar_{t-1}) / (1 - abar_t)."""
    path = DDPMPath()
    like = torch.zeros((), dtype=torch.float64)
    betas = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    generator = torch.Generator().manual_seed(0)
    x_t, x0_hat, z = (torch.randn(6, dtype=torch.float64, generator=generator) for _ in range(3))
    for t in (999, 500, 1):
        beta, a_t, a_s = betas[t], abar[t], abar[t - 1]
        expected = (a_s.sqrt() * beta / (1 - a_t) * x0_hat + (1 - beta).sqrt() * (1 - a_s) / (1 - a_t) * x_t
                    + (beta * (1 - a_s) / (1 - a_t)).sqrt() * z)
        step = posterior_step(x_t, x_t, x0_hat, path.point(t, like), path.point(t - 1, like), 1.0, lambda: z)
        torch.testing.assert_close(step, expected)
    # onto the clean end the step returns x0_hat (DDPM's last step, whose noise is switched off)
    torch.testing.assert_close(posterior_step(x_t, x_t, x0_hat, path.point(0, like), path.point(-1, like), 1.0,
                                              lambda: z), x0_hat)


# --- the prior --------------------------------------------------------------------------------------------
def test_eps_and_x0_prediction_give_the_same_estimate_and_zero_loss_for_an_oracle():
    generator = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1
    t = torch.tensor([0, 10, 500, 999])
    estimates = []
    for prediction in ("eps", "x0"):
        method = make("prior", prediction=prediction)
        x_t = method.path.point(t, x0).draw(x0, x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)))
        method.net = Oracle(method, point_mass(x0))
        estimates.append(method.estimate(x_t, x0, t))
        # the training loss on its own draw of (t, eps) is zero for the oracle of a one-image data set
        assert method({"target": x0, "name": list("abcd")}, "model", torch.Generator().manual_seed(0), {})["loss"] < 1e-9
    torch.testing.assert_close(estimates[0], x0, atol=5e-5, rtol=0)  # (x_t - c eps) / b at b = 0.0064
    torch.testing.assert_close(estimates[1], x0)
    with pytest.raises(ValueError, match="prediction must be one of eps, x0"):
        PriorConfig(prediction="v")


def test_the_prior_samples_unconditionally_one_per_source():
    method = make("prior", randomise=True)
    assert (method.sampling.steps, method.sampling.eta, method.sampling.clip_denoised) == (1000, 1.0, True)
    first = method.translate(torch.zeros(2, 1, 16, 16), steps=4, generator=torch.Generator().manual_seed(0)).images
    other = method.translate(torch.rand(2, 1, 16, 16), steps=4, generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 1, 16, 16) and torch.equal(first, other)  # the sources' content is never read
    assert not torch.equal(first[0], first[1]) and first.abs().max() <= 1
    assert method.network_evaluations(method.sampling_options(steps=4)) == 4 and method.network_evaluations() == 1000
    # a point-mass prior's samples are its image, from the full chain and from a DDIM grid
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    method.net = Oracle(method, point_mass(image))
    for steps, eta in ((1000, 1.0), (20, 0.0)):
        out = method.translate(torch.zeros(3, 1, 16, 16), steps=steps, eta=eta).images
        torch.testing.assert_close(out, image.expand_as(out))
    with pytest.raises(CdtsdeError, match="prior method has no sampling option.*t0"):
        method.translate(torch.zeros(1, 1, 16, 16), t0=0.5)


class ReferencePrior(Prior):
    """A test double of a conditioned prior (the LMI-guided method's shape): the hook adds the reference and
    the difference x_t - reference as channels, and records what it saw."""

    name = "reference-prior"

    def condition_channels(self):
        return 2 * self.data.target_channels

    def condition(self, x_t, reference, t):
        self.seen.append((x_t.clone(), reference.clone(), t.clone()))
        return torch.cat([reference, x_t - reference], dim=1)


def test_the_conditioning_hook_sees_the_clean_target_in_training_and_the_source_in_sampling():
    torch.manual_seed(0)
    method = ReferencePrior(PriorConfig(unet=UNetConfig(**TINY_UNET)), DataInfo(source_channels=None, target_channels=1))
    method.seen = []
    assert method.net.cond_channels == 2
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    loss = method({"target": x0, "name": ["a", "b"]}, "model", torch.Generator().manual_seed(0), {})["loss"]
    loss.backward()
    assert torch.equal(method.seen[0][1], x0) and method.seen[0][2].shape == (2,)
    method.seen.clear()
    source = torch.rand(2, 3, 16, 16) * 2 - 1  # an RGB source for a grey prior: its channel mean is the reference
    method.translate(source, steps=3, generator=torch.Generator().manual_seed(0))
    assert [int(t[0]) for _, _, t in method.seen] == [999, 500, 0]
    for _, reference, _ in method.seen:
        torch.testing.assert_close(reference, source.mean(1, keepdim=True))
    assert not torch.equal(method.seen[0][0], method.seen[1][0])  # recomputed from every iterate


# --- SDEdit -----------------------------------------------------------------------------------------------
def test_sdedit_defaults_and_options():
    method = make()
    sampling = method.sampling
    assert (sampling.t0, sampling.steps, sampling.eta, sampling.clip_denoised, sampling.repeats) == (0.4, 40, 1.0, True, 1)
    assert method.network_evaluations() == 40
    assert method.network_evaluations(method.sampling_options(t0=0.005, repeats=3)) == 3 * 5  # steps 4, 3, 2, 1, 0
    assert method.network_evaluations(method.sampling_options(t0=0.0)) == 0
    for bad, message in (({"t0": 1.2}, "t0 must lie in"), ({"repeats": 0}, "repeats must be an integer"),
                         ({"eta": 2.0}, "eta must lie in"), ({"steps": 0}, "steps must be an integer")):
        with pytest.raises(CdtsdeError, match=message):
            method.sampling_options(**bad)


def test_sdedit_at_t0_zero_returns_the_source():
    method = make(randomise=True)
    source = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.equal(method.translate(source, t0=0.0, repeats=3).images, source)
    # in the target's channel space: a grey source for an RGB prior is repeated over the channels
    rgb = make(target_channels=3, randomise=True)
    assert torch.equal(rgb.translate(source, t0=0.0).images, source.expand(-1, 3, -1, -1))
    assert rgb.translate(source, t0=0.3, steps=2).images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_sdedit_with_a_point_mass_prior_returns_its_image(prediction):
    """An oracle prior whose posterior mean is one image K: from any source, any t0 > 0 and any eta the
    output is K (the last step onto the clean end returns the estimate)."""
    method = make(prediction=prediction)
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    method.net = Oracle(method, point_mass(image))
    source = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for t0, eta, steps in ((0.1, 1.0, 40), (0.4, 0.5, 5), (1.0, 0.0, 3), (0.4, 1.0, 1000)):
        out = method.translate(source, t0=t0, eta=eta, steps=steps, generator=torch.Generator().manual_seed(2)).images
        torch.testing.assert_close(out, image.expand_as(out), atol=5e-5, rtol=0)


@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_sdedit_with_a_gaussian_prior_moves_from_the_source_to_the_prior_as_t0_grows(eta):
    """x0 ~ N(mu, s^2) per pixel and an exact posterior mean, from x_s0 = b y + c z (b, c at s0): the mean
    of SDEdit's output is mu + w (y - mu), w falling from 1 (t0 = 0: the source) to 0 (t0 = 1: the prior's
    mean). Ancestrally (eta = 1) w = b^2 s^2 / (b^2 s^2 + c^2), the exact posterior mean given x_s0, on any
    grid (the posterior mean is linear in x_t and each step's mean is exact, the forward chain being
    Markov): checked by Monte Carlo on 6 steps. Deterministically (eta = 0, every step) the sampler follows
    the probability-flow ODE, whose map keeps each value's standard score: w = b s / sqrt(b^2 s^2 + c^2),
    the square root of the ancestral weight, so DDIM keeps more of the source. That map is affine, so its
    mean is its value at the start's mean b y (one run, no noise)."""
    method = make()
    n, generator = 20_000, torch.Generator().manual_seed(0)
    mu = torch.rand(1, 1, 3, 4, generator=generator, dtype=torch.float64) - 0.5
    s = 0.3
    method.net = Oracle(method, gaussian(method.path, mu, s))
    y = torch.rand(1, 1, 3, 4, generator=generator, dtype=torch.float64) * 2 - 1
    weights = []
    for t0 in (0.01, 0.2, 0.4, 0.7, 1.0):
        start = method.path.start_step(t0)
        point = method.path.point(start, mu)
        share = float(point.b**2 * s**2 / (point.b**2 * s**2 + point.c**2))
        if eta == 1:
            out = method.translate(y.expand(n, -1, -1, -1), t0=t0, steps=6, eta=eta, clip_denoised=False,
                                   generator=generator).images
            w, bound = share, 6 * s / n**0.5  # measured: within 0.003
        else:
            out = method.denoise(point.b * y, y, method.path.times(1000, start=start), 0.0, False, None)
            w, bound = share**0.5, 5e-3  # the ODE's discretisation error on every step: measured 0.002
        assert (out.mean(0, keepdim=True) - (mu + w * (y - mu))).abs().max() < bound, t0
        weights.append(w)
    assert weights == sorted(weights, reverse=True) and weights[0] > 0.97 and weights[-1] < 2e-3


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_masked_sdedit_keeps_the_source_outside_the_mask(eta):
    method = make(randomise=True)
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(2, 1, 16, 16, generator=generator) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 2:9] = 1
    out = method.translate(source, mask=mask, steps=5, eta=eta, repeats=2, generator=generator).images
    outside = mask.expand_as(out) == 0
    assert torch.equal(out[outside], source[outside])
    assert not torch.allclose(out[~outside], source[~outside])
    # with a point-mass prior: its image inside, the source outside
    image = torch.full((1, 1, 16, 16), 0.25)
    method.net = Oracle(method, point_mass(image))
    out = method.translate(source, mask=mask, steps=5, eta=eta).images
    torch.testing.assert_close(out, torch.where(mask.bool(), image, source), atol=1e-6, rtol=0)


def test_masked_sdedit_at_eta_zero_resets_the_outside_to_the_noised_source():
    """Outside the mask every iterate is sqrt(abar_t) y + sigma_t z with the start's noise z (the reference
    code's reset); inside, the prior's own update."""
    method = make(randomise=True)
    source = torch.rand(1, 1, 16, 16) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8] = 1
    times = method.path.times(5, start=399)
    z = torch.randn(source.shape, generator=torch.Generator().manual_seed(0))
    x_start = method.path.point(399, source).draw(source, source, z)
    seen = []

    def check(index, t, s, x, x0_hat):
        point = method.path.point(s, x)
        expected = point.b * source + point.c * z
        torch.testing.assert_close(x[..., 8:], expected[..., 8:], atol=1e-5, rtol=0)
        seen.append(s)

    method.denoise(x_start, source, times, 0.0, True, None, keep=source, mask=mask, callback=check)
    assert seen == times[1:]


def test_masks_are_checked():
    method = make()
    source = torch.zeros(2, 1, 8, 8)
    with pytest.raises(CdtsdeError, match="the mask must broadcast"):
        method.translate(source, mask=torch.ones(8, 8))
    with pytest.raises(CdtsdeError, match="the mask must broadcast"):
        method.translate(source, mask=torch.ones(3, 1, 8, 8))
    with pytest.raises(CdtsdeError, match=r"values in \[0, 1\]"):
        method.translate(source, mask=torch.full((1, 1, 8, 8), 2.0))


def test_repeats_run_sdedit_again_on_its_own_output():
    method = make(randomise=True)
    source = torch.rand(2, 1, 16, 16) * 2 - 1
    generator = torch.Generator().manual_seed(5)
    once = method.translate(source, steps=3, generator=generator).images
    twice = method.translate(once, steps=3, generator=generator).images
    repeated = method.translate(source, steps=3, repeats=2, generator=torch.Generator().manual_seed(5)).images
    torch.testing.assert_close(repeated, twice)
    assert not torch.allclose(repeated, once)


# --- training, checkpoints, the command line ---------------------------------------------------------------
@pytest.mark.parametrize("name, prediction", [("prior", "eps"), ("sdedit", "x0")])
def test_train_save_load_and_translate(name, prediction, tmp_path):
    from cdtsde.data import TargetOnlyData
    from cdtsde.training import TrainConfig, load_pretrained, train

    method = make(name, prediction=prediction)
    result = train(method, TargetOnlyData(InversionPairs(n=16)),
                   TrainConfig(max_steps=4, batch_size=4, sample_every=0, checkpoint_every=4, warmup_steps=1),
                   tmp_path, progress=False)
    assert len(result["losses"]) == 4 and all(math.isfinite(v) for v in result["losses"])
    loaded = load_pretrained(tmp_path)
    assert loaded.name == name and loaded.sampling == method.sampling and loaded.config.prediction == prediction
    assert loaded.data.source_channels is None
    sources = InversionPairs(n=2).sources
    sdedit = loaded if name == "sdedit" else load_pretrained(tmp_path, method="sdedit")
    first = sdedit.translate(sources, t0=0.3, steps=3, generator=torch.Generator().manual_seed(0)).images
    again = sdedit.translate(sources, t0=0.3, steps=3, generator=torch.Generator().manual_seed(0)).images
    assert first.shape == (2, 1, 16, 16) and torch.equal(first, again) and first.abs().max() <= 1
    if name == "prior":
        assert isinstance(sdedit, SDEdit) and not sdedit.training and sdedit.sampling.t0 == 0.4
        for key, tensor in loaded.state_dict().items():
            assert torch.equal(sdedit.state_dict()[key], tensor)
        samples = loaded.translate(sources, steps=3, eta=0.0).images
        assert samples.shape == (2, 1, 16, 16)
        assert isinstance(SDEdit.from_method(loaded), SDEdit)
        as_prior = load_pretrained(tmp_path / "model", method="prior")
        assert type(as_prior).__name__ == "Prior" and as_prior.sampling == loaded.sampling
    else:  # an SDEdit checkpoint runs as the plain prior (unconditional samples), with the prior's defaults
        as_prior = load_pretrained(tmp_path, method="prior")
        assert as_prior.name == "prior" and as_prior.sampling == type(as_prior).sampling_class()
        assert as_prior.translate(sources, steps=2).images.shape == (2, 1, 16, 16)
    with pytest.raises(CdtsdeError, match="runs checkpoints of: sdedit, prior; got 'Linear'"):
        SDEdit.from_method(torch.nn.Linear(1, 1))
    with pytest.raises(CdtsdeError, match=f"a {name} checkpoint; the lmi method runs checkpoints of: lmi; got '{name}'"):
        load_pretrained(tmp_path, method="lmi")


def test_sdedit_trains_exactly_as_the_prior(tmp_path):
    """Same configuration, same seed: the same losses and the same weights (training is the prior's)."""
    from cdtsde.data import TargetOnlyData
    from cdtsde.training import TrainConfig, train

    states, losses = [], []
    for name in ("prior", "sdedit"):
        method = make(name)
        result = train(method, TargetOnlyData(InversionPairs(n=8)), TrainConfig(max_steps=2, batch_size=4, sample_every=0,
                       checkpoint_every=2, warmup_steps=1), tmp_path / name, progress=False)
        states.append(method.state_dict())
        losses.append(result["losses"])
    assert losses[0] == losses[1] and states[0].keys() == states[1].keys()
    for key, tensor in states[0].items():
        assert torch.equal(states[1][key], tensor), key


@pytest.mark.slow
@pytest.mark.parametrize("prediction, floor", [("x0", 35.0), ("eps", 16.0)])
def test_a_prior_trained_on_one_image_makes_sdedit_return_it(prediction, floor, tmp_path):
    """150 steps of batch 8 on one 16 px image (about 4 s on 2 cores), the learning rate falling to 0 over
    the last 75: SDEdit from an unrelated source returns the image (PSNR over [-1, 1], peak 2; measured over
    seeds 0-2 at t0 0.4 and 1.0: x0-prediction 39-40 dB, eps-prediction 18-22 dB, which learns the point mass
    more slowly since its x0 estimate divides the eps error by sqrt(abar)). The source itself scores 7 dB."""
    from cdtsde.training import TrainConfig, train

    image = InversionPairs(n=4).targets[1]

    class OneImage(torch.utils.data.Dataset):
        target_channels = 1

        def __len__(self):
            return 8

        def __getitem__(self, index):
            return {"target": image, "name": "one"}

    method = make(prediction=prediction)
    train(method, OneImage(), TrainConfig(max_steps=150, batch_size=8, lr=3e-3, warmup_steps=10, decay_steps=75,
                                          ema_decay=0.9, sample_every=0, checkpoint_every=10**6, flips=False),
          tmp_path, progress=False)
    source = InversionPairs(n=4).sources[1:2]
    for t0 in (0.4, 1.0):
        out = method.eval().translate(source, t0=t0, steps=20, generator=torch.Generator().manual_seed(0)).images
        psnr = 10 * math.log10(4 / (out[0] - image).square().mean().item())
        assert psnr > floor, (t0, psnr)


def test_sdedit_trains_and_translates_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from cdtsde.cli import main

    config = {"method": "sdedit",
              "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "n_val": 2, "size": 16, "seed": 1},
              "model": {"unet": TINY_UNET, "prediction": "eps"},
              "train": {"batch_size": 4, "log_every": 1, "sample_every": 3, "checkpoint_every": 3}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--output", str(run), "--max-steps", "3"]) == 0
    assert "step 3: loss" in capsys.readouterr().out
    record = json.loads((run / "model" / "config.json").read_text())
    assert record["method"] == "sdedit" and record["data"]["source_channels"] is None
    assert record["sampling"] == {"t0": 0.4, "steps": 40, "eta": 1.0, "clip_denoised": True, "repeats": 1}
    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), "--t0", "0.3", "--steps", "5", "--repeats", "2"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (16, 16)
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out2"), "--gamma", "0"]) == 2
    assert "the sdedit method has no sampling option --gamma" in capsys.readouterr().err


def test_cli_translates_a_prior_checkpoint_as_sdedit(tmp_path, capsys):
    """`cdtsde translate --method sdedit` on a prior's checkpoint: SDEdit's options apply (t0 = 0 returns the
    source exactly), and a method that does not share the prior's weights is refused by name."""
    from PIL import Image

    from cdtsde.cli import main
    from cdtsde.training import save_pretrained

    save_pretrained(make("prior", randomise=True), tmp_path / "prior")
    image = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    common = ["translate", "--checkpoint", str(tmp_path / "prior"), "--input", str(tmp_path / "a.png")]
    assert main([*common, "--output", str(tmp_path / "kept"), "--method", "sdedit", "--t0", "0"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "kept" / "a.png")), image)
    assert main([*common, "--output", str(tmp_path / "edited"), "--method", "sdedit", "--t0", "0.5",
                 "--steps", "3"]) == 0
    assert np.abs(np.asarray(Image.open(tmp_path / "edited" / "a.png")).astype(int) - image).mean() > 1
    assert main([*common, "--output", str(tmp_path / "prior-out"), "--t0", "0.5"]) == 2  # the prior has no t0
    assert "the prior method has no sampling option --t0" in capsys.readouterr().err
    assert main([*common, "--output", str(tmp_path / "no"), "--method", "cyclegan"]) == 2
    assert "a prior checkpoint; the cyclegan method runs checkpoints of: cyclegan" in capsys.readouterr().err
