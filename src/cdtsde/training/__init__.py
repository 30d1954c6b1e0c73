"""Training any registered method (`train`), its settings (`TrainConfig`) and checkpoints
(`save_pretrained` / `load_pretrained`)."""

from .checkpoint import load_pretrained, save_pretrained
from .loop import TrainConfig, train

__all__ = ["TrainConfig", "load_pretrained", "save_pretrained", "train"]
