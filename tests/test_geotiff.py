"""GeoTIFF nodata and band descriptions: nodata pixels are read (filled with the band's valid mean, reported)
instead of refusing the file and written back as nodata; a translation names its bands as the training
targets' (recorded in the checkpoint), never as the input's, and names none where the checkpoint records
none."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile
from helpers import grey, tiny_model, tiny_model_options, translate

from cdtsde.imagefiles import GDAL_METADATA, GDAL_NODATA, read_image, write_image

GEO_TAGS = [(33550, 12, 3, (10.0, 10.0, 0.0), True),
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5800000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True)]
# the input's GDAL metadata: a dataset-wide item and its own (SAR) band names
INPUT_METADATA = ('<GDALMetadata><Item name="MISSION">S1A</Item>'
                  '<Item name="DESCRIPTION" sample="0" role="description">VV</Item>'
                  '<Item name="DESCRIPTION" sample="1" role="description">VH</Item></GDALMetadata>')


def scene_with_nodata(path, nodata="-9999"):
    """A 3-band float32 GeoTIFF (20 x 24) whose pixels in rows 2-4, columns 5-8 hold `nodata` in one band
    (band 1, and band 0 of one more pixel); returns the values and the nodata pixels."""
    values = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    mask = np.zeros((20, 24), bool)
    mask[2:5, 5:9] = True
    values[2:5, 5:9, 1] = float(nodata)
    values[10, 10, 0] = float(nodata)
    mask[10, 10] = True
    tags = [*GEO_TAGS, (GDAL_NODATA, 2, 0, nodata, True), (GDAL_METADATA, 2, 0, INPUT_METADATA, True)]
    tifffile.imwrite(path, np.moveaxis(values, -1, 0), photometric="minisblack", planarconfig="separate",
                     extratags=tags)
    return values, mask


def tags_of(path):
    with tifffile.TiffFile(path) as tif:
        return {tag.code: tag.value for tag in tif.pages[0].tags.values()}


def band_descriptions(xml):
    return {int(item.get("sample")): item.text for item in ET.fromstring(xml.rstrip("\x00"))
            if item.get("name") == "DESCRIPTION"}


@pytest.mark.parametrize("nodata", ["-9999", "nan"])
def test_nodata_pixels_are_read_filled_with_the_valid_mean_and_reported(tmp_path, nodata):
    """Today's main refused a NaN nodata file whole and passed -9999 to the network as a value."""
    values, mask = scene_with_nodata(tmp_path / "scene.tif", nodata)
    with pytest.warns(UserWarning, match=r"scene\.tif: 13 nodata pixel\(s\) \(GDAL_NODATA (-9999|nan)\)"):
        array, meta = read_image(tmp_path / "scene.tif")
    assert array.shape == (20, 24, 3) and np.isfinite(array).all()
    np.testing.assert_array_equal(meta.extra["nodata_mask"], mask)
    np.testing.assert_array_equal(array[~mask], values[~mask])  # valid pixels as stored
    for band in range(3):  # every band's nodata pixels (also those valid in this band) hold its valid mean
        np.testing.assert_allclose(array[mask, band], values[~mask, band].astype(np.float64).mean(), rtol=1e-6)


def test_a_file_of_nodata_only_is_refused(tmp_path):
    from cdtsde.errors import ImageReadError

    tifffile.imwrite(tmp_path / "empty.tif", np.full((8, 8), -9999, np.float32),
                     extratags=[*GEO_TAGS, (GDAL_NODATA, 2, 0, "-9999", True)])
    with pytest.raises(ImageReadError, match=r"empty\.tif: every pixel is nodata"):
        read_image(tmp_path / "empty.tif")


