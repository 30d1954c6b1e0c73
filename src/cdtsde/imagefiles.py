"""Image files: reading and writing the formats users bring (PNG/JPG 8/16-bit, TIFF of any dtype and
band count, NPY, NIfTI slices and volumes), listing them and pairing them by name.

Arrays are returned as stored (native dtype), channels last for 2-D images (H, W) or (H, W, C); NIfTI
volumes in the closest canonical axis order (`canonical_axis_order`: left-right, posterior-anterior,
inferior-superior, read from the affine; each axis's direction as stored), written back in their own. Mapping values to [0, 1] is `cdtsde.intensity`'s job; every file is
written atomically (`cdtsde.atomic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")


# GeoTIFF's georeference (ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory with its
# double and ASCII parameters: CRS and pixel-to-map transform) and GDAL's metadata and nodata tags
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)


EXIF_ORIENTATION = 0x0112


@dataclass
class ImageMeta:
    """What is needed to write a result back in the input's format (NIfTI: affine, header and
    `extra["axis_order"]`, the volume's `canonical_axis_order`; GeoTIFF: `extra["geotiff_tags"]`, the
    georeference tags as (code, TIFF datatype, count, value))."""

    path: Path
    format: str  # "png", "jpg", "tiff", "npy" or "nifti"
    dtype: np.dtype
    affine: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def image_format(path: str | os.PathLike) -> str:
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    suffix = Path(name).suffix
    formats = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}
    if suffix not in formats:
        raise ImageReadError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    return formats[suffix]


def stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (`a.nii.gz` -> `a`), used to pair files across folders."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name. Hidden files are left out: macOS `._name.png`
    metadata and half-written temporaries are not images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a directory")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)
    )


def list_images_under(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Image files in `folder` and every (non-hidden) folder below it whose names match `pattern` (a glob,
    e.g. "*_t1.nii.gz"), sorted by path: one folder per subject, as BraTS and IXI keep them."""
    import fnmatch

    folder = Path(folder)
    folders = [folder, *(p for p in folder.rglob("*") if p.is_dir() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))]
    return sorted(p for d in folders for p in list_images(d) if fnmatch.fnmatch(p.name, pattern))


PALETTE_READINGS = ("colours", "indices")


def palette_mode(img) -> str:
    """The mode a palette image is read in as colours: RGBA where the palette has transparency, else RGB."""
    return "RGBA" if "transparency" in img.info else "RGB"


def canonical_axis_order(affine: np.ndarray) -> tuple[int, int, int]:
    """The voxel axes of a volume ordered by the world axis each runs closest to (x: left-right, y:
    posterior-anterior, z: inferior-superior; nibabel's `io_orientation`, the axis permutation of
    `as_closest_canonical` without its flips), so that axis 2 is the axial axis whatever order the file
    stores: BraTS (LPS) and RAS volumes are kept as they are, a volume stored superior-inferior first is not
    cut into sagittal slices where axial ones were meant. (0, 1, 2) for an affine without a clear order."""
    import nibabel as nib

    world = nib.orientations.io_orientation(affine)[:, 0]
    if np.isnan(world).any():
        return (0, 1, 2)
    return tuple(int(axis) for axis in np.argsort(world))


