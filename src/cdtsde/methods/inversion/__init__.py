"""Reduced GAN inversion (zero-shot, target-only): a stand-in for StyleGAN2-ADA inversion (docs/zero-shot.md,
section "Reduced GAN inversion").

StyleGAN2-ADA (Karras et al., NeurIPS 2020) cannot be downloaded here (no pretrained weights can be
fetched) and cannot be trained on two CPU cores, so this method is a named, reduced substitute: a small
style-based generator (`cdtsde.networks.style_generator`: mapping MLP, learned 4 x 4 constant, modulated /
demodulated convolutions, one w per layer) trained on target images alone against a PatchGAN discriminator
(`cdtsde.networks.patchgan`, seeing one image), with StyleGAN's losses:

    D: softplus(-D(y)) + softplus(D(G(z))) + gamma / 2 ||grad_y D(y)||^2       (non-saturating logistic, R1)
    G: softplus(-D(G(z)))

D's patch logits are averaged per image; R1 takes the gradient of that per-image mean with respect to the
real image, at every step (no lazy regularisation). Each step updates D first, on a fake G makes in that
phase (detached), then G against the updated D, reusing the same fake; the generator phase also moves
`w_avg` (the EMA of mapped w) towards the batch's w.

Translation inverts the frozen generator: W+ (one w per layer) starts at w_avg and Adam (`sampling.lr`)
minimises, for `sampling.steps` iterations,

    L(W+) = -S(G(W+), c) + prior_weight * mean ||W+ - w_avg||^2

where c is the source in the target's channel space and S a modality-invariant similarity with the
project's one estimator (`cdtsde.mutual_information`, clean mode, Parzen windows `model.similarity`): "nmi", the global
normalised mutual information of the two images (`patch_nmi` over all pixels, per channel, averaged), or
"lmi", the mean local mutual information map (`local_mutual_information(c, G(W+))`). Both are invariant to
bijective remaps of intensities that permute bins (e.g. contrast inversion), which is what makes the
inversion cross-modal. The result is the generated image of the evaluated iterate with the lowest loss;
Adam is element-wise, so every image of a batch is inverted independently. Each step is one forward and
one backward pass of G: `network_evaluations` = steps. The generator's weights are frozen during the
inversion (requires_grad restored afterwards) and the gradient is enabled inside it (`translate` itself runs
under no_grad).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field as option

import torch
import torch.nn.functional as F

from ... import draws
from ...mutual_information import LMIOptions, local_mutual_information, patch_nmi
from ...networks.patchgan import NORMS, PatchGANDiscriminator
from ...networks.style_generator import StyleGenerator, check_size
from ...settings import check_count, check_unit_interval
from ..base import DataInfo, Method, TranslationOutput, frozen

SIMILARITIES = ("nmi", "lmi")
ADAM_BETAS = (0.0, 0.99)  # StyleGAN2's training betas


@dataclass
class InversionConfig:
    z_dim: int = 64
    w_dim: int = 64
    mapping_layers: int = 4
    channels: int = 64  # every synthesis layer's width
    w_avg_beta: float = 0.995
    discriminator_filters: int = 64
    discriminator_layers: int = 3  # stride-2 layers of the PatchGAN (needs 3 * 2**layers px)
    discriminator_norm: str = "instance"
    r1_gamma: float = 0.01  # the R1 weight gamma (StyleGAN2-ADA's CIFAR-10 config; its auto config: 2e-4 res^2 / batch)
    # the similarity's estimator: clean mode (differentiable; grey levels never truncated)
    similarity: LMIOptions = dataclasses.field(default_factory=LMIOptions)

    def __post_init__(self):
        for name in ("z_dim", "w_dim", "mapping_layers", "channels", "discriminator_filters", "discriminator_layers"):
            check_count(f"model.{name}", getattr(self, name))
        check_unit_interval("model.w_avg_beta", self.w_avg_beta)
        if isinstance(self.similarity, dict):
            self.similarity = LMIOptions(**self.similarity)
        if not isinstance(self.similarity, LMIOptions):
            raise ValueError(f"similarity must be LMI options (cdtsde.mutual_information.LMIOptions), got {self.similarity!r}")
        resolved = self.similarity.resolved()
        if resolved.mode != "clean" or resolved.sigma == 0:
            raise ValueError("the inversion needs a differentiable similarity: similarity.mode 'clean' with "
                             "sigma > 0")
        if self.discriminator_norm not in NORMS:
            raise ValueError(f"discriminator_norm must be one of {', '.join(NORMS)}, got {self.discriminator_norm!r}")
        if self.r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {self.r1_gamma}")


@dataclass
class InversionSampling:
    steps: int = option(default=100, metadata={"help": "inversion iterations (one forward + backward each)"})
    lr: float = option(default=0.05, metadata={"help": "Adam's learning rate on the W+ code"})
    similarity: str = option(default="nmi", metadata={
        "help": "the similarity maximised: global normalised MI or local MI", "choices": SIMILARITIES})
    prior_weight: float = option(default=0.01, metadata={"help": "weight of mean ||W+ - w_avg||^2"})

    def __post_init__(self):
        check_count("steps", self.steps)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {self.similarity!r}")
        if not self.prior_weight >= 0:
            raise ValueError(f"prior_weight must be >= 0, got {self.prior_weight}")


@dataclass
class InversionResult:
    """What `invert` found: the W+ codes and images of the best iterates, and the batch's summed loss at
    every iteration."""

    ws: torch.Tensor
    images: torch.Tensor
    similarity: torch.Tensor  # (B,) S of the returned images
    initial_similarity: torch.Tensor  # (B,) S of G(w_avg)
    losses: list[float]


class GANInversion(Method):
    name = "inversion"
    description = ("reduced GAN inversion (stands in for StyleGAN2-ADA): a small style-based GAN on target images, "
                   "W+ optimised for NMI/LMI with the source")
    data_kind = "target-only"
    config_class = InversionConfig
    tiny_config = {"z_dim": 8, "w_dim": 8, "mapping_layers": 1, "channels": 8, "discriminator_filters": 4,
                   "discriminator_layers": 2}
    sampling_class = InversionSampling
    tiny_sampling = ({"steps": 2}, {"steps": 2, "similarity": "lmi"})
    diagnostics_help = {"initial_similarity": "similarity of G(w_avg) with the source, summed over images",
                        "similarity": "similarity of the returned image with the source, summed over images"}
    train_defaults = {"lr": 2.5e-3, "warmup_steps": 1, "ema_decay": 0.0, "grad_clip": 0.0}

    def __init__(self, config: InversionConfig, data: DataInfo):
        super().__init__(config, data)
        if data.image_size is None:
            raise ValueError("the inversion's generator needs the data's image size (a power of two)")
        check_size(data.image_size)
        self.generator = StyleGenerator(data.target_channels, data.image_size, config.z_dim, config.w_dim,
                                        config.mapping_layers, config.channels, config.w_avg_beta)
        self.discriminator = PatchGANDiscriminator(data.target_channels, config.discriminator_filters,
                                                   config.discriminator_layers, config.discriminator_norm)
        if data.image_size < self.discriminator.smallest_input:
            raise ValueError(f"the PatchGAN with discriminator_layers = {config.discriminator_layers} needs images "
                             f"of at least {self.discriminator.smallest_input} px, the data are {data.image_size} px")

    # --- training -------------------------------------------------------------------------------------
    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """Adam for D, then Adam for G (the update order), betas (0, 0.99) as StyleGAN2."""
        def adam(module):
            return torch.optim.Adam([{"params": list(module.parameters()), "lr_scale": 1.0}], lr=train.lr,
                                    betas=ADAM_BETAS, weight_decay=train.weight_decay)

        return {"discriminator": adam(self.discriminator), "generator": adam(self.generator)}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """D's verdict per image: the mean of its patch logits, (B,)."""
        return self.discriminator(images).flatten(1).mean(1)

    def forward(self, batch: dict, phase: str, generator: draws.Draws, shared: dict) -> dict:
        real = batch["target"]
        if phase == "discriminator":
            z = draws.normal((real.shape[0], self.config.z_dim), generator, device=real.device,
                            dtype=real.dtype)
            ws = shared["ws"] = self.generator.map(z)
            fake = shared["fake"] = self.generator(ws)
            real = real.detach().requires_grad_(self.config.r1_gamma > 0)
            real_logits = self.logits(real)
            fake_logits = self.logits(fake.detach())
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
            out = {"d_real": torch.sigmoid(real_logits).mean().detach(),
                   "d_fake": torch.sigmoid(fake_logits).mean().detach()}
            if self.config.r1_gamma > 0:
                (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1 = gradient.pow(2).flatten(1).sum(1).mean()
                loss = loss + 0.5 * self.config.r1_gamma * r1
                out["r1"] = r1.detach()
            return {"loss": loss, **out}
        if phase == "generator":
            with frozen(self.discriminator):
                logits = self.logits(shared["fake"])
            self.generator.update_w_avg(shared["ws"])
            loss = F.softplus(-logits).mean()
            return {"loss": loss, "g_gan": loss.detach()}
        raise ValueError(f"inversion has the phases discriminator and generator, not {phase!r}")

    # --- translation ----------------------------------------------------------------------------------
    def similarity(self, images: torch.Tensor, reference: torch.Tensor, kind: str) -> torch.Tensor:
        """S(images, reference) per image, (B,): global NMI per channel (all pixels), or the mean LMI map."""
        options = self.config.similarity
        if kind == "nmi":
            return patch_nmi(images.flatten(2), reference.flatten(2), options).mean(1)
        return local_mutual_information(reference, images, options).similarity.flatten(1).mean(1)

    def invert(self, reference: torch.Tensor, sampling: InversionSampling) -> InversionResult:
        """Optimise W+ from w_avg so that G(W+) matches `reference` (B, C_target, H, W) under the similarity."""
        g = self.generator
        w_avg = g.w_avg.to(reference.dtype)
        with torch.enable_grad(), frozen(g):
            ws = g.mean_ws(reference.shape[0]).to(reference.dtype).requires_grad_(True)
            optimizer = torch.optim.Adam([ws], lr=sampling.lr)
            best_loss = torch.full((reference.shape[0],), float("inf"), device=reference.device, dtype=reference.dtype)
            best_ws, best_images = ws.detach().clone(), None
            best_similarity = torch.zeros_like(best_loss)
            losses, initial = [], None
            for _ in range(sampling.steps):
                images = g(ws)
                similarity = self.similarity(images, reference, sampling.similarity)
                initial = similarity.detach() if initial is None else initial
                loss = -similarity + sampling.prior_weight * (ws - w_avg).pow(2).flatten(1).mean(1)
                with torch.no_grad():
                    better = loss < best_loss
                    best_loss = torch.where(better, loss, best_loss)
                    best_ws[better] = ws[better]
                    best_images = images.detach().clone() if best_images is None else torch.where(
                        better[:, None, None, None], images, best_images)
                    best_similarity = torch.where(better, similarity, best_similarity)
                losses.append(float(loss.detach().sum()))
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                optimizer.step()
        return InversionResult(best_ws, best_images, best_similarity.detach(), initial, losses)

    def generate(self, sources: torch.Tensor, sampling: InversionSampling,
                 generator: torch.Generator | None) -> TranslationOutput:
        reference = self.in_target_space(sources)
        if reference.shape[-2:] != (self.generator.size, self.generator.size):
            raise ValueError(f"the generator makes {self.generator.size} px images; the sources are "
                             f"{tuple(reference.shape[-2:])} (translate resizes them to the training size)")
        result = self.invert(reference, sampling)
        return TranslationOutput(result.images, {"initial_similarity": float(result.initial_similarity.sum()),
                                                 "similarity": float(result.similarity.sum())})