def test_a_nodata_value_the_output_cannot_hold_is_left_unmarked(tmp_path):
    """A class-index (uint8) output of a scene whose nodata is -9999: no false nodata tag, a warning."""
    scene_with_nodata(tmp_path / "scene.tif")
    with pytest.warns(UserWarning, match="nodata pixel"):
        _, meta = read_image(tmp_path / "scene.tif")
    with pytest.warns(UserWarning, match=r"nodata value -9999 does not fit uint8"):
        write_image(tmp_path / "classes.tif", np.ones((20, 24), np.uint8), meta)
    written = tags_of(tmp_path / "classes.tif")
    assert GDAL_NODATA not in written and written[33550] == (10.0, 10.0, 0.0)
    assert (tifffile.imread(tmp_path / "classes.tif") == 1).all()


def test_translation_keeps_georeference_and_nodata_and_names_no_bands_the_checkpoint_does_not_name(tmp_path):
    """`cdtsde translate` of the 3-band scene by a checkpoint recording no target band names (as every one
    written before they were): georeference and GDAL_NODATA as the input's, the nodata pixels (and only they)
    hold -9999 in the translation and its std map, no band of the translation named (not VV/VH), the std map
    named as such, the input's dataset-wide metadata kept."""
    from cdtsde.training import save_pretrained

    save_pretrained(tiny_model(3, 3), tmp_path / "model")
    _, mask = scene_with_nodata(tmp_path / "scene.tif")
    with pytest.warns(UserWarning, match=r"scene\.tif: 13 nodata pixel\(s\)"):
        assert translate(tmp_path / "model", tmp_path / "scene.tif", tmp_path / "out", "--samples", "2") == 0
    source = tags_of(tmp_path / "scene.tif")
    for name, bands in (("scene.tif", []),
                        ("scene_std.tif", ["standard deviation across samples"])):
        written = tags_of(tmp_path / "out" / name)
        for code in (33550, 33922, 34735, GDAL_NODATA):
            assert written[code] == source[code]
        assert band_descriptions(written[GDAL_METADATA]) == dict(enumerate(bands))
        assert "VV" not in written[GDAL_METADATA] and '<Item name="MISSION">S1A</Item>' in written[GDAL_METADATA]
        out = tifffile.imread(tmp_path / "out" / name)
        out = np.moveaxis(out, 0, -1) if out.ndim == 3 else out[..., None]
        assert out.shape[:2] == (20, 24) and out.dtype == np.float32
        np.testing.assert_array_equal(out == -9999, np.repeat(mask[..., None], out.shape[-1], axis=-1))


SENTINEL2 = ("B4", "B3", "B2", "B8")


