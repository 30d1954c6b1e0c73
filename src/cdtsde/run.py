"""Run configuration: one YAML file naming the method, the data, the model and the optimisation.

    method:   a registered method (`cdtsde methods`; default cdtsde)
    data:     a dataset spec for `cdtsde.data.build_dataset` (kind, root, size, ...); for unpaired methods
              also {kind: unpaired, source: SPEC, target: SPEC}
    model:    the method's configuration (channel counts come from the data)
    sampling: the method's default sampling options, recorded in its checkpoints
    train:    TrainConfig options (max_steps, batch_size, lr, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .data import TargetOnlyData, UnpairedData, build_dataset
from .data.specs import data_spec
from .data.views import file_reading, input_reading, target_band_names
from .errors import CdtsdeError
from .intensity import NIFTI_PERCENTILE
from .methods import DataInfo, Method, method_class
from .metrics import PV_EL_CLASSES, PV_EL_DEFECT
from .metrics.headline import HeadlineScore
from .settings import from_plain
from .training import TrainConfig
from .training.validation import ValidationData

DEFAULT_METHOD = "cdtsde"
NIFTI_KINDS = ("nifti", "brats", "ixi")
# the data whose masks hold the pv-el-cracks classes, whose defects are classes PV_EL_DEFECT (not the busbar)
PV_EL_MASKS = ({"kind": "el-masks"}, {"kind": "procedural", "task": "el-cell"})


@dataclass
class RunSpec:
    """A run configuration's sections, checked like every other setting (`cdtsde.settings.from_plain`). The
    data spec is typed by its kind (`cdtsde.data.specs`); `model`, `sampling` and `train` are read by the
    method's own dataclasses when the run is built, since their fields depend on the method."""

    data: dict
    method: str | None = None  # default: DEFAULT_METHOD
    model: dict | None = None
    sampling: dict | None = None
    train: dict | None = None


