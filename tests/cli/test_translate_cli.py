import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from helpers import tiny_model
from PIL import Image

from cdtsde.cli import main
from cdtsde.imagefiles import read_image
from cdtsde.methods import DataInfo, method_class
from cdtsde.networks.conditional_unet import TINY_UNET, UNetConfig
from cdtsde.training import load_pretrained, save_pretrained
from cdtsde.translate import source_slices, translate_slices


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    model = tiny_model(size=16)
    # a non-zero output layer so that translations depend on the input
    for parameter in model.net.parameters():
        parameter.data.normal_(0, 0.05)
    save_pretrained(model, directory / "model")
    return directory


@pytest.fixture(scope="module")
def mask_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mask")
    model = tiny_model(target_channels=5, target_kind="mask")
    for parameter in model.net.parameters():  # as above: class maps that depend on the input
        parameter.data.normal_(0, 0.05)
    save_pretrained(model, directory)
    return directory


@pytest.fixture(scope="module")
def identity_checkpoint(tmp_path_factory):
    """The identity method: what comes out is what the reader made of the input, written back."""
    directory = tmp_path_factory.mktemp("identity")
    cls = method_class("identity")
    save_pretrained(cls(cls.config_class(), DataInfo(source_channels=1, target_channels=1, target_kind="image",
                                                     image_size=16)), directory)
    return directory


def run_translate(checkpoint, input_path, output, *extra):
    return main(["translate", "--checkpoint", str(checkpoint), "--input", str(input_path), "--output", str(output),
                 "--steps", "2", *extra])


