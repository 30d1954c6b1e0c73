"""`TrainConfig`: the settings of a training run (the `train:` block of a run configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import check_count

PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


@dataclass
class TrainConfig:
    max_steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay_steps: int = 0  # the learning rate falls linearly to 0 over the last decay_steps (pix2pix, CycleGAN)
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    flips: bool = True  # random horizontal/vertical flips (identical on source and target of a pair)
    seed: int = 0
    log_every: int = 25
    sample_every: int = 500
    checkpoint_every: int = 250
    # steps after which the EMA weights are also kept in snapshots/step-<N>/ (quality against training compute)
    snapshot_steps: tuple[int, ...] = ()
    num_workers: int = 0
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "log_every", "checkpoint_every", "num_nodes"):
            check_count(f"train.{name}", getattr(self, name))
        for name in ("warmup_steps", "decay_steps", "sample_every", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {value!r}")
        if any(not isinstance(step, int) or isinstance(step, bool) or step < 1 for step in self.snapshot_steps):
            raise ValueError(f"train.snapshot_steps must list steps >= 1, got {list(self.snapshot_steps)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.accelerator == "cpu" and self.precision.startswith("16-"):
            raise ValueError(f"precision {self.precision} (float16) is not supported on the CPU; use bf16-mixed "
                             f"or bf16-true there, 16-mixed on a GPU")
