"""Run configuration: one YAML file naming the data, the model and the optimisation.

    data:  a dataset spec for `cdtsde.data.build_dataset` (kind, root, size, ...)
    model: {field: {variant: dynamic}, schedule: {...}, unet: {...}}   (channel counts come from the data)
    train: TrainConfig options (max_steps, batch_size, lr, ...)
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import CdtsdeError
from .model import ModelConfig, TranslationModel
from .training import TrainConfig

SECTIONS = ("data", "model", "train")


def load_run_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CdtsdeError(f"{path}: configuration file not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CdtsdeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise CdtsdeError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise CdtsdeError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")
    if "data" not in config:
        raise CdtsdeError(f"{path}: the 'data' section is required")
    return config


def build_run(config: dict, base_dir: str | Path | None = None):
    """(model, train_set, preview_set, train_config) from a run configuration; relative data paths are
    resolved against `base_dir` (the configuration file's folder)."""
    from .data import build_dataset

    # the training loop draws the paired flips itself, from step-seeded generators (exact resume)
    data_spec = {"hflip": False, "vflip": False, **config["data"]}
    try:
        train_set = build_dataset(data_spec, "train", base_dir=base_dir)
        preview_set = build_dataset(config["data"], "val", base_dir=base_dir)
    except (ValueError, TypeError, KeyError) as exc:  # CdtsdeError from the data module passes as it is
        raise CdtsdeError(f"data: {exc}") from exc
    if len(preview_set) == 0:
        preview_set = train_set
    model_options = dict(config.get("model") or {})
    try:
        model_config = ModelConfig.from_dict({
            "source_channels": train_set.source_channels,
            "target_channels": train_set.target_channels,
            "target_kind": "mask" if getattr(train_set, "target_classes", None) else "image",
            "image_size": config["data"].get("size") or config["data"].get("tile"),
            **model_options,
        })
        train_config = TrainConfig.from_dict(dict(config.get("train") or {}))
        model = TranslationModel(model_config)
    except (ValueError, TypeError) as exc:
        raise CdtsdeError(f"configuration: {exc}") from exc
    return model, train_set, preview_set, train_config
