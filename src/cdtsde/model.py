"""The CDTSDE translation model: noise schedule + mixing field + conditional UNet, with its plain-data
configuration, the training loss (DESIGN 3) and few-step translation (DESIGN 4).

The source enters the network by channel concatenation. The mixing field and the forward mean need the
source in the *target's* channel space (the anchor x_src of d_t = Lambda x_src + (1 - Lambda) x0): equal
channel counts are used as they are; otherwise the source's channel mean is repeated over the target's
channels (grey EL image -> one copy per mask class, SAR -> RGB).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CdtsdeError
from .fields import make_field
from .plain import from_plain
from .process import q_sample
from .sampler import SampleResult, sample
from .schedule import NoiseSchedule, ScheduleConfig
from .unet import ConditionalUNet, UNetConfig

TARGET_KINDS = ("image", "mask")


@dataclass
class ModelConfig:
    source_channels: int
    target_channels: int
    target_kind: str = "image"  # "mask": one channel per class, decoded by argmax
    field: dict = dataclasses.field(default_factory=lambda: {"variant": "dynamic"})
    schedule: dict = dataclasses.field(default_factory=dict)
    unet: dict = dataclasses.field(default_factory=dict)  # UNetConfig options other than the channel counts
    image_size: int | None = None  # the training size, used by `translate` to resize inputs

    def __post_init__(self):
        if self.target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {self.target_kind!r}")
        if self.source_channels < 1 or self.target_channels < 1:
            raise ValueError("source_channels and target_channels must be >= 1")

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return from_plain(cls, data, "model")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TranslationModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.schedule = NoiseSchedule(ScheduleConfig.from_dict(config.schedule))
        field_options = dict(config.field)
        variant = field_options.pop("variant", "dynamic")
        self.field = make_field(variant, self.schedule, config.target_channels, **field_options)
        unet_config = UNetConfig.from_dict(
            {**config.unet, "in_channels": config.target_channels, "cond_channels": config.source_channels}
        )
        self.net = ConditionalUNet(unet_config)

    def mixer_parameters(self) -> list[nn.Parameter]:
        return list(self.field.parameters())

    def anchor(self, x_src: torch.Tensor) -> torch.Tensor:
        """The source in the target's channel space (see the module docstring)."""
        target = self.config.target_channels
        if x_src.shape[1] == target:
            return x_src
        return x_src.mean(dim=1, keepdim=True).expand(-1, target, -1, -1)

    def check_source(self, x_src: torch.Tensor) -> None:
        if x_src.ndim != 4 or x_src.shape[1] != self.config.source_channels:
            raise CdtsdeError(
                f"the model expects sources of shape (B, {self.config.source_channels}, H, W), got {tuple(x_src.shape)}"
            )

    def forward(self, x0: torch.Tensor, x_src: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """The training loss (forward() so that DDP wrappers see it): x0-prediction MSE with t uniform in {0, ..., t1} (t1 included: the first sampling step is
        evaluated there). Gradients reach the mixer through x_t."""
        self.check_source(x_src)
        batch = x0.shape[0]
        t = torch.randint(0, self.schedule.t1 + 1, (batch,), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        forward = q_sample(self.field, x0, self.anchor(x_src), t, noise=noise)
        x0_hat = self.net(forward.x_t, x_src, t)
        return {"loss": torch.mean((x0_hat - x0) ** 2), "mixing": forward.mixing, "t": t}

    @torch.no_grad()
    def translate(
        self,
        x_src: torch.Tensor,
        steps: int = 5,
        gamma: float = 1.0,
        generator: torch.Generator | None = None,
        **sampler_options,
    ) -> SampleResult:
        """Translate a batch of sources (B, C_src, H, W) in [-1, 1] to the target modality in `steps`
        network evaluations. `sampler_options` go to `cdtsde.sampler.sample` (spacing, clip_denoised,
        collapse_field, callback, x_start)."""
        self.check_source(x_src)
        sampler_options.setdefault("clip_denoised", True)
        return sample(
            lambda x_t, _anchor, t: self.net(x_t, x_src, t),
            self.anchor(x_src),
            self.field,
            steps=steps,
            gamma=gamma,
            generator=generator,
            **sampler_options,
        )


WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_pretrained(model: TranslationModel, directory: str | Path, state_dict: dict | None = None) -> Path:
    """Write `config.json` and `model.safetensors` (the given state dict, e.g. EMA weights, or the model's
    own), each atomically."""
    from safetensors.torch import save_file

    from .io import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in (state_dict or model.state_dict()).items()}
    with atomic_path(directory / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps(model.config.to_dict(), indent=2))
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "library": "cdtsde"})
    return directory


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> TranslationModel:
    """Load a model saved by `save_pretrained`; `path` is the model directory or a training run directory
    (its `model/` sub-directory is used)."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model" / CONFIG_FILE).is_file():
        path = path / "model"
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise CdtsdeError(f"{path}: not a cdtsde checkpoint ({required.name} missing)")
    try:
        config = ModelConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise CdtsdeError(f"{config_path}: invalid model configuration ({exc})") from exc
    model = TranslationModel(config)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except Exception as exc:  # safetensors header errors, missing or mis-shaped tensors
        raise CdtsdeError(f"{weights_path}: cannot load weights ({exc})") from exc
    return model.to(device).eval()
