"""Seeded generators of (source, target) pairs, shipped with the package so the demo and the tests need
no download. Pair i depends only on (seed, i), never on n.

- `mri-phantom`: tissue maps (CSF, grey matter, white matter, lesions) rendered as T1w (source) and T2w
  (target) by the spin-echo equation S = PD (1 - exp(-TR/T1)) exp(-TE/T2), with a bias field and Rician
  noise. The mapping T1w -> T2w is set by tissue type almost everywhere: low spatial heterogeneity.
- `sar-landcover`: a land-cover map rendered as an optical RGB image (target) and a speckled SAR image in
  dB (source) from per-class backscatter and multiplicative gamma speckle: moderate heterogeneity.
- `el-cell`: solar-cell EL images (source) with busbars, fingers, grain texture, cracks, cross cracks and
  dark areas, and their class masks (target): the mapping is local (thin cracks among similar grain
  edges), high heterogeneity.

`heterogeneity` in [0, 1] adds a smooth random field that changes the source->target mapping across the
image: tissue T1/T2 (MRI), per-class backscatter (SAR), defect contrast (EL). `mapping_heterogeneity`
measures the result (at 0.5 and 64 px: about 0.06 for MRI, 0.22 for EL, 0.58 for speckled SAR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from ..atomic import atomic_path
from ..errors import CdtsdeError
from ..imagefiles import write_image
from .masks import PV_EL_CLASSES, decode_classes

# 1.5 T tissue constants (T1, T2 in ms; PD relative), BrainWeb / Collins et al. 1998; lesion: MS plaque
TISSUES = {
    "csf": (2569.0, 329.0, 1.0),
    "gm": (833.0, 83.0, 0.86),
    "wm": (500.0, 70.0, 0.77),
    "lesion": (1100.0, 120.0, 0.85),
}
TISSUE_ORDER = ("background", "csf", "gm", "wm", "lesion")
SEQUENCES = {"t1w": (500.0, 15.0), "t2w": (4000.0, 100.0), "pdw": (4000.0, 15.0)}  # (TR, TE) in ms

LANDCOVER = ("water", "forest", "cropland", "urban", "bare soil")
LANDCOVER_RGB = np.array(
    [[0.10, 0.20, 0.35], [0.13, 0.35, 0.15], [0.55, 0.60, 0.30], [0.60, 0.58, 0.55], [0.65, 0.55, 0.40]]
)
LANDCOVER_BACKSCATTER = np.array([0.005, 0.12, 0.05, 0.6, 0.03])  # linear sigma0
SAR_DB_RANGE = (-25.0, 0.0)
SPECKLE_LOOKS = 4

TASKS = ("mri-phantom", "el-cell", "sar-landcover")


def smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length `sigma` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def spin_echo(t1, t2, pd, tr: float, te: float):
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def mri_tissue_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """Labels (indices into TISSUE_ORDER): an irregular brain outline with a CSF rim, a wavy cortical grey
    matter band, white matter inside, ventricles and a few lesions."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2.0 - 1.0
    aspect = rng.uniform(0.8, 0.95)
    radius = np.sqrt((xx / aspect) ** 2 + (yy / 0.95) ** 2) * (1.0 + 0.06 * smooth_field(rng, size, size / 8))
    labels = np.zeros((size, size), np.int64)
    labels[radius < 0.95] = 1
    labels[radius < 0.88] = 2
    labels[radius < 0.88 - 0.18 * (1.0 + 0.5 * smooth_field(rng, size, size / 16))] = 3
    ventricles = ((np.abs(xx) - 0.15) / 0.08) ** 2 + ((yy + 0.05) / 0.25) ** 2 < 1.0 + 0.5 * smooth_field(
        rng, size, size / 12
    )
    labels[ventricles & (radius < 0.6)] = 1
    for _ in range(rng.integers(0, 4)):
        cy, cx, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.04, 0.09)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & (labels == 3)] = 4
    return labels


