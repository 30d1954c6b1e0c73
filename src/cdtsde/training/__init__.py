"""Training any registered method (`train`), its settings (`TrainConfig`) and checkpoints
(`save_pretrained` / `load_pretrained`)."""

from .checkpoint import load_pretrained, save_pretrained
from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "load_pretrained", "save_pretrained", "train"]