def read_image(path: str | os.PathLike, palette: str = "colours") -> tuple[np.ndarray, ImageMeta]:
    """Read one image file. PNG/JPG are turned upright by their EXIF orientation (as a viewer shows them);
    a palette PNG gives its colours, or with `palette="indices"` its palette indices (a class-index mask's
    values). Raises ImageReadError naming the file if it is missing, truncated, of an unsupported type, or
    holds NaN/inf values."""
    if palette not in PALETTE_READINGS:
        raise ValueError(f"palette must be one of {PALETTE_READINGS}, got {palette!r}")
    path = Path(path)
    fmt = image_format(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    affine = None
    extra: dict = {}
    try:
        if fmt in ("png", "jpg"):
            from PIL import Image, ImageOps

            with Image.open(path) as opened:
                opened.load()
                upright = opened.getexif().get(EXIF_ORIENTATION, 1) in (1, None)
                img = opened if upright else ImageOps.exif_transpose(opened)
                if img.mode == "P":
                    array = np.asarray(img if palette == "indices" else img.convert(palette_mode(img)))
                elif img.mode in ("I;16", "I;16B", "I;16L"):
                    array = np.asarray(img).astype(np.uint16)
                elif img.mode == "I":
                    array = np.asarray(img)
                    if array.min() >= 0 and array.max() < 2**16:
                        array = array.astype(np.uint16)
                elif img.mode in ("L", "RGB", "RGBA", "F"):
                    array = np.asarray(img)
                elif img.mode == "1":
                    # binary PNGs are masks: keep them single-channel (0/255), not RGB
                    array = np.asarray(img.convert("L"))
                else:
                    array = np.asarray(img.convert("RGB"))
        elif fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                array = tif.asarray()
                geo = [(tag.code, int(tag.dtype), tag.count, tag.value) for tag in tif.pages[0].tags.values()
                       if tag.code in GEOTIFF_TAGS]
            if geo:
                extra["geotiff_tags"] = geo
            # tifffile gives (bands, H, W) for planar multi-band files: move bands last
            if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 16:
                array = np.moveaxis(array, 0, -1)
        elif fmt == "npy":
            array = np.load(path, allow_pickle=False)
        else:
            import nibabel as nib

            img = nib.load(str(path))
            array = np.asanyarray(img.dataobj)
            affine = img.affine
            extra["header"] = img.header
            if array.ndim == 3:
                extra["axis_order"] = canonical_axis_order(affine)
                array = np.transpose(array, extra["axis_order"])
    except ImageReadError:
        raise
    except Exception as exc:  # every reader has its own exception types; the user needs the file name
        raise ImageReadError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc
    array = np.ascontiguousarray(array)
    if array.size == 0:
        raise ImageReadError(f"{path}: empty image")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageReadError(f"{path}: {bad} NaN or infinite values")
    return array, ImageMeta(path=path, format=fmt, dtype=array.dtype, affine=affine, extra=extra)


def header_orientation(img) -> int:
    """The EXIF orientation of an opened PNG/JPG without decoding its pixels (JPEG: its APP1 segment; PNG: an
    eXIf chunk before the pixel data, where Pillow writes it), 1 (upright) without one."""
    from PIL import Image

    if img.format == "PNG":
        raw = img.info.get("exif")
        if raw is None:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(EXIF_ORIENTATION, 1)
    return img.getexif().get(EXIF_ORIENTATION, 1)


def image_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """Shape `read_image` would return, from the file header only (cheap enough to index large
    datasets). Raises ImageReadError naming the file if it is missing or its header is unreadable."""
    path = Path(path)
    fmt = image_format(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        if fmt in ("png", "jpg"):
            from PIL import Image

            with Image.open(path) as img:
                # mirrors read_image: single-band modes stay 2-D, RGBA (and a palette with transparency) keeps
                # alpha, palettes and the rest become RGB; EXIF orientations 5-8 turn the image by 90 degrees
                mode = palette_mode(img) if img.mode == "P" else img.mode
                bands = 1 if mode in ("1", "L", "I", "F", "I;16", "I;16B", "I;16L") else 3
                bands = 4 if mode == "RGBA" else bands
                height, width = img.height, img.width
                if header_orientation(img) in (5, 6, 7, 8):
                    height, width = width, height
                return (height, width) if bands == 1 else (height, width, bands)
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.series[0].shape)
            if len(shape) == 3 and shape[0] < min(shape[1:]) and shape[0] <= 16:
                shape = (*shape[1:], shape[0])
            return shape
        if fmt == "npy":
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        import nibabel as nib

        img = nib.load(str(path))
        shape = tuple(img.shape)
        return tuple(shape[axis] for axis in canonical_axis_order(img.affine)) if len(shape) == 3 else shape
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc


def write_image(path: str | os.PathLike, array: np.ndarray, meta: ImageMeta | None = None,
                replace: bool = True) -> Path:
    """Write `array` (native dtype, channels last; NIfTI: volume axes) to `path`, atomically. For NIfTI the
    affine and header of `meta` are kept, for TIFF its georeference tags (an array of the input's size).
    With `replace` False an existing `path` (one that appeared while the array was written included) is left
    alone and FileExistsError raised."""
    path = Path(path)
    fmt = image_format(path)
    array = np.asarray(array)
    # nibabel picks gzip from the file name: the temporary ends as the file does
    suffix = (".nii.gz" if str(path).lower().endswith(".gz") else ".nii") if fmt == "nifti" else ""
    with atomic_path(path, replace=replace, suffix=suffix) as tmp:
        if fmt in ("png", "jpg"):
            from PIL import Image

            if array.dtype == np.uint16:
                if array.ndim != 2:
                    raise ImageReadError(f"{path}: 16-bit PNG must be single-channel, got shape {array.shape}")
                img = Image.fromarray(array)
            else:
                img = Image.fromarray(array.astype(np.uint8) if array.dtype != np.uint8 else array)
            img.save(tmp, format="PNG" if fmt == "png" else "JPEG", **({"quality": 95} if fmt == "jpg" else {}))
        elif fmt == "tiff":
            import tifffile

            # the input's georeference (CRS, pixel-to-map transform, nodata), valid as written: the output
            # has the input's height and width
            geo = [(code, dtype, count, value, True) for code, dtype, count, value in
                   (meta.extra.get("geotiff_tags", []) if meta is not None else [])]
            if array.ndim == 3 and not (array.shape[-1] == 3 and array.dtype in (np.uint8, np.uint16)):
                # multi-band data as separate planes (the GeoTIFF convention), which read_image moves back last
                tifffile.imwrite(tmp, np.moveaxis(array, -1, 0), photometric="minisblack", planarconfig="separate",
                                 extratags=geo)
            else:
                tifffile.imwrite(tmp, array, extratags=geo)
        elif fmt == "npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            import nibabel as nib

            affine = meta.affine if meta is not None and meta.affine is not None else np.eye(4)
            header = meta.extra.get("header") if meta is not None else None
            order = meta.extra.get("axis_order") if meta is not None else None
            if order is not None and array.ndim == len(order):  # back to the input's own voxel order
                array = np.transpose(array, np.argsort(order))
            img = nib.Nifti1Image(array, affine, header=header)
            if header is not None:
                img.set_data_dtype(array.dtype)
            nib.save(img, str(tmp))
    return path