def render_mri(rng, labels, sequence: str, heterogeneity: float) -> np.ndarray:
    size = labels.shape[0]
    constants = np.array([(1.0, 1.0, 0.0)] + [TISSUES[name] for name in TISSUE_ORDER[1:]], np.float32)
    t1, t2, pd = (constants[labels, k] for k in range(3))
    t1 = t1 * (1.0 + 0.3 * heterogeneity * smooth_field(rng, size, size / 6)).clip(0.3)
    t2 = t2 * (1.0 + 0.3 * heterogeneity * smooth_field(rng, size, size / 6)).clip(0.3)
    signal = spin_echo(t1, t2, pd, *SEQUENCES[sequence])
    signal *= np.exp(0.1 * smooth_field(rng, size, size / 3))  # coil bias field
    signal /= float(signal.max())
    sigma = 0.02
    noisy = np.hypot(
        signal + sigma * rng.standard_normal(signal.shape), sigma * rng.standard_normal(signal.shape)
    )
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def mri_phantom(rng, size, heterogeneity):
    labels = mri_tissue_map(rng, size)
    return render_mri(rng, labels, "t1w", heterogeneity)[..., None], render_mri(
        rng, labels, "t2w", heterogeneity
    )[..., None]


def draw_polyline(rng, size, start, steps, angle, wiggle) -> np.ndarray:
    """Boolean mask of a one-pixel random-walk line (a crack)."""
    mask = np.zeros((size, size), bool)
    y, x = start
    for _ in range(steps):
        angle += rng.normal(0.0, wiggle)
        y, x = y + np.sin(angle), x + np.cos(angle)
        if not (0 <= y < size and 0 <= x < size):
            break
        mask[int(y), int(x)] = True
    return mask