def test_png_8_bit_keeps_format_size_and_depth(checkpoint, tmp_path):
    Image.fromarray((np.random.default_rng(0).random((20, 23)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert run_translate(checkpoint, tmp_path / "a.png", tmp_path / "out") == 0
    out = Image.open(tmp_path / "out" / "a.png")
    assert out.mode == "L" and out.size == (23, 20)
    assert np.asarray(out).std() > 0


def test_16_bit_tiff_stays_16_bit(checkpoint, tmp_path):
    tifffile.imwrite(tmp_path / "b.tif", (np.random.default_rng(1).random((16, 16)) * 65535).astype(np.uint16))
    assert run_translate(checkpoint, tmp_path / "b.tif", tmp_path / "out", "--native-size") == 0
    out = tifffile.imread(tmp_path / "out" / "b.tif")
    assert out.dtype == np.uint16 and out.shape == (16, 16)


def test_16_bit_values_survive_the_identity_round_trip(identity_checkpoint, tmp_path):
    """Read to [0, 1] by the dtype's range, written back by it: every 16-bit level comes back."""
    levels = (np.random.default_rng(1).random((16, 16)) * 65535).astype(np.uint16)
    levels[0, :3] = (0, 1, 65535)
    tifffile.imwrite(tmp_path / "b.tif", levels)
    assert main(["translate", "--checkpoint", str(identity_checkpoint), "--input", str(tmp_path / "b.tif"),
                 "--output", str(tmp_path / "out"), "--native-size"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "b.tif"), levels)


def test_nifti_values_are_the_normalised_volume_in_place(identity_checkpoint, tmp_path):
    """Slice by slice along the last axis, each slice back in its place: the identity's output is the
    volume over the 99.5th percentile of its non-zero voxels, clipped to 1 (to the reader's 1 / 65535 steps)."""
    volume = (np.random.default_rng(2).random((18, 17, 3)) * 800).astype(np.int16)
    volume[:, :, 1] //= 4  # slices that differ, so a slice out of place shows
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vol.nii.gz")
    assert main(["translate", "--checkpoint", str(identity_checkpoint), "--input", str(tmp_path / "vol.nii.gz"),
                 "--output", str(tmp_path / "out"), "--native-size"]) == 0
    expected = np.clip(volume / np.percentile(volume[volume != 0], 99.5), 0, 1)
    np.testing.assert_allclose(nib.load(tmp_path / "out" / "vol.nii.gz").get_fdata(), expected, atol=1e-4)


def test_nifti_volume_is_translated_slice_by_slice_with_its_affine(checkpoint, tmp_path):
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    volume = (np.random.default_rng(2).random((18, 17, 3)) * 800).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "vol.nii.gz")
    assert run_translate(checkpoint, tmp_path / "vol.nii.gz", tmp_path / "out", "--samples", "2") == 0
    out = nib.load(tmp_path / "out" / "vol.nii.gz")
    assert out.shape == (18, 17, 3)
    np.testing.assert_allclose(out.affine, affine)
    data = out.get_fdata()
    assert 0 <= data.min() and data.max() <= 1
    std = read_image(tmp_path / "out" / "vol_std.tif")[0]
    assert std.shape == (18, 17, 3) and std.max() > 0


def test_a_model_trained_with_context_translates_each_slice_with_its_neighbours(tmp_path, capsys):
    """`data.context_slices` recorded as 1: each slice of a volume goes in with the slices before and after
    it (the first and last slice repeated at the edges), as the hand-built stack here; a 2-D image has no
    neighbours and is refused, naming the file and k."""
    cls = method_class("cdtsde")
    torch.manual_seed(0)
    model = cls(cls.config_class(unet=UNetConfig(**TINY_UNET)),
                DataInfo(source_channels=3, target_channels=1, image_size=16, context_slices=1))
    for parameter in model.net.parameters():  # translations that depend on every input channel
        parameter.data.normal_(0, 0.05)
    save_pretrained(model, tmp_path / "model")
    volume = (np.random.default_rng(3).random((16, 16, 4)) * 800).astype(np.int16)
    affine = np.diag([0.9, 1.1, 2.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "vol.nii.gz")
    assert run_translate(tmp_path / "model", tmp_path / "vol.nii.gz", tmp_path / "out") == 0
    out = nib.load(tmp_path / "out" / "vol.nii.gz")
    np.testing.assert_allclose(out.affine, affine)

    unit = np.clip(volume / np.percentile(volume[volume != 0], 99.5), 0, 1).astype(np.float32)
    neighbours = [(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 3)]
    stacks = np.stack([unit[:, :, list(around)] for around in neighbours])  # (S, H, W, 3)
    loaded = load_pretrained(tmp_path / "model")
    expected = translate_slices(loaded, stacks, loaded.sampling_options(steps=2)).mean[..., 0]
    np.testing.assert_allclose(out.get_fdata(), np.moveaxis(expected, 0, -1), atol=2e-3)

    Image.fromarray((unit[:, :, 0] * 255).astype(np.uint8)).save(tmp_path / "slice.png")
    assert run_translate(tmp_path / "model", tmp_path / "slice.png", tmp_path / "out2") == 1
    printed = capsys.readouterr().out
    assert (f"{tmp_path / 'slice.png'}: a 2-D image, but the model was trained with context_slices: 1" in printed
            and "translate the NIfTI volume" in printed)
    assert not (tmp_path / "out2" / "slice.png").exists()


def test_mask_model_writes_class_indices(mask_checkpoint, tmp_path):
    Image.fromarray((np.random.default_rng(3).random((16, 16)) * 255).astype(np.uint8)).save(tmp_path / "cell.jpg")
    assert run_translate(mask_checkpoint, tmp_path / "cell.jpg", tmp_path / "out") == 0
    out = np.asarray(Image.open(tmp_path / "out" / "cell.png"))
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    method = load_pretrained(mask_checkpoint)
    expected = translate_slices(method, source_slices(*read_image(tmp_path / "cell.jpg"), method.data),
                                sampling=method.sampling_options(steps=2), seed=0).mean[0, ..., 0]
    assert len(np.unique(expected)) >= 2  # the file holds the model's class indices, not a constant
    np.testing.assert_array_equal(out, expected)


def test_folder_with_a_bad_file_translates_the_rest_and_fails(checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(folder / f"ok{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8) + np.arange(3, dtype=np.uint8)).save(folder / "colour.png")
    assert run_translate(checkpoint, folder, tmp_path / "out") == 1
    printed = capsys.readouterr().out
    assert "translated 3 of 4" in printed and "broken.png" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["colour.png", "ok0.png", "ok1.png"]


def test_channel_mismatch_is_named(mask_checkpoint, tmp_path, capsys):
    np.save(tmp_path / "two.npy", np.zeros((8, 8, 2), np.float32))
    assert run_translate(mask_checkpoint, tmp_path / "two.npy", tmp_path / "out") == 1
    assert "two.npy: has 2 channels, cannot use it as 1" in capsys.readouterr().out


@pytest.mark.parametrize("breakage", ["missing", "corrupt", "bit-flip", "nan"])
def test_bad_checkpoint_is_a_clear_error(checkpoint, tmp_path, capsys, breakage):
    """A missing, unreadable, bit-flipped (the checksum in config.json) or NaN-holding (checksum updated)
    weights file: exit 2 with the file named, nothing written."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from cdtsde.training.checkpoint import file_sha256

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    bad = tmp_path / "ckpt"
    weights = bad / "model" / "model.safetensors"
    if breakage != "missing":
        shutil.copytree(checkpoint / "model", bad / "model")
    if breakage == "corrupt":
        weights.write_bytes(b"not safetensors")
    elif breakage == "bit-flip":
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x10  # inside the last tensor's data: the file still parses
        weights.write_bytes(bytes(data))
    elif breakage == "nan":
        tensors = load_file(str(weights))
        first = sorted(key for key, value in tensors.items() if value.is_floating_point())[0]
        tensors[first].view(-1)[0] = float("nan")
        save_file(tensors, str(weights))
        record = json.loads((bad / "model" / "config.json").read_text())
        (bad / "model" / "config.json").write_text(json.dumps({**record, "weights_sha256": file_sha256(weights)}))
    assert run_translate(bad, tmp_path / "a.png", tmp_path / "out") == 2
    err = capsys.readouterr().err
    expected = {"missing": "not a cdtsde checkpoint", "corrupt": "does not match the SHA-256",
                "bit-flip": "does not match the SHA-256", "nan": "hold NaN or infinite values"}[breakage]
    assert str(bad) in err and expected in err, err
    assert not (tmp_path / "out").exists()


def test_volume_noise_decides_whether_equal_slices_translate_alike(checkpoint, tmp_path, capsys):
    """A volume of three equal slices through the stochastic sampler: --volume-noise shared translates them
    alike, as does the default, independent and correlated do not; a correlation outside (0, 1) is refused by name."""
    cut = (np.random.default_rng(2).random((18, 17, 1)) * 800).astype(np.int16)
    nib.save(nib.Nifti1Image(np.repeat(cut, 3, axis=2), np.eye(4)), tmp_path / "vol.nii.gz")
    slices = {}
    for noise in ("independent", "shared", "correlated"):
        assert run_translate(checkpoint, tmp_path / "vol.nii.gz", tmp_path / noise, "--volume-noise", noise) == 0
        slices[noise] = nib.load(tmp_path / noise / "vol.nii.gz").get_fdata()
    assert run_translate(checkpoint, tmp_path / "vol.nii.gz", tmp_path / "default") == 0
    slices["default"] = nib.load(tmp_path / "default" / "vol.nii.gz").get_fdata()
    np.testing.assert_array_equal(slices["default"], slices["shared"])
    for noise, alike in (("independent", False), ("shared", True), ("correlated", False)):
        assert np.allclose(slices[noise][..., 0], slices[noise][..., 1], atol=1e-6) == alike, noise
    assert run_translate(checkpoint, tmp_path / "vol.nii.gz", tmp_path / "bad", "--volume-noise", "correlated",
                         "--slice-correlation", "1") == 2
    assert "--slice-correlation" in capsys.readouterr().err


def test_bad_arguments(checkpoint, tmp_path, capsys):
    assert run_translate(checkpoint, tmp_path / "nothing.png", tmp_path / "out") == 2
    assert "nothing.png: no such file" in capsys.readouterr().err
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    assert run_translate(checkpoint, tmp_path / "a.png", tmp_path / "out", "--samples", "0") == 2
    assert "--samples" in capsys.readouterr().err


def test_a_geotiff_keeps_its_georeference(checkpoint, tmp_path):
    """CRS (GeoKeyDirectory, EPSG:32633), pixel-to-map transform (pixel scale + tie point) and GDAL nodata
    of a Sentinel-1-like float GeoTIFF reach the translation and its uncertainty map unchanged. (Checked
    once with rasterio/GDAL, which reads CRS, transform and nodata of such an output as of the input.)"""
    tags = [(33550, 12, 3, (10.0, 10.0, 0.0), True),
            (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 5800000.0, 0.0), True),
            (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),
            (42113, 2, 6, "-9999", True)]
    values = np.random.default_rng(3).random((20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "scene.tif", values, extratags=tags)
    assert run_translate(checkpoint, tmp_path / "scene.tif", tmp_path / "out", "--samples", "2") == 0

    def georeference(path):
        with tifffile.TiffFile(path) as tif:
            return {tag.code: tag.value for tag in tif.pages[0].tags.values() if tag.code in {t[0] for t in tags}}

    expected = georeference(tmp_path / "scene.tif")
    assert len(expected) == 4
    for name in ("scene.tif", "scene_std.tif"):
        assert georeference(tmp_path / "out" / name) == expected
        assert tifffile.imread(tmp_path / "out" / name).shape == (20, 24)


def test_bf16_precision_is_close_to_float32_but_not_equal(checkpoint, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "c.tif", (np.random.default_rng(2).random((16, 16)) * 65535).astype(np.uint16))
    outputs = {}
    for precision in ("32", "bf16"):
        assert run_translate(checkpoint, tmp_path / "c.tif", tmp_path / precision, "--precision", precision) == 0
        outputs[precision] = tifffile.imread(tmp_path / precision / "c.tif").astype(np.float64) / 65535
    difference = np.abs(outputs["bf16"] - outputs["32"])
    assert 0 < difference.max() < 0.02  # in [0, 1]; bf16 keeps 8 bits of mantissa
    with pytest.raises(SystemExit) as refused:
        run_translate(checkpoint, tmp_path / "c.tif", tmp_path / "x", "--precision", "16")
    assert refused.value.code == 2
    assert "--precision: invalid choice: '16'" in capsys.readouterr().err


def test_a_model_trained_on_native_scale_windows_translates_at_the_input_size(tmp_path):
    """`resize: crop` or scene tiles: training saw windows at the files' scale, so translate must not
    shrink a large input to the window size (the checkpoint records this as `training_scale`)."""
    from cdtsde.data import build_dataset
    from cdtsde.run import data_info

    procedural = build_dataset({"kind": "procedural", "task": "mri-phantom", "n": 2, "size": 16}, "train")
    assert data_info(procedural, {"kind": "paired-folder", "size": 16}).training_scale == "resized"
    assert data_info(procedural, {"kind": "paired-folder", "size": 16, "resize": "crop"}).training_scale == "native"
    assert data_info(procedural, {"kind": "scene-tiles", "root": "scenes"}).training_scale == "native"
    cls = method_class("identity")
    save_pretrained(cls(cls.config_class(), DataInfo(source_channels=1, target_channels=1, image_size=16,
                                                     training_scale="native")), tmp_path / "native")
    levels = (np.random.default_rng(4).random((20, 23)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", levels)
    assert main(["translate", "--checkpoint", str(tmp_path / "native"), "--input", str(tmp_path / "big.tif"),
                 "--output", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "big.tif"), levels)
