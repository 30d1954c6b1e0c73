"""Pix2Pix (Isola et al., CVPR 2017, "Image-to-Image Translation with Conditional Adversarial Networks"):
a U-Net generator G (cdtsde.networks.unet_generator) trained against a 70x70 PatchGAN discriminator D
(cdtsde.networks.patchgan) that sees the source beside the real or generated target, plus an L1 loss:

    G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G)                                   (Eq. 4)
    L_cGAN = E[log D(x, y)] + E[log(1 - D(x, G(x)))]                                     (Eq. 1)
    L_L1 = E ||y - G(x)||_1, lambda = 100                                                (Eq. 3, Section 4.2)

Each step updates D first, on real pairs and on a fake G makes in that phase (detached), then G against
the updated D, reusing the same fake (the order of the authors' code). G's output maps the source
channels straight to the target channels; mask targets (one +1/-1 channel per class) come out as tanh
maps decoded by argmax like every method's.

Training recipe (`train_defaults`): Adam, lr 2e-4, betas (0.5, 0.999) (Section 3.3), batch size 1 (the
paper's sizes are 1 to 10 by task), no EMA (ema_decay 0: the sampling weights are the trained ones), no
gradient clipping. The authors keep the rate constant for the first half of training and decay it
linearly to 0 over the second; the method cannot know `max_steps` here, so set `train.decay_steps` to half
of `train.max_steps` in the run configuration for that schedule (the default, 0, keeps the rate constant).
The paper's random jitter (resize to 286 px, crop 256, Appendix 6.2) is not applied: the training loop's
random flips are the augmentation.

Translation runs G in eval mode: BatchNorm uses its running statistics and dropout is off, unless the
`dropout` sampling option keeps dropout on as the paper does at test time (Section 3.3; dropout is its only
noise z, Section 3.1). The paper also normalises test batches by their own statistics, which is what
`norm: instance` does at any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as option

import torch
import torch.nn.functional as F
from torch import nn

from ...draws import Draws, ItemGenerators
from ...networks.patchgan import NORMS, PatchGANDiscriminator
from ...networks.unet_generator import UNetGenerator
from ...settings import check_unit_interval
from ..base import DataInfo, Method, TranslationOutput, frozen

GAN_MODES = ("vanilla", "lsgan")
ADAM_BETAS = (0.5, 0.999)  # Section 3.3
INIT_STD = 0.02  # "initialized from a Gaussian distribution with mean 0 and standard deviation 0.02" (6.2)


@dataclass
class Pix2PixConfig:
    generator_filters: int = 64  # the encoder's first layer; doubles per layer up to 8x (Appendix 6.1.1)
    depth: int | None = None  # U-Net encoder layers; None: log2 of the data's image size (a 1x1 bottleneck)
    dropout: float = 0.5  # in the first `dropout_blocks` decoder blocks (Appendix 6.1.1)
    dropout_blocks: int = 3
    norm: str = "batch"  # "batch" (the paper) or "instance", in G and D
    discriminator_filters: int = 64
    discriminator_layers: int = 3  # stride-2 layers of the PatchGAN: 3 gives 70x70 patches (Section 4.4)
    lambda_l1: float = 100.0  # the weight of L_L1 in Eq. 4 (Section 4.2)
    gan_mode: str = "vanilla"  # "vanilla": Eq. 1 as BCE with logits; "lsgan": least squares to 1 / 0

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"model.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.gan_mode not in GAN_MODES:
            raise ValueError(f"model.gan_mode must be one of {', '.join(GAN_MODES)}, got {self.gan_mode!r}")
        if self.lambda_l1 < 0:
            raise ValueError(f"model.lambda_l1 must be >= 0, got {self.lambda_l1}")
        check_unit_interval("model.dropout", self.dropout)
        if self.dropout_blocks < 0:
            raise ValueError(f"model.dropout_blocks must be >= 0, got {self.dropout_blocks}")


@dataclass
class Pix2PixSampling:
    """Pix2Pix translation options."""

    dropout: bool = option(default=False, metadata={
        "help": "keep the generator's dropout on, as the paper does at test time (results vary with --seed)"})


def generator_depth(config: Pix2PixConfig, data: DataInfo) -> int:
    """The configured depth, else log2 of the training size (which must then be a power of two)."""
    if config.depth is not None:
        return config.depth
    size = data.image_size
    if size is None or size < 2 or size & (size - 1):
        raise ValueError(f"pix2pix takes the U-Net depth from the image size (log2 of it) when model.depth "
                         f"is null, which needs a power-of-two size; got {size}: set the data's size or "
                         f"model.depth")
    return size.bit_length() - 1


def init_weights(module: nn.Module) -> None:
    """Convolutions ~ N(0, 0.02) (Appendix 6.2); norm scales ~ N(1, 0.02) as in DCGAN and the authors'
    code; biases 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, INIT_STD)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.InstanceNorm2d)) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, INIT_STD)
            nn.init.zeros_(layer.bias)


# the recipe Pix2Pix and CycleGAN share (their papers): Adam 2e-4 on single images, no warm-up, EMA or clipping
GAN_TRAIN_DEFAULTS = {"lr": 2e-4, "batch_size": 1, "warmup_steps": 1, "ema_decay": 0.0, "grad_clip": 0.0}


