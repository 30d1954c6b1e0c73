"""The small protocol every translation method implements (docs/methods.md).

A method is an `nn.Module` subclass of `Method` that declares, as class attributes, its registry `name`,
a one-line `description`, the `data_kind` it trains on ("paired", "unpaired": two unaligned sets, or
"target-only": target images alone), its `config_class` (a dataclass of architecture and objective
options, the run configuration's `model:` section) and its `sampling_class` (a dataclass of translation
options with their defaults: the `sampling:` section and the `cdtsde translate` flags), and optionally
`train_defaults`, its reference `train:` settings (the run configuration's own take precedence). It implements

* `optimizers(train)`: the optimisers updated every step, in order (one per phase: a GAN has
  "discriminator" then "generator"); each parameter group carries an "lr_scale";
* `forward(batch, phase, generator, shared)`: the training loss of one phase on one batch,
  {"loss": scalar, ...scalars to log}; `shared` lives for one step (item access and `in`, as a dict;
  the loop's `StepShared`), so that later phases can reuse what earlier ones computed; `generator` gives every item its own random stream
  (the training loop passes `cdtsde.draws.ItemGenerators`): draw through `cdtsde.draws`, so that a run
  does not depend on how many processes share its batch;
* `generate(sources, sampling, generator)`: translated images in [-1, 1];
* a diffusion method: `estimate(x_t, condition, t)`, the clean-target estimate every sampling step uses.

The training loop (`cdtsde.training`), checkpoints, evaluation and the CLI know nothing else about a
method. Images are (B, C, H, W) in [-1, 1]; mask targets have one channel per class, +1 for the pixel's
class and -1 elsewhere, and are decoded by argmax.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..draws import Draws
from ..errors import CdtsdeError
from ..intensity import NIFTI_PERCENTILE
from ..settings import from_plain

DATA_KINDS = ("paired", "unpaired", "target-only")
TARGET_KINDS = ("image", "mask")


@dataclass
class DataInfo:
    """What a method is told about its data, recorded in every checkpoint so that `translate` prepares
    inputs exactly as training did."""

    source_channels: int | None  # None for a target-only method trained without sources
    target_channels: int
    target_kind: str = "image"  # "mask": one channel per class, decoded by argmax
    image_size: int | None = None  # the training size; `translate` resizes inputs to it
    nifti_percentile: float = NIFTI_PERCENTILE  # the MRI normalisation training used (cdtsde.intensity)
    # how training read its input files (cdtsde.data.readers `FileReading.record()`), replayed by `translate`;
    # None in checkpoints written before it was recorded (then: NIfTI by nifti_percentile, else the dtype).
    # Plain data here (methods know nothing of readers); checkpoints check it when written and loaded
    source_reading: dict | None = None
    # how training read its target images (the same records), replayed by `evaluate` on target files so that
    # they are scored in the scale the model learnt (raw Sentinel-2 reflectance as training scaled it); None
    # for mask targets and in checkpoints written before it was recorded (then `evaluate` guesses, saying so)
    target_reading: dict | None = None
    # the axis along which training cut NIfTI volumes into slices; `translate` cuts and reassembles along it
    slice_axis: int = 2
    # "resized": training images were scaled to image_size, and `translate` scales inputs to it and back;
    # "native": training saw windows at the files' own scale (`resize: crop`, scene tiles), and `translate`
    # keeps each input's size (the networks are fully convolutional)
    training_scale: str = "resized"
    # the name of each target band (the target files' GeoTIFF band descriptions, e.g. Sentinel-2 "B4", "B3",
    # "B2"), which `translate` gives the bands of a GeoTIFF output; None where the targets name no bands and
    # in checkpoints written before they were recorded (outputs then name no bands)
    target_band_names: tuple[str, ...] | None = None
    # k: each source is a NIfTI slice with its k neighbouring slices on each side, (2k + 1) x the modality's
    # channels, slice-major with the slice itself in the middle (cdtsde.data.nifti.with_context); `translate`
    # builds the same from a volume. Every channel conditions the network; the slice itself alone is the
    # source a path starts from or mixes with (`Method.centre_slice`). 0: the slice alone
    context_slices: int = 0
    # how NIfTI volumes were oriented before slicing (cdtsde.imagefiles.NIFTI_ORIENTATIONS): "ras", the closest
    # canonical RAS orientation the data readers use; "axes", axes reordered in their stored directions, what
    # checkpoints written before RAS reading saw (loaded as such: a BraTS volume, stored LPS, then has its
    # slices turned 180 degrees), so `translate` replays the orientation a model was trained on
    nifti_orientation: str = "ras"

    def __post_init__(self):
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {self.target_kind!r}")
        if self.slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")
        if self.training_scale not in ("resized", "native"):
            raise ValueError(f"training_scale must be 'resized' or 'native', got {self.training_scale!r}")
        if self.target_channels < 1 or (self.source_channels is not None and self.source_channels < 1):
            raise ValueError("source_channels and target_channels must be >= 1")
        if self.target_band_names is not None and len(self.target_band_names) != self.target_channels:
            raise ValueError(f"target_band_names names {len(self.target_band_names)} band(s) of a target of "
                             f"{self.target_channels} channel(s)")
        if self.nifti_orientation not in ("ras", "axes"):
            raise ValueError(f"nifti_orientation must be 'ras' or 'axes', got {self.nifti_orientation!r}")
        if self.context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {self.context_slices!r}")
        if self.context_slices and self.source_channels is not None and self.source_channels % self.slices_per_source:
            raise ValueError(f"context_slices {self.context_slices} needs sources of {self.slices_per_source} slices "
                             f"x the modality's channels, got {self.source_channels} source channel(s)")

    @property
    def slices_per_source(self) -> int:
        """The slices a source holds: itself and its `context_slices` neighbours on each side."""
        return 2 * self.context_slices + 1


@dataclass
class NoSamplingOptions:
    """For methods whose translation has no options."""


@dataclass
class TranslationOutput:
    """Translated images (B, C_target, H, W) in [-1, 1] and the method's diagnostics, counts that add up
    over batches (their meaning is in the method's `diagnostics_help`)."""

    images: torch.Tensor
    diagnostics: dict[str, float] = dataclasses.field(default_factory=dict)


@contextmanager
def frozen(module: nn.Module):
    """`module`'s parameters enter the graph built inside as constants: a backward through that graph
    computes no gradient for them and leaves their `.grad` as it was."""
    flags = [parameter.requires_grad for parameter in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


class Method(nn.Module):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    data_kind: ClassVar[str] = "paired"
    config_class: ClassVar[type]
    sampling_class: ClassVar[type] = NoSamplingOptions
    diagnostics_help: ClassVar[dict[str, str]] = {}
    # the `model:` options of the smallest network the method builds: what the conformance tests and the
    # suite's quick scale train (a method with a conditional UNet: {"unet": cdtsde.networks.conditional_unet.TINY_UNET})
    tiny_config: ClassVar[dict] = {}
    # sampling overrides of few network evaluations that between them cover the method's translation
    # (deterministic and stochastic, one step and several): what the conformance tests translate with;
    # ({},): the defaults
    tiny_sampling: ClassVar[tuple[dict, ...]] = ({},)
    # the method's reference training settings (cdtsde.training.TrainConfig options), under the run's own
    train_defaults: ClassVar[dict] = {}
    # methods whose checkpoints this one runs unchanged (same configuration class, same weights by name):
    # sdedit runs a prior's; `from_method` and `load_pretrained(..., method=)` do the conversion
    runs_checkpoints_of: ClassVar[tuple[str, ...]] = ()
    # state-dict key prefixes of buffers that only training needs (CycleGAN's history pools): kept in the
    # training state for exact resume, left out of the published weights (`inference_state_dict`)
    training_state_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, data: DataInfo):
        super().__init__()
        if data.context_slices and self.data_kind != "paired":
            raise ValueError(f"context_slices is for paired methods (the neighbouring slices condition the "
                             f"translation of a source slice); the {self.name} method is {self.data_kind}")
        self.config = config
        self.data = data
        self.sampling = self.sampling_class()  # the defaults a checkpoint records

    @classmethod
    def inference_state_dict(cls, state_dict: dict) -> dict:
        """`state_dict` without the entries only training needs (`training_state_prefixes`)."""
        return {key: value for key, value in state_dict.items() if not key.startswith(cls.training_state_prefixes)}

    @classmethod
    def from_method(cls, other: Method) -> Method:
        """This method with `other`'s configuration, data record and weights (copied) and this method's
        default sampling options, for an `other` named in `runs_checkpoints_of` (or of this class)."""
        if not isinstance(other, Method) or (other.name != cls.name and other.name not in cls.runs_checkpoints_of):
            runs = ", ".join((cls.name, *cls.runs_checkpoints_of))
            raise CdtsdeError(f"the {cls.name} method runs checkpoints of: {runs}; "
                              f"got {getattr(other, 'name', type(other).__name__)!r}")
        method = cls(other.config, other.data)
        method.load_state_dict(other.state_dict())
        return method.to(next(other.parameters(), torch.empty(0)).device).train(other.training)

    # --- training -------------------------------------------------------------------------------------
    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """One AdamW over every parameter at `train.lr` (none for a method without parameters)."""
        parameters = [p for p in self.parameters() if p.requires_grad]
        if not parameters:
            return {}
        return {"model": torch.optim.AdamW([{"params": parameters, "lr_scale": 1.0}], lr=train.lr,
                                           weight_decay=train.weight_decay)}

    def forward(self, batch: dict, phase: str, generator: Draws, shared: dict) -> dict:
        raise NotImplementedError(f"the {self.name} method has nothing to train")

    # --- translation ----------------------------------------------------------------------------------
    def sampling_options(self, sampling=None, **overrides):
        """The method's sampling options: `sampling` (default: the checkpoint's) with `overrides` applied;
        an option the method does not have is an error naming it."""
        base = self.sampling if sampling is None else sampling
        known = {f.name for f in dataclasses.fields(self.sampling_class)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            have = ", ".join(sorted(known)) or "none"
            raise CdtsdeError(f"the {self.name} method has no sampling option(s) {', '.join(unknown)} (it has: {have})")
        try:
            options = from_plain(self.sampling_class, {**dataclasses.asdict(base), **overrides}, "sampling")
        except ValueError as exc:
            raise CdtsdeError(str(exc)) from exc
        try:
            self.check_sampling(options)
        except ValueError as exc:
            raise CdtsdeError(f"sampling.{exc}") from exc
        return options

    def check_sampling(self, sampling) -> None:
        """Raise ValueError if these sampling options cannot run with this model's configuration (e.g. more
        steps than its schedule has); called wherever options are set, so that they fail before any work."""

    @torch.no_grad()
    def translate(self, sources: torch.Tensor, sampling=None, generator: torch.Generator | None = None,
                  **overrides) -> TranslationOutput:
        """Translate a batch of sources (B, C_src, H, W) in [-1, 1] to the target modality; sources holding NaN
        or infinite values are refused (they would come out as a NaN translation), as the CLI refuses files."""
        self.check_source(sources)
        check_finite_sources(sources)
        return self.generate(sources, self.sampling_options(sampling, **overrides), generator)

    def generate(self, sources: torch.Tensor, sampling, generator: torch.Generator | None) -> TranslationOutput:
        raise NotImplementedError

    def estimate(self, x_t: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A diffusion method's estimate of the clean target x0 from the iterate x_t at time t (a (B,) tensor)
        given its condition (the source as it is, or in the target's channel space: the method's choice).
        Every step of a diffusion method's translation takes its clean-target estimate from here and the
        last step returns it, so that with the truth in its place (an oracle) translation returns the
        target (tests/methods/test_conformance.py). Methods that sample no diffusion path do not define it."""
        raise NotImplementedError(f"the {self.name} method samples no diffusion path")

    @classmethod
    def is_diffusion_sampler(cls) -> bool:
        """Whether translation samples a diffusion path through `estimate` (the class defines it)."""
        return cls.estimate is not Method.estimate

    def network_evaluations(self, sampling=None) -> int:
        """Network evaluations (NFE) of one translation with these options (default: the checkpoint's):
        one per step for a sampler, one for a single-pass method."""
        return int(getattr(self.sampling if sampling is None else sampling, "steps", 1))

    def preview_maps(self, sources: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra (B, C, H, W) maps in [0, 1] drawn beside translations in previews (e.g. a mixing field)."""
        return {}

    # --- shared helpers -------------------------------------------------------------------------------
    def check_source(self, sources: torch.Tensor) -> None:
        """The sources' shape (every translation and training step); translations also `check_finite_sources`."""
        channels = self.data.source_channels
        if sources.ndim != 4 or (channels is not None and sources.shape[1] != channels):
            raise CdtsdeError(
                f"the model expects sources of shape (B, {channels or 'C'}, H, W), got {tuple(sources.shape)}")

    def centre_slice(self, sources: torch.Tensor) -> torch.Tensor:
        """The source slice itself, without the neighbouring slices it carries as context
        (`DataInfo.context_slices`: the middle of its slice-major channels); without context, the sources."""
        if not self.data.context_slices:
            return sources
        per_slice = sources.shape[1] // self.data.slices_per_source
        return sources[:, self.data.context_slices * per_slice:(self.data.context_slices + 1) * per_slice]

    def in_target_space(self, sources: torch.Tensor) -> torch.Tensor:
        """The source slice (`centre_slice`: a path's source end and the mixing anchor never hold the
        neighbouring slices, which only condition the network) in the target's channel space: equal channel
        counts as they are, otherwise its channel mean repeated over the target's channels (grey EL image ->
        one copy per mask class, SAR -> RGB)."""
        sources = self.centre_slice(sources)
        channels = self.data.target_channels
        if sources.shape[1] == channels:
            return sources
        return sources.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1)


def check_finite_sources(sources: torch.Tensor) -> None:
    """Refuse sources holding NaN or infinite values, naming how many and in which batch items: a method
    would turn them into a NaN translation without a word. Every `translate` calls it (not the training
    steps, where it would cost a device synchronisation per step)."""
    finite = torch.isfinite(sources)
    if not finite.all():
        items = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise CdtsdeError(f"the sources hold {int((~finite).sum())} NaN or infinite value(s), in batch item(s) "
                          f"{items}; translate finite values only")
