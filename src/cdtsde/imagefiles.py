"""Image files: reading and writing the formats users bring (PNG/JPG 8/16-bit, TIFF of any dtype and
band count, NPY, NIfTI slices and volumes), listing them and pairing them by name.

Arrays are returned as stored (native dtype), channels last for 2-D images (H, W) or (H, W, C); NIfTI
volumes in the closest canonical RAS orientation (`canonical_orientation`, nibabel's `as_closest_canonical`:
axes ordered and flipped to run right, anterior, superior, read from the affine), written back in the file's
own voxel order, directions and affine. GeoTIFFs
keep their georeference; their nodata pixels are filled to be read and marked again when written
(`filled_nodata`, `geotiff_extratags`). Mapping values to [0, 1] is `cdtsde.intensity`'s job; every file is
written atomically (`cdtsde.atomic`).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".nii", ".nii.gz")


# GeoTIFF's georeference (ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory with its
# double and ASCII parameters: CRS and pixel-to-map transform) and GDAL's metadata and nodata tags
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
GDAL_METADATA, GDAL_NODATA = 42112, 42113


EXIF_ORIENTATION = 0x0112


@dataclass
class ImageMeta:
    """What is needed to write a result back in the input's format (NIfTI: affine, header and
    `extra["orientation"]`, the volume's `canonical_orientation`; GeoTIFF: `extra["geotiff_tags"]`, the
    georeference tags as (code, TIFF datatype, count, value), `extra["nodata_mask"]`, the (H, W) pixels its
    GDAL_NODATA value marks, and, set by the writer's caller, `extra["band_descriptions"]`, one name per band
    of the array written)."""

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


def renamed(name: str, rename: tuple[str, str]) -> str:
    """A file name `name` (a stem) ending in rename[0] with that ending replaced by rename[1]: the name of an
    input modality's file as the target modality's (BraTS "_t1" -> "_t2", IXI "-T1" -> "-T2"); the caller
    checks that it ends so."""
    ending, replacement = rename
    return name[:len(name) - len(ending)] + replacement


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted by name. Hidden files are left out: macOS `._name.png`
    metadata and half-written temporaries are not images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a directory")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES)
    )


def folders_below(folder: str | os.PathLike):
    """`folder` and every non-hidden folder below it, top down. Symbolic links to folders are followed (a
    data root whose subject folders link elsewhere is common; `Path.rglob` does not follow them before
    Python 3.13) and each real folder is visited once, so a link cycle or a second link to one folder
    neither loops nor counts its files twice."""
    seen = set()
    for here, subfolders, _ in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        yield Path(here)


def list_images_under(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Image files in `folder` and every (non-hidden) folder below it whose names match `pattern` (a glob,
    e.g. "*_t1.nii.gz"), sorted by path: one folder per subject, as BraTS and IXI keep them."""
    import fnmatch

    return sorted(p for d in folders_below(folder) for p in list_images(d) if fnmatch.fnmatch(p.name, pattern))


PALETTE_READINGS = ("colours", "indices")
NIFTI_ORIENTATIONS = ("ras", "axes")


def palette_mode(img) -> str:
    """The mode a palette image is read in as colours: RGBA where the palette has transparency, else RGB."""
    return "RGBA" if "transparency" in img.info else "RGB"


def canonical_orientation(affine: np.ndarray, flips: bool = True) -> np.ndarray:
    """nibabel's orientation (`io_orientation`: one row per voxel axis, the world axis it runs closest to and
    its direction) taking a volume to its closest canonical RAS order, as `as_closest_canonical` does: axis 0
    runs to the right, 1 anterior, 2 superior, so that a BraTS (LPS) volume, an RAS one and one stored
    superior-inferior first are sliced alike and slice_axis 2 is axial for every file. The identity for an
    affine without a clear orientation. Without `flips` the axes are only reordered, each keeping the direction
    it is stored in (the reading of checkpoints written before volumes were read in RAS: NIFTI_ORIENTATIONS)."""
    import nibabel as nib

    orientation = nib.orientations.io_orientation(affine)
    if np.isnan(orientation).any():
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    if not flips:
        orientation[:, 1] = 1
    return orientation


