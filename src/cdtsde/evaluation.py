"""Evaluate a trained method on a paired dataset: translate every pair and score it on the one scoring
path (`cdtsde.metrics.ScoreAccumulator`), slices of NIfTI volumes also as volumes."""

from __future__ import annotations

import re
import time

import numpy as np
import torch

from .data.masks import decode_classes
from .data.nifti import NiftiSliceDataset
from .intensity import model_to_unit
from .methods import Method


@torch.no_grad()
def evaluate_model(method: Method, dataset, sampling=None, seed: int = 0, batch_size: int = 16,
                   classes: dict[int, str] | None = None, foreground: tuple[int, ...] | None = None,
                   nonzero_foreground: bool = False, kmeans=None, perception: bool = False, volumes: bool = False,
                   volume_noise=None, **overrides) -> tuple[list[dict], dict] | tuple[list[dict], dict, list[dict], dict]:
    """Per-pair metric rows and their summary (`ScoreAccumulator`, which the options configure). `sampling`
    (default: the checkpoint's) with `overrides` (e.g. steps=10) are the method's sampling options. Images
    are scored in [0, 1]; mask targets are decoded by argmax and scored per class. With `nonzero_foreground`
    image metrics are also computed over the target's nonzero pixels (the brain of skull-stripped MRI)
    under a "_fg" suffix, as `cdtsde evaluate --nonzero-foreground` does; `kmeans` (IntensityKMeans fit on
    target training images, `fit_kmeans`) adds the zero-shot K-Means Dice; `perception` adds the set-level
    perception metrics of the translations against the targets (keys `perception/...`, in the summary
    only). Each row also carries the pair's name and the seconds per image.

    With `volumes` (grey images named `<volume>_slice<k>`, as the BraTS, IXI and NIfTI datasets name their
    slices) the translated slices are also stacked back into volumes by name and slice index (the slices
    of a volume must be consecutive: data `min_foreground: 0`, `slice_step: 1` keep them all) along the
    method's `data.slice_axis` and scored as volumes (`ScoreAccumulator.update_volume`; the foreground,
    with `nonzero_foreground`, is the target volume's nonzero voxels; planes named by the target file's
    affine for a `NiftiSliceDataset`, else by the array axes), and the volume rows and their summary with
    intervals over volumes are returned after the rows and the summary. `volume_noise`
    (`cdtsde.translate.VolumeNoise`, e.g. `VolumeNoise()`, translate's default) has each slice draw its noise
    by its index in its volume as `translate` draws a volume's slices; None (or "independent"): the
    batches draw in turn from one generator."""
    from .metrics import ScoreAccumulator

    is_mask = method.data.target_kind == "mask"
    scores = ScoreAccumulator("mask" if is_mask else "image", classes=classes, foreground=foreground,
                              nonzero_foreground=nonzero_foreground, kmeans=kmeans, perception=perception)
    sampling = method.sampling_options(sampling, **overrides)
    device = next(method.parameters(), torch.empty(0)).device
    generator = torch.Generator(device).manual_seed(seed)
    if volumes and is_mask:
        raise ValueError("volume metrics score intensity images, not masks")
    slices: dict[str, dict[int, tuple]] = {}  # volume name -> slice index -> (prediction, target), (H, W)
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        sources = torch.stack([item["source"] for item in items]).to(device)
        draws = generator
        if volume_noise is not None and volume_noise.kind != "independent":
            draws = volume_noise.volume_draws(seed, [slice_index(item["name"]) for item in items], [0] * len(items),
                                              device)
        began = time.perf_counter()
        predictions = method.translate(sources, sampling, draws).images.cpu()
        seconds = (time.perf_counter() - began) / len(items)
        for item, prediction in zip(items, predictions):
            if is_mask:
                pred, true = decode_classes(prediction), decode_classes(item["target"])
            else:
                pred, true = (model_to_unit(x).permute(1, 2, 0).numpy() for x in (prediction, item["target"]))
            scores.update(item["name"], pred, true, seconds_per_image=seconds)
            if volumes:
                volume, index = _volume_and_index(item["name"], pred)
                slices.setdefault(volume, {})[index] = (pred[..., 0], true[..., 0])
    if not volumes:
        return scores.compute()
    for volume, cuts in slices.items():
        prediction, target = _stack(volume, cuts, method.data.slice_axis)
        scores.update_volume(volume, prediction, target, codes=_axis_codes_of(dataset, volume),
                             slice_axis=method.data.slice_axis)
    return (*scores.compute(), *scores.compute_volumes())


SLICE_NAME = re.compile(r"^(?P<volume>.+)_slice(?P<index>\d+)$")


def slice_match(name: str) -> re.Match:
    match = SLICE_NAME.match(name)
    if match is None:
        raise ValueError(f"volume metrics and volume noise need items named <volume>_slice<k>, got {name!r}")
    return match


def slice_index(name: str) -> int:
    """The index k of the slice named `<volume>_slice<k>` in its volume."""
    return int(slice_match(name)["index"])


def _volume_and_index(name: str, prediction: np.ndarray) -> tuple[str, int]:
    match = slice_match(name)
    if prediction.shape[-1] != 1:
        raise ValueError(f"volume metrics score grey volumes, {name!r} has {prediction.shape[-1]} channels")
    return match["volume"], int(match["index"])


def _stack(volume: str, cuts: dict[int, tuple], slice_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The prediction and target volumes of one volume's slices, the slice axis put back where it was."""
    indices = sorted(cuts)
    missing = sorted(set(range(indices[0], indices[-1] + 1)) - set(indices))
    if missing:
        raise ValueError(f"{volume}: slices {missing[:5]}{' ...' if len(missing) > 5 else ''} are missing between "
                         f"{indices[0]} and {indices[-1]}; volume metrics need consecutive slices (data "
                         f"min_foreground: 0 and slice_step: 1 keep every slice)")
    return tuple(np.moveaxis(np.stack([cuts[i][part] for i in indices]), 0, slice_axis) for part in (0, 1))


def _axis_codes_of(dataset, volume: str) -> tuple[str, str, str]:
    """The anatomical directions of the volume's array axes, from its target file as read (`axis_codes_of`)
    when the dataset is a `NiftiSliceDataset`, else the array axes (ARRAY_AXCODES)."""
    from .imagefiles import read_image
    from .metrics.volume import ARRAY_AXCODES, axis_codes_of

    if isinstance(dataset, NiftiSliceDataset):
        for _, target_path, name in dataset.paths:
            if name == volume:
                return axis_codes_of(read_image(target_path)[1])
    return ARRAY_AXCODES
