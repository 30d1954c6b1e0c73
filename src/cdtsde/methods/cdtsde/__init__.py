"""CDTSDE: the adaptive domain-shift diffusion (noise schedule + mixing field + conditional UNet), with
the linear field as DoSSR and the channel, dynamic and content fields (docs/cdtsde.md).

The source enters the network by channel concatenation; the mixing field and the forward mean use the
source in the target's channel space (the anchor x_src of d_t = Lambda x_src + (1 - Lambda) x0, Eq. 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch

from ... import draws
from ...networks.conditional_unet import TINY_UNET, ConditionalUNet, UNetConfig
from ...settings import check_positive
from ..base import DataInfo, Method, TranslationOutput, check_finite_sources, frozen
from .domain_shift import DomainShiftSchedule, DomainShiftScheduleConfig, q_sample, timestep_grid
from .fields import FieldConfig, make_field, mixer_statistics
from .sampler import SamplerOptions, sample

MIXER_OBJECTIVES = ("x0-mse", "elbo")


@dataclass
class CDTSDEConfig:
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    schedule: DomainShiftScheduleConfig = dataclasses.field(default_factory=DomainShiftScheduleConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    mixer_lr_scale: float = 10.0  # the paper trains the mixer with a 10x learning rate
    # what trains the mixer (dynamic, content): "x0-mse", the paper's (the denoiser's loss, through x_t), or
    # "elbo": the x0 errors weighted per pixel by the diffusion ELBO's SNR drop, plus restoring_weight E[g^2]
    mixer_objective: str = "x0-mse"
    restoring_weight: float = 0.0  # beta of the elbo objective's restoring penalty

    def __post_init__(self):
        check_positive("model.mixer_lr_scale", self.mixer_lr_scale)
        if self.mixer_objective not in MIXER_OBJECTIVES:
            raise ValueError(f"model.mixer_objective must be one of {', '.join(MIXER_OBJECTIVES)}, "
                             f"got {self.mixer_objective!r}")
        if not self.restoring_weight >= 0:
            raise ValueError(f"model.restoring_weight must be >= 0, got {self.restoring_weight}")
        if self.restoring_weight and self.mixer_objective != "elbo":
            raise ValueError("model.restoring_weight belongs to mixer_objective: elbo")
        variant = self.field.variant if isinstance(self.field, FieldConfig) else self.field.get("variant")
        if self.mixer_objective == "elbo" and variant not in ("dynamic", "content"):
            raise ValueError(f"mixer_objective elbo trains a mixer: the dynamic or content field, not {variant!r}")


class CDTSDE(Method):
    name = "cdtsde"
    description = "adaptive domain-shift diffusion with a learned mixing field (linear field = DoSSR)"
    data_kind = "paired"
    config_class = CDTSDEConfig
    tiny_config = {"unet": TINY_UNET}
    tiny_sampling = ({"steps": 1, "gamma": 0.0}, {"steps": 3, "gamma": 1.0},
                     {"steps": 2, "gamma": 0.0, "solver": "dpm++2m", "spacing": "quadratic"})
    sampling_class = SamplerOptions
    diagnostics_help = {"clamped_pixels": "field pixel-steps where the sampler clamped rho (the learned field "
                                          "is not monotone in t there)"}

    def __init__(self, config: CDTSDEConfig, data: DataInfo):
        super().__init__(config, data)
        self.schedule = DomainShiftSchedule(config.schedule)
        self.field = make_field(config.field, self.schedule, data.target_channels)
        self.net = ConditionalUNet(data.target_channels, data.source_channels, config.unet)

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """AdamW with two groups: the denoiser at `lr`, the mixing field at `mixer_lr_scale * lr` (paper).
        With the elbo objective, two AdamW, one per phase: "model" (the denoiser), then "mixer"."""
        mixer_ids = {id(p) for p in self.field.parameters()}
        groups = [
            {"params": [p for p in self.parameters() if id(p) not in mixer_ids], "lr_scale": 1.0},
            {"params": [p for p in self.parameters() if id(p) in mixer_ids], "lr_scale": self.config.mixer_lr_scale},
        ]
        groups = [g for g in groups if g["params"]]
        if self.config.mixer_objective == "elbo":
            return {phase: torch.optim.AdamW([group], lr=train.lr, weight_decay=train.weight_decay)
                    for phase, group in zip(("model", "mixer"), groups)}
        return {"model": torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)}

    def forward(self, batch: dict, phase: str = "model", generator: draws.Draws = None,
                shared: dict | None = None) -> dict:
        """The training loss: x0-prediction MSE with t uniform in {0, ..., t1} (t1 included: the first
        sampling step is evaluated there). Gradients reach the mixer through x_t (docs/cdtsde.md, section 4)."""
        x0, x_src = batch["target"], batch["source"]
        self.check_source(x_src)
        shared = {} if shared is None else shared
        if "t" not in shared:  # one draw per step, which both phases of the elbo objective use
            shared["t"] = draws.integers(0, self.schedule.t1 + 1, (x0.shape[0],), generator, device=x0.device)
            shared["noise"] = draws.normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        t, noise = shared["t"], shared["noise"]
        anchor = self.in_target_space(x_src)
        if phase == "mixer":
            return self.elbo_mixer_loss(x0, x_src, anchor, t, noise)
        separate = self.config.mixer_objective == "elbo"  # then the mixer learns in its own phase
        with frozen(self.field) if separate else contextlib.nullcontext():
            mixing, modulation = self.field.with_modulation(t, anchor)
            forward = q_sample(self.field, x0, anchor, t, noise=noise, mixing=mixing)
            x0_hat = self.net(forward.x_t, x_src, t)
        return {"loss": torch.mean((x0_hat - x0) ** 2),
                **mixer_statistics(self.field, mixing, modulation, t, anchor)}

    def snr(self, mixing: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-pixel signal-to-noise ratio of x0 in x_t given the source: (sqrt(abar_t) (1 - Lambda_t))^2 / sigma_t^2."""
        return (self.schedule.sqrt_abar(t, mixing) * (1 - mixing)) ** 2 / self.schedule.sigma(t, mixing) ** 2

    def elbo_weights(self, mixing: torch.Tensor, anchor: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """w_t = SNR_{t-1} - SNR_t per pixel (the discrete diffusion ELBO's weight of the x0 error, Kingma et
        al. 2021), 0 at t = 0 (the last step predicts x0 itself) and where a non-monotone field would make
        it negative."""
        previous = self.field((t - 1).clamp(min=0), anchor)
        drop = self.snr(previous, (t - 1).clamp(min=0)) - self.snr(mixing, t)
        return torch.where((t >= 1).view(-1, 1, 1, 1), drop.clamp(min=0), torch.zeros_like(drop))

    def elbo_mixer_loss(self, x0, x_src, anchor, t, noise) -> dict:
        """The mixer's phase of the elbo objective (docs/cdtsde.md, section 4): sum(w (x0_hat - x0)^2) /
        sum(w), the normaliser held constant, plus restoring_weight E[g^2] over the items below t1; the
        denoiser enters as a constant."""
        with frozen(self.net):
            mixing, modulation = self.field.with_modulation(t, anchor)
            x_t = q_sample(self.field, x0, anchor, t, noise=noise, mixing=mixing).x_t
            errors = (self.net(x_t, x_src, t) - x0) ** 2
        weights = self.elbo_weights(mixing, anchor, t)
        loss = (weights * errors).sum() / weights.sum().detach().clamp_min(torch.finfo(weights.dtype).tiny)
        below = t < self.schedule.t1
        restoring = modulation[below].pow(2).mean() if below.any() else loss.new_zeros(())
        return {"loss": loss + self.config.restoring_weight * restoring, "elbo_fit": loss.detach(),
                "g_squared": restoring.detach()}

    def check_sampling(self, sampling: SamplerOptions) -> None:
        timestep_grid(self.schedule.t1, sampling.steps, sampling.spacing)  # at most t1 + 1 steps

    def estimate(self, x_t: torch.Tensor, sources: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0_hat: the network predicts the clean target itself."""
        return self.net(x_t, sources, t)

    def generate(self, sources: torch.Tensor, sampling: SamplerOptions, generator: torch.Generator | None,
                 x_start: torch.Tensor | None = None, callback=None) -> TranslationOutput:
        """`x_start` (K B items: K samples per source, source-major as `repeat_interleave` gives) replaces
        the draw of x(t1); `callback` sees every sampler step (cdtsde.methods.cdtsde.sampler.SamplerStep)."""
        if x_start is not None and x_start.shape[0] != sources.shape[0]:
            if x_start.shape[0] % sources.shape[0]:
                raise ValueError(f"x_start has {x_start.shape[0]} items, not a multiple of the "
                                 f"{sources.shape[0]} sources")
            sources = sources.repeat_interleave(x_start.shape[0] // sources.shape[0], dim=0)
        result = sample(lambda x_t, _anchor, t: self.estimate(x_t, sources, t), self.in_target_space(sources),
                        self.field, generator=generator, x_start=x_start, callback=callback,
                        **dataclasses.asdict(sampling))
        return TranslationOutput(result.x0, {"clamped_pixels": result.clamped_pixels})

    @torch.no_grad()
    def translate(self, sources, sampling=None, generator=None, x_start=None, callback=None, **overrides):
        self.check_source(sources)
        check_finite_sources(sources)
        return self.generate(sources, self.sampling_options(sampling, **overrides), generator, x_start, callback)

    def preview_maps(self, sources: torch.Tensor) -> dict[str, torch.Tensor]:
        t1 = self.schedule.t1
        return self.field_maps(sources, (t1 // 4, t1 // 2, 3 * t1 // 4))

    @torch.no_grad()
    def field_maps(self, sources: torch.Tensor, steps) -> dict[str, torch.Tensor]:
        """Lambda_t of each source at each of `steps`, titled with t and eta_t (what Lambda = eta_t would be)."""
        anchor = self.in_target_space(sources)
        return {f"Lambda, t={t}, eta={float(self.schedule.eta_at(t, anchor)):.2f}": self.field(t, anchor)
                for t in steps}