def inverse_orientation(orientation: np.ndarray) -> np.ndarray:
    """The orientation taking a volume in canonical order (`canonical_orientation`) back to the voxel order
    and directions the file stores: canonical axis j is the file's axis i, flipped back as it was flipped."""
    inverse = np.empty_like(orientation)
    for axis, (canonical, flip) in enumerate(orientation):
        inverse[int(canonical)] = (axis, flip)
    return inverse


def canonical_shape(shape: tuple[int, ...], orientation: np.ndarray) -> tuple[int, ...]:
    """The shape of a volume of `shape` put in canonical order by `orientation`."""
    canonical = [0] * len(shape)
    for axis, (target, _) in enumerate(orientation):
        canonical[int(target)] = shape[axis]
    return tuple(canonical)


def read_image(path: str | os.PathLike, palette: str = "colours",
               nifti_orientation: str = "ras") -> tuple[np.ndarray, ImageMeta]:
    """Read one image file. PNG/JPG are turned upright by their EXIF orientation (as a viewer shows them);
    a palette PNG gives its colours, or with `palette="indices"` its palette indices (a class-index mask's
    values). A NIfTI volume comes in closest-canonical RAS, or with `nifti_orientation="axes"` with its axes
    reordered but each in its stored direction (how checkpoints written before RAS reading saw volumes).
    Raises ImageReadError naming the file if it is missing, truncated, of an unsupported type, or holds
    NaN/inf values."""
    if palette not in PALETTE_READINGS:
        raise ValueError(f"palette must be one of {PALETTE_READINGS}, got {palette!r}")
    if nifti_orientation not in NIFTI_ORIENTATIONS:
        raise ValueError(f"nifti_orientation must be one of {NIFTI_ORIENTATIONS}, got {nifti_orientation!r}")
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
                geo = page_geotiff_tags(tif.pages[0])
            if geo:
                extra["geotiff_tags"] = geo
            # tifffile gives (bands, H, W) for planar multi-band files: move bands last
            if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 16:
                array = np.moveaxis(array, 0, -1)
            nodata = gdal_nodata(geo)
            if nodata is not None:
                array = filled_nodata(array, nodata, path, extra)
        elif fmt == "npy":
            array = np.load(path, allow_pickle=False)
        else:
            import nibabel as nib

            img = nib.load(str(path))
            array = np.asanyarray(img.dataobj)
            affine = img.affine
            extra["header"] = img.header
            if array.ndim == 3:
                extra["orientation"] = canonical_orientation(affine, flips=nifti_orientation == "ras")
                array = nib.orientations.apply_orientation(array, extra["orientation"])
    except ImageReadError:
        raise
    except Exception as exc:  # every reader has its own exception types; the user needs the file name
        raise ImageReadError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc
    array = np.ascontiguousarray(array)
    if array.size == 0:
        raise ImageReadError(f"{path}: empty image")
    check_finite(array, path)
    return array, ImageMeta(path=path, format=fmt, dtype=array.dtype, affine=affine, extra=extra)


def check_finite(array: np.ndarray, path: Path, where: str = "") -> None:
    """Refuse float pixels that are NaN or infinite, naming the file (and `where` in it) and their count."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImageReadError(f"{path}: {bad} NaN or infinite values{where}")


def page_geotiff_tags(page) -> list[tuple]:
    """A TIFF page's georeferencing tags (GEOTIFF_TAGS) as (code, dtype, count, value), as written back."""
    return [(tag.code, int(tag.dtype), tag.count, tag.value) for tag in page.tags.values() if tag.code in GEOTIFF_TAGS]


def gdal_nodata(tags: list[tuple]) -> float | None:
    """The value a GeoTIFF's GDAL_NODATA tag (ASCII, e.g. "-9999" or "nan") marks nodata pixels with; None
    without the tag or with one that is no number."""
    text = next((str(value) for code, _, _, value in tags if code == GDAL_NODATA), None)
    try:
        return float(text.strip().rstrip("\x00")) if text is not None else None
    except ValueError:
        return None


def nodata_pixels(array: np.ndarray, nodata: float) -> np.ndarray:
    """(H, W): the pixels where any band holds `nodata` (NaN matches NaN)."""
    hits = np.isnan(array) if np.isnan(nodata) else array == nodata
    return hits.any(axis=-1) if array.ndim == 3 else hits