class Pix2Pix(Method):
    name = "pix2pix"
    description = "conditional GAN: U-Net generator, 70x70 PatchGAN, L1 + GAN loss (Isola et al. 2017)"
    data_kind = "paired"
    config_class = Pix2PixConfig
    tiny_config = {"generator_filters": 4, "discriminator_filters": 4, "discriminator_layers": 2}
    sampling_class = Pix2PixSampling
    tiny_sampling = ({}, {"dropout": True})
    train_defaults = GAN_TRAIN_DEFAULTS

    def __init__(self, config: Pix2PixConfig, data: DataInfo):
        super().__init__(config, data)
        if data.source_channels is None:
            raise ValueError("pix2pix translates sources: the data must have source channels")
        self.generator = UNetGenerator(data.source_channels, data.target_channels,
                                       generator_depth(config, data), config.generator_filters, config.norm,
                                       config.dropout, config.dropout_blocks)
        self.discriminator = PatchGANDiscriminator(data.source_channels + data.target_channels,
                                                   config.discriminator_filters, config.discriminator_layers,
                                                   config.norm)
        size, smallest = data.image_size, self.discriminator.smallest_input
        if size is not None:
            self.generator.check_size(size, size)
            if size < smallest:
                layers = config.discriminator_layers
                raise ValueError(f"the PatchGAN with model.discriminator_layers = {layers} needs images of "
                                 f"at least {smallest} px, the data are {size} px: use fewer layers")
        init_weights(self)

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """Adam for D, then Adam for G (the update order), both at `train.lr` with betas (0.5, 0.999)."""
        def adam(module: nn.Module) -> torch.optim.Optimizer:
            return torch.optim.Adam([{"params": list(module.parameters()), "lr_scale": 1.0}], lr=train.lr,
                                    betas=ADAM_BETAS, weight_decay=train.weight_decay)

        return {"discriminator": adam(self.discriminator), "generator": adam(self.generator)}

    def gan_loss(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """The GAN loss of D's patch outputs against the label real (1) or fake (0), averaged over patches."""
        labels = torch.full_like(logits, 1.0 if real else 0.0)
        if self.config.gan_mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, labels)
        return F.mse_loss(logits, labels)

    def realness(self, logits: torch.Tensor) -> torch.Tensor:
        """D's mean verdict, 1 = real, 0 = fake: the probability for the vanilla GAN, the raw output for
        LSGAN."""
        return (torch.sigmoid(logits) if self.config.gan_mode == "vanilla" else logits).mean().detach()

    def forward(self, batch: dict, phase: str, generator: Draws, shared: dict) -> dict:
        """The loss of one phase. "discriminator" also makes the fake G(source) and leaves it in `shared`
        for "generator", which must come after it in the same step."""
        source, target = batch["source"], batch["target"]
        if phase == "discriminator":
            self.check_source(source)
            fake = shared["fake"] = self.generator(source)
            real_logits = self.discriminator(torch.cat([source, target], dim=1))
            # detached: D's loss must not reach G, and G's graph stays intact for the generator phase
            fake_logits = self.discriminator(torch.cat([source, fake.detach()], dim=1))
            # "we divide the objective by 2 while optimizing D, which slows down the rate at which D learns
            # relative to G" (Section 3.3)
            loss = 0.5 * (self.gan_loss(real_logits, True) + self.gan_loss(fake_logits, False))
            return {"loss": loss, "d_real": self.realness(real_logits), "d_fake": self.realness(fake_logits)}
        if phase == "generator":
            fake = shared["fake"]
            # D is only G's critic here: without gradients its update stays the discriminator phase's alone
            with frozen(self.discriminator):
                logits = self.discriminator(torch.cat([source, fake], dim=1))
            # non-saturating: G maximises log D(x, G(x)) instead of minimising log(1 - D(x, G(x))) (3.3)
            adversarial = self.gan_loss(logits, True)
            l1 = (fake - target).abs().mean()  # Eq. 3
            return {"loss": adversarial + self.config.lambda_l1 * l1, "g_gan": adversarial.detach(),
                    "l1": l1.detach()}
        raise ValueError(f"pix2pix has the phases discriminator and generator, not {phase!r}")

    def generate(self, sources: torch.Tensor, sampling: Pix2PixSampling,
                 generator: torch.Generator | None) -> TranslationOutput:
        """G(sources) in eval mode (BatchNorm's running statistics, no dropout), with dropout kept on when
        `sampling.dropout`; G's mode is restored afterwards."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            if not sampling.dropout:
                return TranslationOutput(self.generator(sources))
            for layer in self.generator.modules():
                if isinstance(layer, nn.Dropout):
                    layer.train()
            return TranslationOutput(self.with_dropout(sources, generator))
        finally:
            self.generator.train(was_training)

    def with_dropout(self, sources: torch.Tensor, generator: Draws) -> torch.Tensor:
        """G(sources) with its dropout masks drawn from `generator`: nn.Dropout draws from the global random
        state, so that state is seeded from `generator` inside a fork and restored afterwards."""
        if generator is None:
            return self.generator(sources)
        if isinstance(generator, ItemGenerators):  # one generator per item (tiled windows): each its own masks
            return torch.cat([self.with_dropout(sources[i:i + 1], generator.item(i)) for i in range(len(generator))])
        seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
        device = sources.device
        # the CPU state is always forked; an accelerator's only when named ("cuda" is fork_rng's default type)
        with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [],
                                   device_type=device.type if device.type != "cpu" else "cuda"):
            torch.manual_seed(seed)
            return self.generator(sources)
