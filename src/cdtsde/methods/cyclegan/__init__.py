"""CycleGAN (Zhu et al., ICCV 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks"): two generators, G: source -> target and F: target -> source (ResNet generators,
cdtsde.networks.resnet_generator), each against a 70x70 PatchGAN that tells real images of its output
domain from generated ones (cdtsde.networks.patchgan, seeing one image, not a pair), trained on two
unaligned sets (`data_kind` "unpaired"):

    L(G, F, D_Y, D_X) = L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda L_cyc(G, F)                   (Eq. 3)
    L_cyc = E ||F(G(x)) - x||_1 + E ||G(F(y)) - y||_1, lambda = 10                          (Eq. 2, Section 4)
    L_GAN: least squares (LSGAN): G minimises E (D(G(x)) - 1)^2, D minimises
           E (D(y) - 1)^2 + E D(G(x))^2                                                   (Section 4)
    L_identity = E ||G(y) - y||_1 + E ||F(x) - x||_1, weighted 0.5 lambda           (Section 5.2; the
                                                                          weight: the authors' code)

x is a source image, y a target image; D_Y is `discriminator_target`, D_X `discriminator_source`.

The identity loss needs G to accept target images and F source images: it is used only when the two
domains have the same channel count (T2 -> T1, RGB -> RGB) and is left out otherwise (grey SAR -> RGB
optical), whatever `lambda_identity` says; `uses_identity` tells which, and the log then has no identity
columns.

Each step updates the generators first (G and F under one Adam, both discriminators frozen), then the
discriminators (D_Y and D_X under one Adam), the order of the authors' code. The fakes the generator phase
made (before its update) reach the discriminator phase through `shared`, detached, and through a history
pool per discriminator: "we update the discriminators using a history of generated images rather than the
ones produced by the latest generators. We keep an image buffer that stores the 50 previously created
images" (Section 4, after Shrivastava et al. 2017). `ImagePool` is the authors' buffer: until it is full it
stores every image and returns it; then, with probability 0.5, it returns a stored image (uniformly chosen)
and stores the new one in its place, else it returns the new one. Each discriminator's loss is halved, as
in the authors' code (and pix2pix, Section 3.3: it slows D down relative to G).

The pools are module buffers (the images and a fill count), so they are saved in the training state and
restored on resume: a resumed run repeats the uninterrupted one bit for bit. They are not in the published
weights (`model.safetensors`, `training_state_prefixes`), which would otherwise carry 50 images per domain
(about 39 MB per RGB domain at 256 px); a loaded model starts with empty pools. They need a fixed training
size: the data's `size` (or `tile`), on both sides. Under DDP every forward broadcasts rank 0's buffers, so each rank sees rank 0's history.

Training recipe (`train_defaults`): Adam, lr 2e-4 and batch size 1 (Section 4), betas (0.5, 0.999) (the
authors' code), no EMA (ema_decay 0), no gradient clipping, no warm-up. "We keep the same learning rate for
the first 100 epochs and linearly decay the rate to zero over the next 100 epochs": the method cannot know
`max_steps` here, so set `train.decay_steps` to half of `train.max_steps` in the run configuration for that
schedule (the default, 0, keeps the rate constant); the loop decays per step, not per epoch. Weights are
drawn from N(0, 0.02) as in the authors' code. The paper's random jitter (resize to 286 px, crop 256) is
not applied, and the loop's random flips are horizontal and vertical (the authors' code flips horizontally
only).

Translation is G(sources), one network evaluation, no options. Mask targets are refused: CycleGAN translates
between two image domains, and F would have to turn class maps back into images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...draws import Draws, item_generator
from ...networks.patchgan import PatchGANDiscriminator
from ...networks.resnet_generator import PAPER_FILTERS, ResnetGenerator, default_blocks
from ..base import DataInfo, Method, TranslationOutput, frozen
from ..pix2pix import ADAM_BETAS, GAN_TRAIN_DEFAULTS, init_weights

POOL_SIZE = 50  # Section 4
SWAP_PROBABILITY = 0.5  # the authors' ImagePool


@dataclass
class CycleGANConfig:
    generator_filters: int = PAPER_FILTERS  # c7s1-64: the first layer's filters (Appendix 7.2)
    blocks: int | None = None  # residual blocks; None: 9 at 256 px and above, 6 below (Appendix 7.2)
    discriminator_filters: int = 64
    discriminator_layers: int = 3  # stride-2 layers of the PatchGAN: 3 gives 70x70 patches (Section 4)
    lambda_cycle: float = 10.0  # lambda of Eq. 3 (Section 4), both directions
    lambda_identity: float = 0.5  # the identity loss's weight, times lambda_cycle (Section 5.2)
    pool_size: int = POOL_SIZE  # generated images kept per discriminator; 0: the latest fakes only

    def __post_init__(self):
        for name in ("lambda_cycle", "lambda_identity"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.pool_size < 0:
            raise ValueError(f"model.pool_size must be >= 0, got {self.pool_size}")
        if self.blocks is not None and self.blocks < 0:
            raise ValueError(f"model.blocks must be >= 0 or null, got {self.blocks}")

    @classmethod
    def cpu(cls, **overrides) -> CycleGANConfig:
        """16 filters in G, F and both discriminators (a quarter of the paper's): about 0.5M parameters per
        generator with 6 blocks and 0.18M per discriminator, for CPU runs at 32-64 px."""
        return cls(**{"generator_filters": 16, "discriminator_filters": 16, **overrides})


class ImagePool(nn.Module):
    """The history of generated images one discriminator learns from (Section 4; the authors' ImagePool).

    `query(images, generator)` goes through the batch in order: while fewer than `capacity` images are
    stored, an image is stored and returned as it is; once the pool is full, with probability 0.5 a stored
    image (uniformly chosen) is returned and the new one takes its place, else the new one is returned and
    the pool is unchanged. Every image draws one uniform number and one slot (from its own generator in
    training, cdtsde.draws), full pool or not, so the draws of a step do not depend on the pool's state;
    the decisions stay on the device (no host synchronisation). The stored images and the fill count are
    buffers: saved with the method's state and restored on resume."""

    def __init__(self, capacity: int, channels: int, size: int | None):
        super().__init__()
        if capacity < 0:
            raise ValueError(f"the pool capacity must be >= 0, got {capacity}")
        if capacity and size is None:
            raise ValueError("the history pool needs the training size to hold its images: set the data's "
                             "size (or tile), or model.pool_size: 0")
        self.capacity = capacity
        shape = (capacity, channels, size, size) if capacity else (0,)
        self.register_buffer("images", torch.zeros(shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, images: torch.Tensor, generator: Draws = None) -> torch.Tensor:
        """The images (B, C, H, W) a discriminator sees in place of `images`, the latest fakes (detached)."""
        if self.capacity == 0:
            return images.detach()
        if images.shape[1:] != self.images.shape[1:]:
            raise ValueError(f"the history pool holds images of shape {tuple(self.images.shape[1:])} (the data's "
                             f"channels and size), got {tuple(images.shape[1:])}: both sides of the data must "
                             f"have the training size")
        out = []
        for index, image in enumerate(images.detach()):
            own = item_generator(generator, index)
            draw_on = own.device if own is not None else images.device
            u = torch.rand((), generator=own, device=draw_on).to(images.device)
            chosen = torch.randint(self.capacity, (), generator=own, device=draw_on).to(images.device)
            full = self.count >= self.capacity
            swap = full & (u < SWAP_PROBABILITY)
            slot = torch.where(full, chosen, self.count.clamp(max=self.capacity - 1)).view(1)
            held = self.images.index_select(0, slot)[0]
            out.append(torch.where(swap, held.to(image.dtype), image))
            # stored while filling, or swapped in; otherwise the slot keeps what it held
            stored = torch.where(swap | ~full, image.to(self.images.dtype), held)
            self.images.index_copy_(0, slot, stored[None])
            self.count += (~full).long()
        return torch.stack(out)


class CycleGAN(Method):
    name = "cyclegan"
    description = "unpaired GAN: ResNet generators both ways, 70x70 PatchGANs, LSGAN + 10 x cycle L1 (Zhu et al. 2017)"
    data_kind = "unpaired"
    config_class = CycleGANConfig
    tiny_config = {"generator_filters": 4, "discriminator_filters": 4, "blocks": 1, "pool_size": 2,
                   "discriminator_layers": 2}
    train_defaults = GAN_TRAIN_DEFAULTS
    training_state_prefixes = ("pool_target.", "pool_source.")

    def __init__(self, config: CycleGANConfig, data: DataInfo):
        super().__init__(config, data)
        if data.source_channels is None:
            raise ValueError("cyclegan translates sources: the data must have source channels")
        if data.target_kind == "mask":
            raise ValueError("cyclegan translates between two image domains and cannot learn mask targets (F would "
                             "have to turn class maps back into images): use a paired method such as pix2pix")
        source, target, size = data.source_channels, data.target_channels, data.image_size
        blocks = default_blocks(size) if config.blocks is None else config.blocks
        filters = config.generator_filters
        self.generator = ResnetGenerator(source, target, blocks, filters)  # G: source -> target
        self.inverse = ResnetGenerator(target, source, blocks, filters)  # F: target -> source

        def patchgan(channels: int) -> PatchGANDiscriminator:
            return PatchGANDiscriminator(channels, config.discriminator_filters, config.discriminator_layers,
                                         "instance")

        self.discriminator_target = patchgan(target)  # D_Y: real target images vs G(x)
        self.discriminator_source = patchgan(source)  # D_X: real source images vs F(y)
        self.pool_target = ImagePool(config.pool_size, target, size)  # past G(x), for D_Y
        self.pool_source = ImagePool(config.pool_size, source, size)  # past F(y), for D_X
        if size is not None:
            ResnetGenerator.check_size(size, size)
            smallest = self.discriminator_target.smallest_input
            if size < smallest:
                raise ValueError(f"the PatchGAN with model.discriminator_layers = {config.discriminator_layers} "
                                 f"needs images of at least {smallest} px, the data are {size} px: use fewer layers")
        init_weights(self)

    @property
    def uses_identity(self) -> bool:
        """Whether the identity loss is used: it needs a positive weight and equal channel counts."""
        return self.config.lambda_identity > 0 and self.data.source_channels == self.data.target_channels

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """Adam over G and F, then Adam over both discriminators (the update order), at `train.lr` with
        betas (0.5, 0.999)."""
        def adam(*modules: nn.Module) -> torch.optim.Optimizer:
            parameters = [p for module in modules for p in module.parameters()]
            return torch.optim.Adam([{"params": parameters, "lr_scale": 1.0}], lr=train.lr, betas=ADAM_BETAS,
                                    weight_decay=train.weight_decay)

        return {"generators": adam(self.generator, self.inverse),
                "discriminators": adam(self.discriminator_target, self.discriminator_source)}

    @staticmethod
    def gan_loss(outputs: torch.Tensor, real: bool) -> torch.Tensor:
        """Least squares to the label 1 (real) or 0 (fake), averaged over the patches."""
        return F.mse_loss(outputs, torch.full_like(outputs, 1.0 if real else 0.0))

    def forward(self, batch: dict, phase: str, generator: Draws, shared: dict) -> dict:
        """The loss of one phase. "generators" makes the fakes G(x) and F(y) and leaves them in `shared` for
        "discriminators", which must come after it in the same step."""
        source, target = batch["source"], batch["target"]
        if phase == "generators":
            self.check_source(source)
            fake_target, fake_source = self.generator(source), self.inverse(target)
            shared["fake_target"], shared["fake_source"] = fake_target, fake_source
            # the discriminators are only critics here: their update stays the discriminator phase's alone
            with frozen(self.discriminator_target), frozen(self.discriminator_source):
                gan_g = self.gan_loss(self.discriminator_target(fake_target), True)
                gan_f = self.gan_loss(self.discriminator_source(fake_source), True)
            cycle_source = (self.inverse(fake_target) - source).abs().mean()  # ||F(G(x)) - x||_1
            cycle_target = (self.generator(fake_source) - target).abs().mean()  # ||G(F(y)) - y||_1
            lam = self.config.lambda_cycle
            loss = gan_g + gan_f + lam * (cycle_source + cycle_target)
            out = {"gan_g": gan_g.detach(), "gan_f": gan_f.detach(), "cycle_source": cycle_source.detach(),
                   "cycle_target": cycle_target.detach()}
            if self.uses_identity:
                identity_g = (self.generator(target) - target).abs().mean()  # ||G(y) - y||_1
                identity_f = (self.inverse(source) - source).abs().mean()  # ||F(x) - x||_1
                loss = loss + self.config.lambda_identity * lam * (identity_g + identity_f)
                out.update(identity_g=identity_g.detach(), identity_f=identity_f.detach())
            return {"loss": loss, **out}
        if phase == "discriminators":
            fake_target = self.pool_target.query(shared["fake_target"], generator)
            fake_source = self.pool_source.query(shared["fake_source"], generator)
            out, loss = {}, 0.0
            for domain, discriminator, real, fake in (("target", self.discriminator_target, target, fake_target),
                                                      ("source", self.discriminator_source, source, fake_source)):
                real_out, fake_out = discriminator(real), discriminator(fake)
                loss = loss + 0.5 * (self.gan_loss(real_out, True) + self.gan_loss(fake_out, False))
                out[f"d_{domain}_real"] = real_out.mean().detach()
                out[f"d_{domain}_fake"] = fake_out.mean().detach()
            return {"loss": loss, **out}
        raise ValueError(f"cyclegan has the phases generators and discriminators, not {phase!r}")

    def generate(self, sources: torch.Tensor, sampling, generator: torch.Generator | None) -> TranslationOutput:
        """G(sources)."""
        return TranslationOutput(self.generator(sources))