def filled_nodata(array: np.ndarray, nodata: float, path: Path, extra: dict) -> np.ndarray:
    """`array` with its nodata pixels (`nodata_pixels`) filled, band by band, with the band's mean over the
    valid pixels (in the file's own units, so every reader scales it as a valid value: neutral for the
    network, and no -9999 or NaN stretches a value range); the pixels are recorded as `extra["nodata_mask"]`
    for the writer to mark again, and reported in a warning naming the file and their count. A file with no
    valid pixel is refused."""
    mask = nodata_pixels(array, nodata)
    count = int(mask.sum())
    if count == 0:
        return array
    if count == mask.size:
        raise ImageReadError(f"{path}: every pixel is nodata (GDAL_NODATA {nodata:g}); nothing to read")
    warnings.warn(f"{path}: {count} nodata pixel(s) (GDAL_NODATA {nodata:g}) filled with each band's valid mean "
                  f"to be read; a translation writes them back as nodata", stacklevel=3)
    extra["nodata_mask"] = mask
    filled = array.copy()
    bands = filled[..., None] if filled.ndim == 2 else filled  # a view: filling it fills `filled`
    for band in range(bands.shape[-1]):
        mean = bands[~mask, band].astype(np.float64).mean()
        bands[mask, band] = np.round(mean) if array.dtype.kind in "ui" else mean
    return filled


def band_metadata(original: str | None, descriptions: list[str]) -> str:
    """GDAL_METADATA XML naming each band (`<Item name="DESCRIPTION" sample="i" role="description">`, sample
    0 being GDAL's band 1), keeping the dataset-wide items of the input's `original` XML and leaving out its
    per-band items: they describe the input's bands, not the ones written."""
    import xml.etree.ElementTree as ET

    root = ET.Element("GDALMetadata")
    if original:
        try:
            root.extend(item for item in ET.fromstring(original.rstrip("\x00")) if "sample" not in item.attrib)
        except ET.ParseError:
            pass  # an unreadable input metadata block holds nothing to keep
    for sample, description in enumerate(descriptions):
        ET.SubElement(root, "Item", name="DESCRIPTION", sample=str(sample), role="description").text = description
    return ET.tostring(root, encoding="unicode")


def described_bands(metadata: str) -> dict[int, str]:
    """{band index (GDAL's band 1 is 0): its description} from GDAL_METADATA XML; empty for XML that cannot
    be read."""
    import xml.etree.ElementTree as ET

    try:
        items = ET.fromstring(metadata.rstrip("\x00"))
    except ET.ParseError:
        return {}
    return {int(item.get("sample")): item.text or "" for item in items
            if item.get("role") == "description" and str(item.get("sample", "")).isdigit()}