def load_run_config(path: str | Path) -> dict:
    """The run configuration in the YAML file `path`, its sections and its data spec checked (an error names
    the file and the key); the plain mapping is returned, as `build_run` takes it."""
    path = Path(path)
    if not path.is_file():
        raise CdtsdeError(f"{path}: configuration file not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CdtsdeError(f"{path}: not valid YAML ({exc})") from exc
    try:
        from_plain(RunSpec, config, "run configuration")
        data = config["data"]
        for side in (data.get("source"), data.get("target")) if data.get("kind") == "unpaired" else (data,):
            data_spec(side)
    except (ValueError, CdtsdeError) as exc:
        raise CdtsdeError(f"{path}: {exc}") from exc
    return config


def build_training_data(spec: dict, data_kind: str, base_dir=None):
    """(train set, preview set) in the form the method trains on: paired sets as they are; for an
    unpaired method two independently drawn sides ({kind: unpaired, source: SPEC, target: SPEC}, or the
    two sides of a paired spec, their pairing ignored); for a target-only method the targets alone."""
    def build(one: dict, split: str):
        # the training loop draws random flips itself, from step-seeded generators (exact resume)
        return build_dataset({"hflip": False, "vflip": False, **one} if split == "train" else one, split,
                             base_dir=base_dir)

    try:
        if spec.get("kind") == "unpaired":
            if data_kind != "unpaired":
                raise CdtsdeError(f"a {data_kind} method cannot train on unpaired data")
            sides = {name: spec.get(name) for name in ("source", "target")}
            if not all(isinstance(value, dict) for value in sides.values()) or set(spec) - {"kind", "source", "target"}:
                raise CdtsdeError("unpaired data needs exactly 'source' and 'target' dataset specs")
            train_set, preview_set = (UnpairedData(build(sides["source"], split), build(sides["target"], split))
                                      for split in ("train", "val"))
        else:
            train_set, preview_set = build(spec, "train"), build(spec, "val")
            if data_kind == "unpaired":
                train_set, preview_set = UnpairedData(train_set, train_set), UnpairedData(preview_set, preview_set)
            elif data_kind == "paired" and spec.get("kind") == "image-folder":
                raise CdtsdeError("image-folder data holds one modality; a paired method needs source-target pairs")
            elif data_kind == "target-only":
                train_set, preview_set = TargetOnlyData(train_set), TargetOnlyData(preview_set)
    except (ValueError, TypeError, KeyError) as exc:  # CdtsdeError from the data module passes as it is
        raise CdtsdeError(f"data: {exc}") from exc
    if len(preview_set) == 0:
        preview_set = train_set
    return train_set, preview_set


def data_info(train_set, spec: dict) -> DataInfo:
    """What the method is told about (and its checkpoint records of) the training data."""
    sides = [spec.get("target", {}), spec] if spec.get("kind") == "unpaired" else [spec]
    size = next((s.get("size") or s.get("tile") for s in sides if s.get("size") or s.get("tile")), None)
    percentile = next((s.get("percentile", NIFTI_PERCENTILE) for s in sides if s.get("kind") in NIFTI_KINDS),
                      NIFTI_PERCENTILE)
    axis = next((s.get("axis", 2) for s in sides if s.get("kind") in NIFTI_KINDS), 2)
    native = any(s.get("kind") == "scene-tiles" or (s.get("size") and s.get("resize") == "crop") for s in sides)
    sources = spec.get("source", {}) if spec.get("kind") == "unpaired" else spec
    return DataInfo(source_channels=train_set.source_channels, target_channels=train_set.target_channels,
                    target_kind="mask" if getattr(train_set, "target_classes", None) else "image",
                    image_size=size, nifti_percentile=percentile, source_reading=input_reading(train_set),
                    target_reading=file_reading(train_set, "target"), slice_axis=axis,
                    training_scale="native" if native else "resized", target_band_names=target_band_names(train_set),
                    context_slices=sources.get("context_slices", 0))


def build_run(config: dict, base_dir: str | Path | None = None, method: str | None = None):
    """(method, train_set, preview_set, train_config) from a run configuration; `method` overrides the
    configuration's; relative data paths are resolved against `base_dir` (the configuration file's folder)."""
    cls = method_class(method or config.get("method") or DEFAULT_METHOD)
    train_set, preview_set = build_training_data(config["data"], cls.data_kind, base_dir)
    try:
        train_config = from_plain(TrainConfig, {**cls.train_defaults, **(config.get("train") or {})}, "train")
        model_config = from_plain(cls.config_class, config.get("model"), "model")
        torch.manual_seed(train_config.seed)  # train.seed fixes the initial weights too, not only the draws
        built: Method = cls(model_config, data_info(train_set, config["data"]))
        sampling = from_plain(cls.sampling_class, config.get("sampling"), "sampling")
    except (ValueError, TypeError) as exc:
        raise CdtsdeError(f"configuration of the {cls.name} method: {exc}") from exc
    built.sampling = built.sampling_options(sampling)  # checked against the model (e.g. its schedule's steps)
    return built, train_set, preview_set, train_config


def is_pv_el_masks(spec: dict) -> bool:
    """Whether a data spec's masks hold the pv-el-cracks classes (PV_EL_CLASSES)."""
    return any(all(spec.get(key) == value for key, value in kind.items()) for kind in PV_EL_MASKS)


def mask_classes(spec: dict) -> dict[int, str] | None:
    """The class names a mask data spec gives its values: the pv-el-cracks classes, the spec's `classes`
    where it names them, else None (the metrics then name every value present by its number)."""
    if is_pv_el_masks(spec):
        return dict(PV_EL_CLASSES)
    names = spec.get("classes")
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else None


def headline_score(spec: dict, data: DataInfo) -> HeadlineScore:
    """The task's headline figure, as the suite leads with it: brain PSNR for MRI (NIfTI data), the
    defect Dice over the items with a defect for masks (the pv-el-cracks defects; for other masks every
    class but the background), PSNR for other images."""
    if data.target_kind == "mask":
        pv_el = is_pv_el_masks(spec)
        classes = len(PV_EL_CLASSES) if pv_el else data.target_channels
        return HeadlineScore("dice/defect-present", PV_EL_DEFECT if pv_el else tuple(range(1, classes)))
    return HeadlineScore("psnr_fg" if spec.get("kind") in NIFTI_KINDS else "psnr")


def validation_data(method: Method, train_set, preview_set, spec: dict) -> ValidationData:
    """What a run's validation scores (`train.validation`), from what `build_run` built: the val split in
    the method's training form (the preview set) for the loss and, where the data are paired, its pairs for
    the translations' headline score (`headline_score`): a paired method's pairs as they are; an unpaired or
    target-only method's val split read as the pairs it came from (a paired spec). An unpaired spec's two
    sides have no pairing, and a one-modality image folder no sources: their validation is the loss alone."""
    if preview_set is train_set:  # build_run's fallback for an empty val split
        raise CdtsdeError("train.validation needs the data spec's val split, which is empty here")
    pairs = preview_set
    if isinstance(preview_set, UnpairedData):
        pairs = None if spec.get("kind") == "unpaired" else preview_set.sources
    elif isinstance(preview_set, TargetOnlyData):
        pairs = preview_set.dataset
    if pairs is not None and (len(pairs) == 0 or "source" not in pairs[0]):
        pairs = None
    return ValidationData(preview_set, pairs, None if pairs is None else headline_score(spec, method.data))
