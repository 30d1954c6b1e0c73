"""Translate image files with a trained method, keeping each input's format: PNG/TIFF bit depth, NIfTI
volumes translated slice by slice (last axis) and written back with the input's affine.

Inputs reach the network exactly as training data did: each file through the reader the training data
used, which the checkpoint records (`DataInfo.source_reading`, cdtsde.data.readers: NIfTI normalisation
with its percentile, dB SAR clipped to its range with its bands, integer images by their dtype's range,
floats by their value range), and every slice resized by the training transform's `resize`.

Inputs larger than a window can be translated window by window (`Tiling`, `translate_tiled`): models trained
on native-scale tiles do so by default, so that the network's memory depends on the window batch and not on
the scene. A scene of more than `Tiling.on_disk_above` pixels is, besides, never held whole
(`translate_scene`): read from its file by rows (TIFF, NPY; a PNG/JPG is decoded once), stitched into
float32 row files on disk (`cdtsde.tiling.RowFile`) and written tile by tile.

The slices of a volume draw the noise of stochastic samplers as `VolumeNoise` says: independently, the same
draws for every slice, or correlated smoothly along the slice axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import check_writable, remove_stale_temporaries
from .data.base import adapt_channels
from .data.masks import decode_classes
from .data.nifti import with_context
from .data.readers import reading_from_record
from .data.transforms import resize
from .draws import SliceDraws, mixed_seed, slice_kernel
from .errors import CdtsdeError
from .imagefiles import (
    ImageMeta,
    check_finite,
    image_format,
    image_shape,
    opened_rows,
    read_image,
    renamed,
    stem,
    write_image,
    write_image_regions,
)
from .intensity import from_unit, model_to_unit, normalise_volume, to_unit_image, unit_to_model
from .memory import named_out_of_memory
from .methods import DataInfo, Method
from .tiling import BLENDS, RowFile, tiled, window_count


@dataclass
class Translation:
    """Per-file result: the translation (slices, channels last, [0, 1] or class indices) and, with several
    samples, the per-pixel standard deviation across them."""

    mean: np.ndarray
    std: np.ndarray | None
    diagnostics: dict[str, float]


def source_slices(array: np.ndarray, meta: ImageMeta, data: DataInfo) -> np.ndarray:
    """(S, H, W, C) float32 in [0, 1], read exactly as the training data were (`data.source_reading`, the
    reader the checkpoint records): one slice for a 2-D image, one per position along the last axis for a
    NIfTI volume, normalised over the whole volume as the training datasets do, each slice with its
    `data.context_slices` neighbours on each side as the training data had them (`with_context`; a 2-D image
    has none: an error naming the file and k). Checkpoints without a record: NIfTI by
    `data.nifti_percentile`, other files by `cdtsde.intensity.to_unit_image`."""
    if data.source_reading is not None:
        unit = reading_from_record(data.source_reading, f"{meta.path}: the checkpoint's data.source_reading").to_unit(
            array, meta.path)
    elif meta.format == "nifti":
        unit = normalise_volume(array, data.nifti_percentile)
    else:
        unit = to_unit_image(array, is_nifti=False)
    if meta.format == "nifti" and unit.ndim == 3:  # cut along the axis training cut its volumes along
        slices = np.moveaxis(unit, data.slice_axis, 0)[..., None]
        if len(slices) > 1 or not data.context_slices:
            return with_context(slices, data.context_slices)
    if data.context_slices:
        raise CdtsdeError(f"{meta.path}: a 2-D image, but the model was trained with context_slices: "
                          f"{data.context_slices} (each slice with its {data.context_slices} neighbouring slice(s) "
                          f"on each side); translate the NIfTI volume the slice comes from")
    if meta.format == "nifti":
        if unit.ndim == 2:
            return unit[None, :, :, None]
        raise CdtsdeError(f"{meta.path}: NIfTI with {unit.ndim} dimensions; expected a 2-D slice or a 3-D volume")
    if unit.ndim not in (2, 3):
        raise CdtsdeError(f"{meta.path}: image of shape {array.shape}; expected (H, W) or (H, W, C)")
    return (unit if unit.ndim == 3 else unit[..., None])[None]


# the hidden folders `translate_scene` blends into inside an output folder (removed as it ends; one left by a
# killed run is removed by `check_outputs`)
SCENE_TEMPORARIES = ".cdtsde-scene-"

# pixels of a scene above which it is read by rows and stitched on disk (`translate_scene`): held in memory
# whole, a tiled translation takes about 72 bytes a pixel (benchmarks/results/tiled_translation.json), 290
# MiB at this size
SCENE_IN_MEMORY_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class Tiling:
    """Window-by-window translation of inputs larger than a window (cdtsde.tiling): windows of `size`
    pixels (None: the model's training size, `DataInfo.image_size`) overlapping by the share `overlap` of
    a window, `batch` windows per network batch, blended with `blend` ("gaussian" or "linear") weights. A
    2-D file of more than `on_disk_above` pixels is translated by `translate_scene` (read by rows, stitched
    on disk): the same values, in memory that does not grow with the scene."""

    size: int | None = None
    overlap: float = 0.25
    batch: int = 8
    blend: str = "gaussian"
    on_disk_above: int = SCENE_IN_MEMORY_PIXELS

    def __post_init__(self):
        if self.size is not None and self.size < 1:
            raise CdtsdeError(f"the tile size must be >= 1, got {self.size}")
        if not 0 <= self.overlap < 1:
            raise CdtsdeError(f"the tile overlap is a share of the window in [0, 1), got {self.overlap}")
        if self.batch < 1:
            raise CdtsdeError(f"the tile batch must be >= 1, got {self.batch}")
        if self.blend not in BLENDS:
            raise CdtsdeError(f"blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")
        if self.on_disk_above < 0:
            raise CdtsdeError(f"on_disk_above is a number of pixels >= 0, got {self.on_disk_above}")

    def window(self, method: Method) -> int | None:
        return self.size or method.data.image_size

    def applies(self, method: Method, height: int, width: int) -> bool:
        """Whether an input of this size is cut into windows (it is larger than one)."""
        window = self.window(method)
        return window is not None and max(height, width) > window


def default_tiling(method: Method) -> Tiling | None:
    """What `translate_file` tiles with unless told: models trained at the files' own scale (native-scale
    crops or tiles) translate inputs larger than their training size window by window; models trained on
    resized images translate each input whole."""
    return Tiling() if method.data.training_scale == "native" and method.data.image_size else None


# the purposes per-slice generators are seeded with (cdtsde.draws.SliceDraws): a tiled translation's windows,
# a volume's slices translated whole
TILE_DRAWS, SLICE_DRAWS = 7, 8
VOLUME_NOISES = ("independent", "shared", "correlated")


@dataclass(frozen=True)
class VolumeNoise:
    """How the slices of a volume draw the noise of a stochastic method (every draw of `cdtsde.draws.normal`:
    the start and the steps of the diffusion samplers): "shared" (the default), the same draws for every
    slice; "independent", each slice its own draws (a volume
    translated whole keeps the one generator its batches draw from in turn, as before this option);
    "correlated", each slice's draws exactly N(0, I) with those of
    adjacent slices correlated by `correlation` and smoothly less with distance (`cdtsde.draws.slice_kernel`).
    `translate_slices` draws a single image (one slice) as "independent". Other randomness (Pix2Pix's dropout masks) is
    shared by "shared" and per slice otherwise."""

    # shared by default: chosen on the validation volumes of benchmarks/volume_noise.py (BraTS T1 -> T2, CDTSDE
    # linear and BBDM), where it scored the best 3-D SSIM in the brain for both methods
    kind: str = "shared"
    correlation: float = 0.9

    def __post_init__(self):
        if self.kind not in VOLUME_NOISES:
            raise CdtsdeError(f"volume noise must be one of {', '.join(VOLUME_NOISES)}, got {self.kind!r}")
        if not 0 < self.correlation < 1:
            raise CdtsdeError(f"the correlation of adjacent slices must lie in (0, 1) (1 is volume noise "
                              f"'shared'), got {self.correlation}")

    def draws(self, seed: int, purpose: int, slices: list[int], streams: list[int], device) -> SliceDraws:
        """The draws of a batch whose item i is the slice at position `slices[i]` of the volume, drawing stream
        `streams[i]` (a sample, a window of the slice)."""
        if self.kind == "shared":
            return SliceDraws(seed, purpose, [0] * len(slices), streams, device=device)
        kernel = slice_kernel(self.correlation) if self.kind == "correlated" else (1.0,)
        return SliceDraws(seed, purpose, slices, streams, kernel, device)

    def volume_draws(self, seed: int, slices: list[int], streams: list[int], device) -> SliceDraws:
        """`draws` of the slices of a volume translated whole (`translate_slices`, `evaluate_model`): item i
        the slice at index `slices[i]` in its volume."""
        return self.draws(seed, SLICE_DRAWS, slices, streams, device)


@dataclass
class TiledTranslation:
    """`translate_tiled`'s result: the mean translation (B, C_target, H, W) in [-1, 1]; with several
    samples the per-pixel standard deviation across them, averaged over channels (B, 1, H, W; in the
    [-1, 1] range's units); with `maps`, the method's preview maps ({title: (B, C, H, W)}, CDTSDE's
    Lambda_t fields) stitched alike; the method's diagnostics summed over windows."""

    images: torch.Tensor
    std: torch.Tensor | None
    maps: dict[str, torch.Tensor]
    diagnostics: dict[str, float]


def tile_window(tiling: Tiling, method: Method, height: int, width: int) -> tuple[int, int]:
    """The window side and overlap (pixels) `tiling` cuts a `height` x `width` input into."""
    window = tiling.window(method)
    if window is None:
        raise CdtsdeError(f"the {method.name} model records no training size: give the tile size")
    window = min(window, max(height, width))
    return window, min(round(tiling.overlap * window), window - 1)


def window_translator(method: Method, sampling, seed: int, samples: int, tiling: Tiling, window: int,
                      precision: str, maps: bool, diagnostics: dict[str, float], noise: VolumeNoise):
    """The function `cdtsde.tiling.tiled` applies to the windows of source `index`: (index, windows (N, C, h,
    w) in [-1, 1], origins) -> {"images": the mean of `samples` translations, "std" with several samples,
    "map:<title>" with `maps`}, on the method's device, summing the method's diagnostics into `diagnostics`.
    Every window sample draws from its own generator, seeded by (seed, source index, window origin, sample
    index), so a window's result does not depend on which windows share its batch; sources that are the
    slices of one volume draw as `noise` says (`VolumeNoise`: a window draws with the windows at its place in
    the other slices)."""
    if precision not in PRECISIONS:
        raise CdtsdeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = next(method.parameters(), torch.empty(0)).device
    lower = f"the tile batch (--tile-batch, now {tiling.batch}) or the tile size (--tile-size, now {window})"

    def translate_windows(index: int, windows: torch.Tensor, origins: list[tuple[int, int]]) -> dict:
        source = windows.to(device).repeat_interleave(samples, dim=0)
        streams = [mixed_seed(top, left, sample) for top, left in origins for sample in range(samples)]
        generator = noise.draws(seed, TILE_DRAWS, [index] * len(streams), streams, device)
        with named_out_of_memory(f"translating a batch of {len(origins)} window(s) of {window} px"
                                 f"{f' x {samples} samples' if samples > 1 else ''}", lower):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                result = method.translate(source, sampling, generator)
                found = {f"map:{title}": value.float()
                         for title, value in method.preview_maps(windows.to(device)).items()} if maps else {}
        for key, value in result.diagnostics.items():
            diagnostics[key] = diagnostics.get(key, 0) + value
        out = result.images.float().view(len(origins), samples, *result.images.shape[1:])
        found["images"] = out.mean(1)
        if samples > 1:
            found["std"] = out.std(1).mean(1, keepdim=True)
        return found

    return translate_windows


def window_bar(total: int, tiling: Tiling, progress: bool):
    """A tqdm bar of `total` windows (shown with `progress` where there is more than one batch of them)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="windows", unit="window", leave=False,
                disable=not progress or total <= tiling.batch)


@torch.no_grad()
def translate_tiled(method: Method, sources: torch.Tensor, sampling=None, seed: int = 0, samples: int = 1,
                    tiling: Tiling | None = None, precision: str = "32", maps: bool = False,
                    progress: bool = False, noise: VolumeNoise = VolumeNoise("independent")) -> TiledTranslation:
    """Translate sources (B, C_src, H, W) in [-1, 1] window by window (`tiling`, default `Tiling()`), each
    window of the model's training size (or `tiling.size`) at the input's scale, in batches of
    `tiling.batch` windows on the method's device (`window_translator`: each window's noise its own; sources
    that are the slices of one volume draw as `noise` says, by default independent, as separate images),
    blended back on the CPU. An input no larger than a window is one window. `progress` shows a bar of
    windows."""
    tiling = tiling or Tiling()
    method.check_source(sources)
    height, width = sources.shape[-2:]
    window, overlap = tile_window(tiling, method, height, width)
    diagnostics: dict[str, float] = {}
    translate_windows = window_translator(method, sampling, seed, samples, tiling, window, precision, maps,
                                          diagnostics, noise)
    total = len(sources) * window_count(height, width, window, overlap)
    with window_bar(total, tiling, progress) as bar:
        stitched = [tiled(lambda windows, origins, index=index: translate_windows(index, windows, origins), source,
                          window, overlap, tiling.batch, tiling.blend, bar.update)
                    for index, source in enumerate(sources.detach().to("cpu", torch.float32))]

    def gathered(name: str) -> torch.Tensor:  # one source (a scene): its output as it is, not a stacked copy
        values = [found[name] for found in stitched]
        return values[0][None] if len(values) == 1 else torch.stack(values)

    return TiledTranslation(images=gathered("images"), std=gathered("std") if samples > 1 else None,
                            maps={name.removeprefix("map:"): gathered(name) for name in stitched[0]
                                  if name.startswith("map:")}, diagnostics=diagnostics)


# translation precisions: float32, or the network under bf16 autocast (measured on the 2-core AVX512-BF16 CPU:
# 1.58x faster, pixels moved by up to 0.015 of the [-1, 1] range; benchmarks/roofline.py --levers)
PRECISIONS = ("32", "bf16")


@torch.no_grad()
def translate_slices(method: Method, slices: np.ndarray, sampling=None, seed: int = 0, samples: int = 1,
                     batch_size: int = 16, resize_to_training: bool = True, precision: str = "32",
                     tiling: Tiling | None = None, progress: bool = False,
                     noise: VolumeNoise = VolumeNoise()) -> Translation:
    """Translate (S, H, W, C_src) slices in [0, 1] with the method's sampling options (`sampling`, default:
    the checkpoint's). With `resize_to_training`, slices of a model trained on resized images
    (`DataInfo.training_scale`) are resized to the training size (by the training transform) and the result
    back to the input's size; a model trained on native-scale crops or tiles sees every input at its size. `precision` "bf16" runs the method under bf16
    autocast (faster where the hardware has bf16 arithmetic; not equal to float32). With `tiling`, slices
    larger than its window are translated window by window at their own scale (`translate_tiled`;
    `progress`: a bar of windows). The slices draw their noise as `noise` says (`VolumeNoise`)."""
    if precision not in PRECISIONS:
        raise CdtsdeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if len(slices) == 1:
        noise = VolumeNoise("independent")
    if tiling is not None and tiling.applies(method, *slices.shape[1:3]):
        return tiled_slices(method, slices, sampling, seed, samples, tiling, precision, progress, noise)
    device = next(method.parameters(), torch.empty(0)).device
    generator = torch.Generator(device).manual_seed(seed)
    size = method.data.image_size if resize_to_training and method.data.training_scale == "resized" else None
    height, width = slices.shape[1:3]
    means, stds, diagnostics = [], [], {}
    for start in range(0, len(slices), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(slices[start:start + batch_size])).permute(0, 3, 1, 2).to(device)
        if size and (height, width) != (size, size):
            chunk = resize(chunk, size, size)
        source = unit_to_model(chunk).repeat_interleave(samples, dim=0)
        with named_out_of_memory(f"translating a batch of {len(chunk)} slice(s) of {height} x {width} px"
                                 f"{f' x {samples} samples' if samples > 1 else ''}",
                                 f"--batch-size (now {batch_size}) or translate window by window (--tiling on)"):
            draws = generator if noise.kind == "independent" else noise.volume_draws(
                seed, [start + i for i in range(len(chunk)) for _ in range(samples)],
                list(range(samples)) * len(chunk), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                result = method.translate(source, sampling, draws)
        result.images = result.images.float()
        for key, value in result.diagnostics.items():
            diagnostics[key] = diagnostics.get(key, 0) + value
        out = result.images.view(-1, samples, *result.images.shape[1:])
        if size and (height, width) != (size, size):
            out = F.interpolate(out.flatten(0, 1), size=(height, width), mode="bilinear", align_corners=False)
            out = out.view(-1, samples, *out.shape[1:])
        out = model_to_unit(out)
        means.append(out.mean(1))
        if samples > 1:
            stds.append(out.std(1).mean(1, keepdim=True))
    mean = torch.cat(means)
    std = torch.cat(stds).permute(0, 2, 3, 1).cpu().numpy() if stds else None
    if method.data.target_kind == "mask":
        return Translation(mean=decode_classes(mean).astype(np.uint8)[..., None], std=std, diagnostics=diagnostics)
    return Translation(mean=mean.permute(0, 2, 3, 1).cpu().numpy(), std=std, diagnostics=diagnostics)


def tiled_slices(method: Method, slices: np.ndarray, sampling, seed: int, samples: int, tiling: Tiling,
                 precision: str, progress: bool, noise: VolumeNoise) -> Translation:
    """`translate_slices` window by window: `translate_tiled` on the slices, as a `Translation`."""
    sources = unit_to_model(torch.from_numpy(np.ascontiguousarray(slices)).permute(0, 3, 1, 2))
    result = translate_tiled(method, sources, sampling, seed, samples, tiling, precision, progress=progress,
                             noise=noise)
    std = (result.std / 2).permute(0, 2, 3, 1).numpy() if result.std is not None else None  # in [0, 1] units
    mean = model_to_unit(result.images)
    if method.data.target_kind == "mask":
        return Translation(mean=decode_classes(mean).astype(np.uint8)[..., None], std=std,
                           diagnostics=result.diagnostics)
    return Translation(mean=mean.permute(0, 2, 3, 1).numpy(), std=std, diagnostics=result.diagnostics)


def output_name(path: Path, rename: tuple[str, str] | None = None) -> str:
    """The name (without extension) a translation of `path` is written under: the input's, or with `rename`
    (an ending of the input modality's names and the target modality's, ("_t1", "_t2")) the target's, so
    that the translation pairs by name with the target it stands for."""
    return stem(path) if rename is None else renamed(stem(path), rename)


def output_path(path: Path, output_dir: Path, rename: tuple[str, str] | None = None) -> Path:
    suffixes = {"nifti": ".nii.gz" if str(path).endswith(".gz") else ".nii", "jpg": ".png"}
    return output_dir / (output_name(path, rename) + suffixes.get(image_format(path), path.suffix))


def std_path(path: Path, output_dir: Path, rename: tuple[str, str] | None = None) -> Path:
    return output_dir / f"{output_name(path, rename)}_std.tif"


# the names `translate` writes into an output folder, one a line: files there not in it are the user's own
TRANSLATIONS_RECORD = ".cdtsde-translations"


def recorded_translations(output_dir: Path) -> set[str]:
    """The names of the files `write_translation` has written into `output_dir`."""
    try:
        return set((output_dir / TRANSLATIONS_RECORD).read_text().splitlines())
    except FileNotFoundError:
        return set()


def record_translations(output_dir: Path, names: list[str]) -> None:
    """Add `names` to the folder's record, before they are written (a kill in between leaves a name without
    a file, which is harmless; never a file of ours without its name)."""
    new = [name for name in dict.fromkeys(names) if name not in recorded_translations(output_dir)]
    if new:
        with open(output_dir / TRANSLATIONS_RECORD, "a") as handle:
            handle.write("".join(f"{name}\n" for name in new))


# bytes per value of a translation as written: NIfTI and TIFF/NPY outputs of float inputs are float32; PNG
# holds 8 or 16 bits. Uncompressed: an upper bound that gzip of noisy float32 values approaches (a BraTS
# volume, 1.9 MB as int16 .nii.gz: 35.7 MB as float32, a translation of it about 24 MB as .nii.gz)
OUTPUT_BYTES = {"nifti": 4, "tiff": 4, "npy": 4, "png": 2, "jpg": 2}


def output_bytes(path: Path, channels: int, samples: int) -> int:
    """About the bytes of the translation of `path` (and its std map with several samples), from its header:
    its pixels (a NIfTI volume's voxels) x `channels` x bytes per value, + 4 per pixel for the std map. 0 for
    a file whose header is unreadable (translating it reports that)."""
    try:
        shape = image_shape(path)
    except CdtsdeError:
        return 0
    fmt = image_format(path)
    pixels = int(np.prod(shape[:3] if fmt == "nifti" else shape[:2]))
    return pixels * channels * OUTPUT_BYTES[fmt] + (pixels * 4 if samples > 1 else 0) + 4096


def check_outputs(inputs: list[Path], output_dir: Path, samples: int = 1, overwrite: bool = False,
                  input_folder: Path | None = None, skip_existing: bool = False, channels: int = 1,
                  rename: tuple[str, str] | None = None) -> list[Path]:
    """Refuse, before any work, what would lose data or fail midway: an output folder that is the input
    folder or inside it, or an existing file; outputs that would replace an input (even with `overwrite`);
    two inputs writing the same file (`a.jpg` and `a.png` both give `a.png`); existing outputs unless
    `overwrite` (replace them) or `skip_existing` (leave those inputs out: an interrupted folder continues),
    naming apart the files no translation wrote (the user's own); a folder that cannot be written or lacks
    the free space (`output_bytes` per input, `channels` the translation's); outputs named as
    `write_translation` names them with `rename`. Returns the inputs to translate and removes the
    temporaries an interrupted run left for their outputs and the folders of blended files a killed
    `translate_scene` left (one translation writes into a folder at a time: the CLI locks it)."""
    import shutil

    if overwrite and skip_existing:
        raise CdtsdeError("--overwrite and --skip-existing exclude each other")
    output = output_dir.resolve()
    if output_dir.exists() and not output_dir.is_dir():
        raise CdtsdeError(f"--output {output_dir}: exists and is not a directory")
    if input_folder is not None:
        folder = input_folder.resolve()
        if output == folder or folder in output.parents:
            raise CdtsdeError(f"--output {output_dir}: is the input folder {input_folder} or inside it; choose a "
                              f"folder outside the inputs")
    outputs = {path: [target.resolve() for target in [output_path(path, output_dir, rename)]
                      + ([std_path(path, output_dir, rename)] if samples > 1 else [])] for path in inputs}
    writers: dict[Path, list[Path]] = {}
    for path, targets in outputs.items():
        for target in targets:
            writers.setdefault(target, []).append(path)
    sources = {path.resolve() for path in inputs}
    replaced = sorted(str(target) for target in writers if target in sources)
    if replaced:
        raise CdtsdeError(f"--output {output_dir}: the translation would replace its input ({', '.join(replaced[:3])}); "
                          f"choose another output folder")
    collisions = [(target, paths) for target, paths in writers.items() if len(paths) > 1]
    if collisions:
        target, paths = collisions[0]
        raise CdtsdeError(f"{' and '.join(str(p) for p in paths)} would all be written to {target} "
                          f"({len(collisions)} such name clash(es)); rename the inputs so that their names differ "
                          f"without the extension")
    if skip_existing:
        inputs = [path for path in inputs if not all(target.exists() for target in outputs[path])]
    planned = [target for path in inputs for target in outputs[path]]
    existing = sorted(target for target in planned if target.exists())
    if existing and not overwrite:
        ours = recorded_translations(output_dir)
        foreign = [str(target) for target in existing if target.name not in ours]
        if foreign:
            raise CdtsdeError(f"--output {output_dir}: {len(foreign)} file(s) there would be replaced that no "
                              f"translation wrote ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): "
                              f"your own files? Choose another output folder (--overwrite would destroy them)")
        shown = [str(target) for target in existing[:3]]
        raise CdtsdeError(f"--output {output_dir}: {len(existing)} output file(s) exist already ({', '.join(shown)}"
                          f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace them")
    try:
        check_writable(output_dir)
    except OSError as exc:
        raise CdtsdeError(f"--output {output_dir}: cannot write there ({exc.strerror or exc})") from exc
    needed = sum(output_bytes(path, channels, samples) for path in inputs)
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise CdtsdeError(f"--output {output_dir}: {free / 2**20:.0f} MiB free, the translations need about "
                          f"{needed / 2**20:.0f} MiB")
    remove_stale_temporaries(output_dir, [target.name for target in planned])
    for stale in output_dir.glob(f"{SCENE_TEMPORARIES}*") if output_dir.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)  # the blended files of a killed `translate_scene`
    return inputs


def described(meta: ImageMeta, bands: tuple[str, ...] | list[str] | None) -> ImageMeta:
    """The input's meta naming the bands of an output (a TIFF's band descriptions), or naming none (`bands`
    None): the input's own names describe the input's bands, never the output's."""
    return replace(meta, extra={**meta.extra, "band_descriptions": list(bands or [])})


def output_dtype(meta: ImageMeta, mask: bool, channels: int) -> np.dtype:
    """The dtype a translation of `channels` channels of the input `meta` describes is written in: a mask's
    class indices as uint8; the input's integer dtype (a 16-bit RGB PNG, which PNG cannot hold, as 8-bit); a
    PNG/JPG of floats as 8-bit; float32 otherwise."""
    if mask:
        return np.dtype(np.uint8)
    if meta.dtype.kind in "ui" and not (meta.dtype == np.uint16 and channels > 1 and meta.format == "png"):
        return np.dtype(meta.dtype)
    if meta.format in ("png", "jpg"):
        return np.dtype(np.uint8)
    return np.dtype(np.float32)


def output_values(image: np.ndarray, meta: ImageMeta, mask: bool) -> np.ndarray:
    """A translation (H, W, C) in [0, 1] (a mask's: class indices), or any region of it, as it is written:
    one channel as (H, W), in `output_dtype`."""
    image = image[..., 0] if image.shape[-1] == 1 else image
    dtype = output_dtype(meta, mask, image.shape[-1] if image.ndim == 3 else 1)
    return from_unit(image, dtype) if dtype.kind in "ui" and not mask else image.astype(dtype)


def write_files(output_dir: Path, files: list[tuple[Path, Callable[[bool], Path]]], overwrite: bool) -> list[Path]:
    """Add the names of `files` to the folder's TRANSLATIONS_RECORD, then write each (`write(replace)`);
    without `overwrite` a file that exists by the time it is written (made since the outputs were checked)
    is left alone and named in a CdtsdeError."""
    output_dir.mkdir(parents=True, exist_ok=True)
    record_translations(output_dir, [path.name for path, _ in files])
    written = []
    for path, write in files:
        try:
            written.append(write(overwrite))
        except FileExistsError:
            raise CdtsdeError(f"{path}: appeared while translating; left as it is (pass --overwrite to replace "
                              f"existing files)") from None
    return written


STD_BANDS = ["standard deviation across samples"]


def translation_metas(meta: ImageMeta, band_names: tuple[str, ...] | None) -> tuple[ImageMeta, ImageMeta | None]:
    """The metas a translation of the input `meta` describes and its uncertainty map are written with: a
    TIFF's bands described by `band_names` (the target's as the checkpoint records them; no names without
    them) and the map's as the standard deviation; other formats the input's meta, the map none."""
    if meta.format != "tiff":
        return meta, None
    return described(meta, band_names), described(meta, STD_BANDS)


def write_translation(translation: Translation, meta: ImageMeta, output_dir: Path, mask: bool,
                      slice_axis: int = 2, overwrite: bool = True, band_names: tuple[str, ...] | None = None,
                      rename: tuple[str, str] | None = None) -> list[Path]:
    """Write the translation in the input's format (JPG inputs become lossless PNG; NIfTI slices back along
    `slice_axis`; a TIFF's bands described by `band_names`, the target's as the checkpoint records them, and
    by no names without them) and, if present, the uncertainty map as float32 TIFF `<stem>_std.tif`; the
    names join the folder's TRANSLATIONS_RECORD (`write_files`). The files are named for the input
    (`output_name`), or with `rename` for the target modality."""
    target = output_path(meta.path, output_dir, rename)
    image_meta, std_meta = translation_metas(meta, band_names)
    array = translation.mean
    is_volume = meta.format == "nifti" and len(meta.extra["header"].get_data_shape()) == 3
    if meta.format == "nifti":
        volume = np.moveaxis(array[..., 0], 0, slice_axis) if is_volume else array[0, ..., 0]
        files = [(target, volume.astype(np.uint8 if mask else np.float32), image_meta)]
    else:
        files = [(target, output_values(array[0], meta, mask), image_meta)]
    if translation.std is not None:
        std = translation.std[..., 0]
        std = np.moveaxis(std, 0, slice_axis) if is_volume else std[0]
        files.append((std_path(meta.path, output_dir, rename), std.astype(np.float32), std_meta))
    return write_files(output_dir, [(path, lambda replace, path=path, data=data, file_meta=file_meta:
                                     write_image(path, data, file_meta, replace=replace))
                                    for path, data, file_meta in files], overwrite)


class SceneWindows:
    """A 2-D image file as the model's sources (C_src, H, W) in [-1, 1], read by bands of rows: a slice
    `[:, rows, columns]` (what `cdtsde.tiling.tiled` takes of its input) reads and normalises its rows as
    `source_slices` and `adapt_channels` do the whole file, keeping the last band for the windows beside
    it. `rows`: the file's pixels as `cdtsde.imagefiles.opened_rows` gives them."""

    def __init__(self, rows, meta: ImageMeta, data: DataInfo):
        self.rows, self.meta, self.data = rows, meta, data
        if data.source_reading is None and meta.dtype.kind == "f":
            # checkpoints without a reading record scale float images by percentiles of the whole image:
            # normalised whole here, each band's reading then keeps the values (already in [0, 1])
            self.rows = source_slices(np.asarray(rows[:]), meta, data)[0]
        first = self.read(0, 1)
        self.shape = (first.shape[0], *rows.shape[:2])
        self.band = (0, 1, first)

    def read(self, top: int, bottom: int) -> torch.Tensor:
        raw = np.asarray(self.rows[top:bottom])
        check_finite(raw, self.meta.path, f" in rows {top}-{bottom - 1}")
        unit = source_slices(raw, self.meta, self.data)[0]
        if self.data.source_channels is not None:
            unit = adapt_channels(unit, self.data.source_channels, self.meta.path)
        return unit_to_model(torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1))

    def __getitem__(self, index: tuple[slice, slice, slice]) -> torch.Tensor:
        _, rows, columns = index
        if (rows.start, rows.stop) != self.band[:2]:
            self.band = (rows.start, rows.stop, self.read(rows.start, rows.stop))
        return self.band[2][:, :, columns]


@torch.no_grad()
def translate_scene(method: Method, path: Path, output_dir: Path, overwrite: bool = True, sampling=None,
                    seed: int = 0, samples: int = 1, tiling: Tiling | None = None, precision: str = "32",
                    progress: bool = False, rename: tuple[str, str] | None = None) -> tuple[list[Path], dict]:
    """`translate_file` of a 2-D image file window by window (`tiling`, default `Tiling()`) without holding
    the scene whole: read by rows (`SceneWindows` over `cdtsde.imagefiles.opened_rows`: TIFF and NPY from
    disk, a PNG/JPG decoded once), blended into float32 files (`cdtsde.tiling.RowFile`) in a temporary
    folder inside `output_dir` (removed however the translation ends) and written from them region by
    region (`write_scene`: a tiled TIFF; a PNG assembled in memory, 1-2 bytes a pixel and band). Equal to
    `translate_file`'s values, pixel for pixel; memory: the window batch, a few bands of rows of the
    scene's width (the input's, the blended sums', a row of TIFF tiles). A disk without room for the
    files (4 bytes a pixel and output channel) is refused before any work. The files are named and their bands
    described as `write_translation` does (`rename`, the checkpoint's target band names); a scene draws its
    windows' noise as a single image does (independent)."""
    import shutil
    import tempfile

    tiling = tiling or Tiling()
    diagnostics: dict[str, float] = {}
    with opened_rows(path) as (rows, meta):
        if meta.format == "nifti" or len(rows.shape) not in (2, 3):
            raise CdtsdeError(f"{path}: a scene is a 2-D image (H, W) or (H, W, C), got shape {rows.shape}")
        source = SceneWindows(rows, meta, method.data)
        _, height, width = source.shape
        window, overlap = tile_window(tiling, method, height, width)
        translate_windows = window_translator(method, sampling, seed, samples, tiling, window, precision, False,
                                              diagnostics, VolumeNoise("independent"))
        output_dir.mkdir(parents=True, exist_ok=True)
        # refused now rather than when the disk is full after hours of windows
        needed = 4 * height * width * (method.data.target_channels + (samples > 1))
        free = shutil.disk_usage(output_dir).free
        if free < needed:
            raise CdtsdeError(f"{path}: stitching this {height} x {width} scene needs about {needed / 2**20:.0f} MiB "
                              f"of temporary files in {output_dir}, {free / 2**20:.0f} MiB are free")
        with tempfile.TemporaryDirectory(prefix=SCENE_TEMPORARIES, dir=output_dir) as folder:
            files: list[RowFile] = []

            def storage(name: str, channels: int) -> RowFile:
                files.append(RowFile(Path(folder) / f"{name}.f32", (channels, height, width)))
                return files[-1]

            try:
                with window_bar(window_count(height, width, window, overlap), tiling, progress) as bar:
                    stitched = tiled(lambda windows, origins: translate_windows(0, windows, origins), source,
                                     window, overlap, tiling.batch, tiling.blend, bar.update, storage)
                written = write_scene(method, path, meta, output_dir, stitched, samples, overwrite, rename)
            finally:
                for file in files:
                    file.close()
    return written, diagnostics


def write_scene(method: Method, path: Path, meta: ImageMeta, output_dir: Path, stitched: dict[str, RowFile],
                samples: int, overwrite: bool, rename: tuple[str, str] | None = None) -> list[Path]:
    """Write `translate_scene`'s blended maps as `write_translation` writes a translation (named for the input,
    or with `rename` for the target modality; a TIFF's bands described by the checkpoint's target band names,
    by none without them), region by region."""
    mask = method.data.target_kind == "mask"
    images = stitched["images"]
    _, height, width = images.shape

    def translated(top: int, left: int, h: int, w: int) -> np.ndarray:
        unit = model_to_unit(images[:, top:top + h, left:left + w])
        if not torch.isfinite(unit).all():
            raise CdtsdeError(f"{path}: the translation holds NaN or infinite values (the model or this "
                              f"input is numerically broken); nothing written for it")
        unit = decode_classes(unit).astype(np.uint8)[..., None] if mask else unit.permute(1, 2, 0).numpy()
        return output_values(unit, meta, mask)

    channels = 1 if mask else images.shape[0]
    dtype = output_dtype(meta, mask, channels)
    shape = (height, width) if channels == 1 else (height, width, channels)
    target_meta, std_meta = translation_metas(meta, method.data.target_band_names)
    target, std_target = output_path(path, output_dir, rename), std_path(path, output_dir, rename)
    files = [(target, lambda replace: write_image_regions(target, shape, dtype, translated, target_meta, replace))]
    if samples > 1:
        std = stitched["std"]
        files.append((std_target, lambda replace: write_image_regions(
            std_target, (height, width), np.dtype(np.float32),
            lambda top, left, h, w: (std[0, top:top + h, left:left + w] / 2).numpy(),  # in [0, 1] units
            std_meta, replace)))
    return write_files(output_dir, files, overwrite)


def translate_file(method: Method, path: Path, output_dir: Path, overwrite: bool = True,
                   tiling: Tiling | None | str = "auto", rename: tuple[str, str] | None = None,
                   **options) -> tuple[list[Path], dict]:
    """Translate one file into `output_dir` (`options` as `translate_slices`; `overwrite` and `rename` as
    `write_translation`; `tiling` "auto": the method's `default_tiling`); a 2-D file that is tiled and larger
    than `tiling.on_disk_above` pixels by `translate_scene`. Returns the files written and the method's
    diagnostics."""
    tiling = options["tiling"] = default_tiling(method) if tiling == "auto" else tiling
    if tiling is not None and image_format(path) != "nifti":
        shape = image_shape(path)
        if tiling.applies(method, *shape[:2]) and shape[0] * shape[1] > tiling.on_disk_above:
            # window by window, the slice batch and the resizing to the training size do not apply (as in
            # translate_slices); a 2-D scene draws its noise as a single image does, whatever the volume noise
            scene_options = {key: value for key, value in options.items()
                             if key not in ("batch_size", "resize_to_training", "noise")}
            return translate_scene(method, path, output_dir, overwrite, rename=rename, **scene_options)
    array, meta = read_image(path, nifti_orientation=method.data.nifti_orientation)
    slices = source_slices(array, meta, method.data)
    if method.data.source_channels is not None:
        slices = adapt_channels(slices, method.data.source_channels, path)
    translation = translate_slices(method, slices, **options)
    if not np.isfinite(translation.mean).all():
        raise CdtsdeError(f"{path}: the translation holds NaN or infinite values (the model or this input is "
                          f"numerically broken); nothing written for it")
    written = write_translation(translation, meta, output_dir, mask=method.data.target_kind == "mask",
                                slice_axis=method.data.slice_axis, overwrite=overwrite,
                                band_names=method.data.target_band_names, rename=rename)
    return written, translation.diagnostics