def band_descriptions(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The name of each band of a TIFF from its header (GDAL's band descriptions in GDAL_METADATA, e.g. "B4"
    or "VV"); None for other formats and for a TIFF that does not name every band. Raises ImageReadError
    naming the file if its header is unreadable."""
    path = Path(path)
    if image_format(path) != "tiff":
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(GDAL_METADATA)
            metadata = None if tag is None else str(tag.value)
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read as tiff ({type(exc).__name__}: {exc})") from exc
    if metadata is None:
        return None
    shape = image_shape(path)
    names = described_bands(metadata)
    bands = shape[-1] if len(shape) == 3 else 1
    return tuple(names[band] for band in range(bands)) if set(names) == set(range(bands)) else None


def dtype_holds(dtype: np.dtype, value: float) -> bool:
    """Whether `value` is exactly one of `dtype`'s values (NaN and infinities: of float dtypes)."""
    if dtype.kind == "f":
        return not np.isfinite(value) or abs(value) <= np.finfo(dtype).max
    if dtype.kind in "ui":
        return float(value).is_integer() and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max
    return False


def geotiff_extratags(array: np.ndarray, meta: ImageMeta | None, path: Path) -> tuple[np.ndarray, list[tuple]]:
    """The array with the input's nodata pixels (`meta.extra["nodata_mask"]`) set to its GDAL_NODATA value,
    and tifffile's extratags (`geotiff_tags`)."""
    tags, nodata = geotiff_tags(meta, array.shape, array.dtype, path)
    if nodata is not None:
        array = array.copy()
        array[meta.extra["nodata_mask"]] = nodata
    return array, tags


def geotiff_tags(meta: ImageMeta | None, shape: tuple[int, ...], dtype: np.dtype, path: Path
                 ) -> tuple[list[tuple], float | None]:
    """tifffile's extratags for an image of `shape` (channels last) and `dtype`: the input's georeference and
    nodata tags, valid as written (the output has the input's height and width), and GDAL_METADATA with
    `meta.extra["band_descriptions"]`; and the nodata value to mark the input's nodata pixels with
    (`meta.extra["nodata_mask"]`), None where none are to be marked. A nodata value the dtype cannot hold
    (-9999 in a uint8 mask) is left out, with a warning."""
    if meta is None:
        return [], None
    tags = [(code, tag_type, count, value, True)
            for code, tag_type, count, value in meta.extra.get("geotiff_tags", []) if code != GDAL_METADATA]
    nodata = gdal_nodata(meta.extra.get("geotiff_tags", []))
    mask = meta.extra.get("nodata_mask")
    marked = None
    if nodata is not None and mask is not None and mask.shape == tuple(shape[:2]):
        if not dtype_holds(np.dtype(dtype), nodata):
            warnings.warn(f"{path}: nodata value {nodata:g} does not fit {np.dtype(dtype)}; nodata left unmarked",
                          stacklevel=4)
            tags = [tag for tag in tags if tag[0] != GDAL_NODATA]
        else:
            marked = nodata
    descriptions = list(meta.extra.get("band_descriptions", []))
    bands = shape[-1] if len(shape) == 3 else 1
    if descriptions and len(descriptions) != bands:
        raise ValueError(f"{len(descriptions)} band description(s) for an image of {bands} band(s)")
    original = next((value for code, _, _, value in meta.extra.get("geotiff_tags", []) if code == GDAL_METADATA), None)
    if original is not None or descriptions:
        tags.append((GDAL_METADATA, 2, 0, band_metadata(original, descriptions), True))
    return tags, marked


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
        return canonical_shape(shape, canonical_orientation(img.affine)) if len(shape) == 3 else shape
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc


def write_image(path: str | os.PathLike, array: np.ndarray, meta: ImageMeta | None = None,
                replace: bool = True) -> Path:
    """Write `array` (native dtype, channels last; NIfTI: volume axes) to `path`, atomically. For NIfTI the
    affine and header of `meta` are kept, for TIFF its georeference and nodata tags and nodata pixels, and the
    band descriptions it is given (`geotiff_extratags`; an array of the input's size).
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

            array, geo = geotiff_extratags(array, meta, path)
            if planar_tiff(array.shape, array.dtype):
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
            orientation = meta.extra.get("orientation") if meta is not None else None
            if orientation is not None and array.ndim == len(orientation):  # the input's own voxel order
                array = nib.orientations.apply_orientation(array, inverse_orientation(orientation))
            img = nib.Nifti1Image(array, affine, header=header)
            if header is not None:
                img.set_data_dtype(array.dtype)
            nib.save(img, str(tmp))
    return path


def planar_tiff(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    """Whether a TIFF of this (channels-last) shape is written as separate planes (the GeoTIFF convention for
    multi-band data, which read_image moves back last): every multi-band image but 8/16-bit RGB."""
    return len(shape) == 3 and not (shape[-1] == 3 and np.dtype(dtype) in (np.uint8, np.uint16))


# side of the tiles of a TIFF written region by region (a multiple of 16, as TIFF requires)
TIFF_TILE = 256


def write_image_regions(path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype, region,
                        meta: ImageMeta | None = None, replace: bool = True) -> Path:
    """`write_image` of an image of `shape` (channels last) and `dtype` that is never held whole:
    `region(top, left, height, width)` gives its pixels there. A TIFF is written as a tiled TIFF
    (`TIFF_TILE` px tiles, BigTIFF beyond 4 GiB) one tile at a time, with the georeference, nodata and band
    descriptions `write_image` keeps; the other formats cannot be written in parts and are assembled in
    memory first, band of rows by band (H x W x bands x the dtype's bytes: 183 MiB for an 8-bit RGB 8000 x
    8000 PNG, and what the encoder holds besides)."""
    path = Path(path)
    height, width = shape[:2]
    if image_format(path) != "tiff":
        whole = np.empty(shape, dtype)
        for top in range(0, height, TIFF_TILE):  # a band of rows at a time: no float copy of the whole
            whole[top:top + TIFF_TILE] = region(top, 0, min(TIFF_TILE, height - top), width)
        return write_image(path, whole, meta, replace)
    import tifffile

    tags, nodata = geotiff_tags(meta, shape, dtype, path)
    planar = planar_tiff(shape, dtype)

    def tile(top: int, left: int) -> np.ndarray:
        values = region(top, left, min(TIFF_TILE, height - top), min(TIFF_TILE, width - left))
        if nodata is not None:
            values = values.copy()
            values[meta.extra["nodata_mask"][top:top + TIFF_TILE, left:left + TIFF_TILE]] = nodata
        return np.ascontiguousarray(values.astype(dtype, copy=False))

    origins = [(top, left) for top in range(0, height, TIFF_TILE) for left in range(0, width, TIFF_TILE)]
    if planar:  # plane by plane, each in raster order of tiles
        tiles = (tile(top, left)[..., band] for band in range(shape[-1]) for top, left in origins)
        layout = {"shape": (shape[-1], height, width), "photometric": "minisblack", "planarconfig": "separate"}
    else:
        tiles = (tile(top, left) for top, left in origins)
        layout = {"shape": tuple(shape)}
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with atomic_path(path, replace=replace) as tmp:
        tifffile.imwrite(tmp, tiles, dtype=dtype, tile=(TIFF_TILE, TIFF_TILE), extratags=tags,
                         bigtiff=size > 2**32 - 2**27, **layout)
    return path


def channels_last(stored: np.ndarray) -> np.ndarray:
    """Rows as stored, (planes, rows, W, samples), as `read_image` gives them: (rows, W) for one band,
    (rows, W, bands) for several (planes or samples)."""
    if stored.shape[0] > 1:
        return np.moveaxis(stored[..., 0], 0, -1)
    return stored[0] if stored.shape[-1] > 1 else stored[0, ..., 0]


class ContiguousRows:
    """The pixels of an uncompressed file stored in one piece (a TIFF page of `planes` planes of H x W x
    `samples` values from `offset`, or an NPY array) read by rows with plain file reads: `rows[top:bottom]`
    as `read_image` gives them. Not a memory map: every page a memory map touched would count as the
    process's resident memory until the kernel reclaims it."""

    def __init__(self, path: Path, offset: int, dtype: np.dtype, planes: int, height: int, width: int,
                 samples: int):
        self.file = open(path, "rb")
        self.offset, self.stored = offset, np.dtype(dtype)
        self.dtype = self.stored.newbyteorder("=")
        self.planes, self.height, self.width, self.samples = planes, height, width, samples
        bands = planes * samples
        self.shape = (height, width) if bands == 1 else (height, width, bands)

    def __getitem__(self, rows: slice) -> np.ndarray:
        top, bottom, _ = rows.indices(self.height)
        row_bytes = self.width * self.samples * self.stored.itemsize
        planes = [np.frombuffer(os.pread(self.file.fileno(), (bottom - top) * row_bytes,
                                         self.offset + (plane * self.height + top) * row_bytes), self.stored)
                  for plane in range(self.planes)]
        stored = np.stack(planes).reshape(self.planes, bottom - top, self.width, self.samples)
        return channels_last(stored.astype(self.dtype))

    def close(self) -> None:
        self.file.close()


class TiffRows:
    """The pixels of a single-page TIFF stored in strips or tiles (compressed or not), read by rows:
    `rows[top:bottom]` decodes only the strips or tiles those rows lie in, and keeps them for the next
    rows that lie in them too (rows read top to bottom in overlapping bands decode each strip or tile once;
    a file of one strip is decoded whole, once). Shape and axes as `read_image` gives them ((H, W) or (H, W,
    bands)); `close()` closes the file."""

    def __init__(self, path: Path):
        import tifffile

        self.tif = tifffile.TiffFile(path)
        self.page = self.tif.pages[0]
        planes, _, self.height, self.width, samples = self.page.shaped
        self.dtype = self.page.dtype
        self.planes, self.samples = planes, samples
        bands = planes * samples
        self.shape = (self.height, self.width) if bands == 1 else (self.height, self.width, bands)
        if self.page.is_tiled:
            self.chunk_rows, self.chunk_columns = self.page.tilelength, self.page.tilewidth
        else:
            self.chunk_rows, self.chunk_columns = min(self.page.rowsperstrip, self.height), self.width
        self.grid = (-(-self.height // self.chunk_rows), -(-self.width // self.chunk_columns))
        self.decoded = (0, -1, None)  # the chunk rows (first, last) decoded last, (planes, rows, W, samples)

    def chunk_row_block(self, first: int, last: int) -> np.ndarray:
        """(planes, rows, W, samples): the strips or tiles of chunk rows `first` to `last`, decoded."""
        if self.decoded[0] <= first and last <= self.decoded[1]:
            start = (first - self.decoded[0]) * self.chunk_rows
            return self.decoded[2][:, start:start + (last + 1 - first) * self.chunk_rows]
        across = self.grid[1]
        indices = [plane * self.grid[0] * across + row * across + column for plane in range(self.planes)
                   for row in range(first, last + 1) for column in range(across)]
        start = first * self.chunk_rows
        out = np.empty((self.planes, (last + 1) * self.chunk_rows - start, self.width, self.samples), self.dtype)
        offsets, counts = self.page.dataoffsets, self.page.databytecounts
        jpegtables = getattr(self.page, "jpegtables", None)
        for data, index in self.tif.filehandle.read_segments([offsets[i] for i in indices],
                                                             [counts[i] for i in indices], indices=indices):
            values, (plane, _, row, column, _), _ = self.page.decode(data, index, jpegtables=jpegtables)
            values = values[0]  # (rows, columns, samples) of one strip or tile (its depth is 1)
            row -= start
            height = min(values.shape[0], out.shape[1] - row)
            width = min(values.shape[1], self.width - column)
            out[plane, row:row + height, column:column + width] = values[:height, :width]
        self.decoded = (first, last, out)
        return out

    def __getitem__(self, rows: slice) -> np.ndarray:
        top, bottom, _ = rows.indices(self.height)
        first, last = top // self.chunk_rows, (bottom - 1) // self.chunk_rows
        start = first * self.chunk_rows
        return channels_last(self.chunk_row_block(first, last)[:, top - start:bottom - start])

    def close(self) -> None:
        self.tif.close()


@contextmanager
def opened_rows(path: str | os.PathLike):
    """An image file's pixels to be read by rows (`rows[top:bottom]`, as `read_image` gives them) and its
    `ImageMeta`, without reading what can be left on disk: a single-page TIFF without nodata and an NPY file
    by `ContiguousRows` (uncompressed, in one piece) or `TiffRows` (strips or tiles); every other file is
    read whole by `read_image` (a PNG/JPG is decoded once: H x W x bands bytes, 8-bit; a GeoTIFF with
    nodata pixels, whose filling needs each band's mean). Rows read from disk are not checked here: float
    values must be checked for NaN and infinities as they are read (`check_finite`)."""
    import tifffile

    path = Path(path)
    fmt = image_format(path)
    rows = None
    if fmt == "npy" and path.is_file():
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # the header: where the values start
        except Exception:  # read_image names the damage
            mapped = None
        if mapped is not None and mapped.ndim in (2, 3) and mapped.dtype.kind in "uif" and mapped.flags.c_contiguous:
            height, width = mapped.shape[:2]
            rows = ContiguousRows(path, mapped.offset, mapped.dtype, 1, height, width,
                                  mapped.shape[2] if mapped.ndim == 3 else 1)
            meta = ImageMeta(path=path, format=fmt, dtype=rows.dtype)
        del mapped
    if fmt == "tiff" and path.is_file():
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                geo = page_geotiff_tags(page)
                streamable = (len(tif.pages) == 1 and page.shaped[1] == 1 and page.shaped[0] <= 16
                              and gdal_nodata(geo) is None and page.dtype is not None and page.dtype.kind in "uif")
                contiguous = page.is_final  # uncompressed, in one piece, no predictor
                if streamable and contiguous:
                    planes, _, height, width, samples = page.shaped
                    rows = ContiguousRows(path, page.dataoffsets[0], np.dtype(tif.byteorder + page.dtype.char),
                                          planes, height, width, samples)
        except Exception:  # read_image names the damage
            streamable = False
        if streamable:
            rows = rows if rows is not None else TiffRows(path)
            meta = ImageMeta(path=path, format=fmt, dtype=rows.dtype, extra={"geotiff_tags": geo} if geo else {})
    if rows is None:
        yield read_image(path)
        return
    try:
        yield rows, meta
    finally:
        rows.close()