def el_cell(rng, size, heterogeneity):
    """(EL image HxWx1, one-hot mask HxWx5) with classes as in pv-el-cracks."""
    seeds = rng.uniform(0, size, (max(8, size // 4), 2))
    yy, xx = np.mgrid[0:size, 0:size]
    grains = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    image = rng.uniform(0.5, 0.8, len(seeds))[grains].astype(np.float32)
    image *= 1.0 + 0.05 * smooth_field(rng, size, 1.5)
    labels = np.zeros((size, size), np.int64)
    pitch = max(4, size // 16)
    image[:, np.arange(rng.integers(0, pitch), size, pitch)] *= 0.85  # fingers (unlabelled)
    # defect contrast varies across the cell with heterogeneity: faint cracks in one region, stark in another
    contrast = np.clip(1.0 + heterogeneity * 0.8 * smooth_field(rng, size, size / 4), 0.2, 1.8)
    if rng.random() < 0.5:
        blob = smooth_field(rng, size, size / 8) > rng.uniform(1.2, 1.8)
        labels[blob] = 1
        image[blob] *= np.clip(1.0 - 0.55 * contrast[blob], 0.05, 1.0)
    for _ in range(rng.integers(1, 4)):
        crack = draw_polyline(rng, size, rng.uniform(0, size, 2), 2 * size, rng.uniform(0, 2 * np.pi), 0.15)
        labels[crack] = 3
        image[crack] *= np.clip(1.0 - 0.4 * contrast[crack], 0.05, 1.0)
    if rng.random() < 0.4:
        centre, reach = rng.uniform(size * 0.25, size * 0.75, 2), size // 4
        angle = rng.uniform(0, np.pi)
        cross = np.zeros((size, size), bool)
        for direction in (angle, angle + np.pi, angle + np.pi / 2, angle + 3 * np.pi / 2):
            cross |= draw_polyline(rng, size, centre, reach, direction, 0.05)
        labels[cross] = 2
        image[cross] *= np.clip(1.0 - 0.4 * contrast[cross], 0.05, 1.0)
    width = max(1, size // 50)
    for position in np.linspace(0, size, 4)[1:-1].astype(int):  # two busbars, drawn over everything
        image[:, position - width : position + width] = 0.1
        labels[:, position - width : position + width] = 4
    image += 0.02 * rng.standard_normal(image.shape).astype(np.float32)
    one_hot = (labels[..., None] == np.arange(len(PV_EL_CLASSES))).astype(np.float32)
    return np.clip(image, 0.0, 1.0)[..., None], one_hot


def sar_landcover(rng, size, heterogeneity):
    """(SAR HxWx1 in scaled dB, optical HxWx3)."""
    fields = np.stack([smooth_field(rng, size, size / 8) for _ in LANDCOVER])
    labels = np.argmax(fields, axis=0)
    optical = LANDCOVER_RGB[labels] * (1.0 + 0.08 * smooth_field(rng, size, 1.0))[..., None]
    backscatter = LANDCOVER_BACKSCATTER[labels] * np.exp(
        heterogeneity * 1.2 * smooth_field(rng, size, size / 4)
    )
    speckled = backscatter * rng.gamma(SPECKLE_LOOKS, 1.0 / SPECKLE_LOOKS, (size, size))
    decibels = 10.0 * np.log10(np.maximum(speckled, 1e-6))
    low, high = SAR_DB_RANGE
    sar = np.clip((decibels - low) / (high - low), 0.0, 1.0)
    return sar[..., None].astype(np.float32), np.clip(optical, 0.0, 1.0).astype(np.float32)


GENERATORS = {"mri-phantom": mri_phantom, "el-cell": el_cell, "sar-landcover": sar_landcover}


def mapping_heterogeneity(source: np.ndarray, target: np.ndarray, bins: int = 32) -> float:
    """Share of the target's variance (HxWxC, summed over channels) that the best global mapping of the
    source's intensity (mean over its channels, in `bins` levels) leaves unexplained: 0 when one
    intensity mapping holds everywhere, towards 1 when the mapping changes from place to place."""
    levels = np.minimum((source.mean(axis=-1) * bins).astype(np.int64), bins - 1).ravel()
    values = target.reshape(levels.size, -1).astype(np.float64)
    counts = np.maximum(np.bincount(levels, minlength=bins), 1)[:, None]
    level_means = (
        np.stack([np.bincount(levels, values[:, c], minlength=bins) for c in range(values.shape[1])], 1)
        / counts
    )
    total = ((values - values.mean(axis=0)) ** 2).sum()
    return float(((values - level_means[levels]) ** 2).sum() / total) if total > 0 else 0.0


def make_pairs(task: str, n: int, size: int, seed: int, heterogeneity: float = 0.5):
    """n pairs (source float32 HxWxC in [0, 1], target float32 HxWxC in [0, 1]). For `el-cell` the target
    is one-hot, one channel per class of PV_EL_CLASSES (argmax gives the class indices)."""
    if task not in GENERATORS:
        raise CdtsdeError(f"unknown procedural task {task!r}; choose from {', '.join(TASKS)}")
    if not 0.0 <= heterogeneity <= 1.0:
        raise CdtsdeError(f"heterogeneity must be in [0, 1], got {heterogeneity}")
    if size < 16:
        raise CdtsdeError(f"size must be at least 16, got {size}")
    return [GENERATORS[task](np.random.default_rng([seed, index]), size, heterogeneity) for index in range(n)]


def write_paired_folder(task: str, n: int, size: int, seed: int, output, heterogeneity: float = 0.5) -> Path:
    """Write `output/source/NNNNN.png` and `output/target/NNNNN.png` (16-bit for one-channel images,
    8-bit RGB otherwise, class-index PNG for masks) and `output/dataset.yaml`, a spec that reads them back."""
    output = Path(output)
    spec = {"kind": "paired-folder", "root": "."}
    for index, (source, target) in enumerate(make_pairs(task, n, size, seed, heterogeneity)):
        name = f"{index:05d}.png"
        write_image(output / "source" / name, _to_png_array(source))
        if task == "el-cell":
            write_image(output / "target" / name, decode_classes(np.moveaxis(target, -1, 0)).astype(np.uint8))
        else:
            write_image(output / "target" / name, _to_png_array(target))
    if task == "el-cell":
        spec["classes"] = list(PV_EL_CLASSES.values())
    with atomic_path(output / "dataset.yaml") as tmp:
        tmp.write_text(
            f"# {n} {task} pairs, size {size}, seed {seed}, heterogeneity {heterogeneity}\n"
            + yaml.safe_dump(spec)
        )
    return output


def _to_png_array(image: np.ndarray) -> np.ndarray:
    if image.shape[-1] == 1:
        return np.round(image[..., 0] * 65535).astype(np.uint16)
    return np.round(image * 255).astype(np.uint8)