def geotiff(path, bands, names, dtype, seed=0, size=16):
    """A band-first GeoTIFF of `bands` random bands described by `names` (None: no descriptions)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-20, -5, (bands, size, size)) if dtype == np.float32 else rng.integers(0, 3000, (bands, size, size))
    tags = list(GEO_TAGS)
    if names is not None:
        items = "".join(f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>' for i, n in enumerate(names))
        tags.append((GDAL_METADATA, 2, 0, f"<GDALMetadata>{items}</GDALMetadata>", True))
    tifffile.imwrite(path, values.astype(dtype), photometric="minisblack", planarconfig="separate", extratags=tags)
    return path


def sar_optical(root, target_names=SENTINEL2, scenes=3):
    """sar-patches data: Sentinel-1 chips (VV, VH dB) and 4-band Sentinel-2 chips named `target_names`."""
    for folder in ("s1", "s2"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for scene in range(scenes):
        for patch in range(2):
            seed = 10 * scene + patch
            geotiff(root / "s1" / f"ROI_{scene}_s1_p{patch}.tif", 2, ("VV", "VH"), np.float32, seed)
            names = target_names[scene] if isinstance(target_names, list) else target_names
            geotiff(root / "s2" / f"ROI_{scene}_s2_p{patch}.tif", 4, names, np.uint16, seed)


def spec_of(root, **options):
    return {"kind": "sar-patches", "root": str(root), "val_scenes": 0, "test_scenes": 0, "hflip": False,
            "vflip": False, **options}


def test_band_descriptions_of_a_file_name_every_band_or_none(tmp_path):
    from cdtsde.imagefiles import band_descriptions

    assert band_descriptions(geotiff(tmp_path / "a.tif", 4, SENTINEL2, np.uint16)) == SENTINEL2
    assert band_descriptions(geotiff(tmp_path / "b.tif", 4, None, np.uint16)) is None
    assert band_descriptions(geotiff(tmp_path / "c.tif", 4, ("B4", "B3"), np.uint16)) is None  # some bands only
    assert band_descriptions(grey(tmp_path / "d.png")) is None


@pytest.mark.parametrize(("options", "names"), [({"target_bands": [0, 1, 2]}, ("B4", "B3", "B2")),
                                                ({"target_bands": [3, 0]}, ("B8", "B4")),
                                                ({}, SENTINEL2)])
def test_the_target_band_names_are_the_target_files_descriptions_of_the_bands_kept(tmp_path, options, names):
    from cdtsde.data import build_dataset
    from cdtsde.run import data_info

    sar_optical(tmp_path)
    spec = spec_of(tmp_path, **options)
    assert data_info(build_dataset(spec, "train"), spec).target_band_names == names


@pytest.mark.parametrize("target_names", [None, ("B4", "B3", "B2"), [SENTINEL2, SENTINEL2, ("R", "G", "B", "N")]],
                         ids=["undescribed", "band-4-undescribed", "scenes-differ"])
def test_targets_without_names_or_with_differing_names_record_none(tmp_path, target_names):
    from cdtsde.data import build_dataset
    from cdtsde.run import data_info

    sar_optical(tmp_path, target_names)
    spec = spec_of(tmp_path, target_bands=[0, 1, 2])
    assert data_info(build_dataset(spec, "train"), spec).target_band_names is None


def test_a_trained_sar_to_optical_model_names_its_output_bands_as_its_targets_not_as_its_input(tmp_path):
    """Trained on Sentinel-1 (VV, VH) -> Sentinel-2 bands [B4, B3, B2]: the checkpoint records the target's
    band names and the translation of a VV/VH GeoTIFF describes its bands as B4, B3, B2."""
    import json

    import yaml

    from cdtsde.cli import main

    sar_optical(tmp_path / "data")
    config = {"method": "pix2pix", "data": spec_of(tmp_path / "data", target_bands=[0, 1, 2], size=16),
              "model": tiny_model_options("pix2pix"),
              "train": {"max_steps": 1, "batch_size": 2, "sample_every": 0, "checkpoint_every": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--output", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert record["data"]["target_band_names"] == ["B4", "B3", "B2"]
    chip = geotiff(tmp_path / "chip.tif", 2, ("VV", "VH"), np.float32, seed=99)
    assert main(["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(chip), "--output",
                 str(tmp_path / "out")]) == 0
    written = tags_of(tmp_path / "out" / "chip.tif")
    assert band_descriptions(written[GDAL_METADATA]) == {0: "B4", 1: "B3", 2: "B2"}
    assert "VV" not in written[GDAL_METADATA] and written[33550] == (10.0, 10.0, 0.0)


def test_a_checkpoint_naming_another_count_of_target_bands_is_named_at_load(tmp_path):
    import json

    from cdtsde.errors import CdtsdeError
    from cdtsde.training import load_pretrained, save_pretrained

    save_pretrained(tiny_model(2, 3), tmp_path / "model")
    record = json.loads((tmp_path / "model" / "config.json").read_text())
    record["data"]["target_band_names"] = ["B4", "B3"]
    (tmp_path / "model" / "config.json").write_text(json.dumps(record))
    with pytest.raises(CdtsdeError, match=r"target_band_names names 2 band\(s\) of a target of 3 channel\(s\)"):
        load_pretrained(tmp_path / "model")


@pytest.mark.parametrize("layout", [
    {"compression": "zlib", "rowsperstrip": 7},  # compressed strips
    {"compression": "zlib", "rowsperstrip": 1000},  # one strip: decoded once
    {"compression": "zlib", "tile": (16, 32)},  # compressed tiles, partial at the edges
    {"compression": "zlib", "tile": (16, 16), "planar": True},  # bands as separate planes, tiled
    {"planar": True},  # uncompressed, in one piece: plain reads
    {"byteorder": ">"},  # big-endian, read as native values
    {},
])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_rows_read_from_disk_equal_the_whole_file(tmp_path, layout, dtype):
    """`opened_rows` reads any band of rows of a TIFF as `read_image` gives them, whatever its strips, tiles,
    compression and planar layout, from disk (`ContiguousRows` or `TiffRows`), with its georeference; rows
    again in strips or tiles decoded before are cut from them. An NPY file is read alike."""
    from cdtsde.imagefiles import ContiguousRows, TiffRows, opened_rows

    layout = dict(layout)
    planar = layout.pop("planar", False)
    values = (np.random.default_rng(1).random((45, 70, 2)) * 60000).astype(dtype)
    stored = np.moveaxis(values, -1, 0) if planar else values
    tifffile.imwrite(tmp_path / "scene.tif", stored, extratags=GEO_TAGS, photometric="minisblack",
                     planarconfig="separate" if planar else "contig", **layout)
    whole, meta = read_image(tmp_path / "scene.tif")
    with opened_rows(tmp_path / "scene.tif") as (rows, rows_meta):
        assert isinstance(rows, TiffRows if "compression" in layout else ContiguousRows)
        assert rows.shape == whole.shape and rows_meta.extra["geotiff_tags"] == meta.extra["geotiff_tags"]
        for top, bottom in [(0, 45), (3, 19), (40, 45), (13, 14), (7, 8)]:
            np.testing.assert_array_equal(rows[top:bottom], whole[top:bottom])
    np.save(tmp_path / "scene.npy", values)
    with opened_rows(tmp_path / "scene.npy") as (rows, rows_meta):
        assert isinstance(rows, ContiguousRows) and rows_meta.dtype == values.dtype
        np.testing.assert_array_equal(rows[7:30], values[7:30])


@pytest.mark.filterwarnings("ignore:.*nodata")
def test_a_tiff_written_region_by_region_equals_write_image(tmp_path):
    """`write_image_regions` writes, tile by tile, the pixels, georeference, nodata marks and band names that
    `write_image` writes of the whole array; a PNG is assembled whole."""
    from cdtsde.imagefiles import write_image_regions

    values, _ = scene_with_nodata(tmp_path / "scene.tif")
    array, meta = read_image(tmp_path / "scene.tif")
    for name, data in [("scene.tif", array), ("gray.tif", (array[..., 0] * 255).astype(np.uint8))]:
        meta.extra["band_descriptions"] = ["a", "b", "c"][:1 if data.ndim == 2 else 3]
        whole, regions = tmp_path / f"whole-{name}", tmp_path / f"regions-{name}"
        write_image(whole, data, meta)
        write_image_regions(regions, data.shape, data.dtype,
                            lambda top, left, h, w, data=data: data[top:top + h, left:left + w], meta)
        for code in (33550, 33922, 34735, GDAL_NODATA, GDAL_METADATA):
            assert tags_of(whole).get(code) == tags_of(regions).get(code)
        np.testing.assert_array_equal(tifffile.imread(regions), tifffile.imread(whole))
    assert (tifffile.imread(tmp_path / "regions-scene.tif")[1, 2:5, 5:9] == -9999).all()
    rgb = (values * 255).astype(np.uint8)
    write_image_regions(tmp_path / "scene.png", rgb.shape, rgb.dtype, lambda top, left, h, w: rgb[top:top + h, left:left + w])
    np.testing.assert_array_equal(read_image(tmp_path / "scene.png")[0], rgb)
