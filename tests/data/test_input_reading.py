"""One file, every data kind: what the network is given when the file is read as training data equals what
it is given when `translate` reads the same file, because the checkpoint records the training data's reader
(`DataInfo.source_reading`) and `translate` replays it. The dB SAR case is the bug this closes: training
clipped Sentinel-1 dB to [-25, 0] while `translate` stretched each image by its own percentiles."""

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cdtsde.data import TargetOnlyData, UnpairedData, build_dataset
from cdtsde.data.readers import reading_from_record
from cdtsde.data.views import file_reading, input_reading
from cdtsde.errors import CdtsdeError
from cdtsde.methods.identity import Identity, IdentityConfig
from cdtsde.run import data_info
from cdtsde.training import load_pretrained, save_pretrained
from cdtsde.translate import translate_file


def network_inputs(method, path, tmp_path):
    """The sources `translate` hands the method for the file at `path`."""
    seen = []
    translate = method.translate
    method.translate = lambda sources, *args, **kwargs: seen.append(sources) or translate(sources, *args, **kwargs)
    translate_file(method, path, tmp_path / "translated")
    return torch.cat(seen)


def through_a_checkpoint(dataset, spec, tmp_path):
    """An identity model built on `dataset` as `cdtsde train` builds one, saved and loaded back."""
    method = Identity(IdentityConfig(), data_info(dataset, spec))
    return load_pretrained(save_pretrained(method, tmp_path / "model"))


def folder_pair(tmp_path, source: np.ndarray, suffix: str, writer):
    for side in ("source", "target"):
        (tmp_path / "pairs" / side).mkdir(parents=True, exist_ok=True)
    writer(tmp_path / "pairs" / "source" / f"a{suffix}", source)
    Image.fromarray(np.zeros(source.shape[:2], np.uint8)).save(tmp_path / "pairs" / "target" / "a.png")
    return tmp_path / "pairs" / "source" / f"a{suffix}"


def save_png(path, array):
    Image.fromarray(array).save(path)


RNG = np.random.default_rng(0)
FILES = {
    "8-bit PNG": ((RNG.random((20, 20)) * 255).astype(np.uint8), ".png", save_png, {}),
    "16-bit PNG": ((RNG.random((20, 20)) * 65535).astype(np.uint16), ".png", save_png, {}),
    "16-bit TIFF": ((RNG.random((20, 20)) * 65535).astype(np.uint16), ".tif", tifffile.imwrite, {}),
    "float TIFF with a value range": ((RNG.random((20, 20)) * 40 - 30).astype(np.float32), ".tif", tifffile.imwrite,
                                      {"value_range": {"source": [-25.0, 0.0]}}),
    "4-band TIFF, one band picked": ((RNG.random((20, 20, 4)) * 65535).astype(np.uint16), ".tif",
                                     lambda path, a: tifffile.imwrite(path, a, photometric="minisblack"),
                                     {"source_bands": [2]}),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_paired_folder_file_reaches_the_network_as_in_training(case, tmp_path):
    array, suffix, writer, options = FILES[case]
    path = folder_pair(tmp_path, array, suffix, writer)
    spec = {"kind": "paired-folder", "root": str(tmp_path / "pairs"), "size": 16, "hflip": False,
            "val_fraction": 0.0, "test_fraction": 0.0, **options}
    dataset = build_dataset(spec, "train")
    method = through_a_checkpoint(dataset, spec, tmp_path)
    assert method.data.source_reading["kind"] == "unit"
    assert torch.equal(network_inputs(method, path, tmp_path)[0], dataset[0]["source"])


def test_a_sentinel1_db_geotiff_reaches_the_network_as_in_training(tmp_path):
    """Two float dB bands (VV, VH), the VH band chosen, values beyond the [-25, 0] clip range."""
    for folder in ("s1", "s2"):
        (tmp_path / folder).mkdir()
    db = np.stack([RNG.uniform(-35, 5, (20, 20)), RNG.uniform(-30, 2, (20, 20))], -1).astype(np.float32)
    tifffile.imwrite(tmp_path / "s1" / "scene_s1_p1.tif", np.moveaxis(db, -1, 0), photometric="minisblack",
                     planarconfig="separate")
    tifffile.imwrite(tmp_path / "s2" / "scene_s2_p1.tif", (RNG.random((20, 20, 3)) * 3000).astype(np.uint16))
    spec = {"kind": "sar-patches", "root": str(tmp_path), "size": 16, "hflip": False, "source_bands": ["VH"],
            "val_scenes": 0, "test_scenes": 0}
    dataset = build_dataset(spec, "train")
    method = through_a_checkpoint(dataset, spec, tmp_path)
    assert method.data.source_reading == {"kind": "sar-db", "db_range": [-25.0, 0.0], "bands": ["VH"]}
    # the uint16 reflectance targets as training scaled them, for `evaluate` to score targets alike
    assert method.data.target_reading == {"kind": "optical", "reflectance_max": 3000.0, "bands": None}
    seen = network_inputs(method, tmp_path / "s1" / "scene_s1_p1.tif", tmp_path)
    assert seen.shape == (1, 1, 16, 16) and torch.equal(seen[0], dataset[0]["source"])


def test_a_nifti_volume_reaches_the_network_as_in_training_through_the_checkpoint(tmp_path):
    volume = (RNG.random((16, 16, 3)) * 700).astype(np.float32)
    volume[:2] = 0
    (tmp_path / "subj").mkdir()
    for modality in ("t1", "t2"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "subj" / f"subj_{modality}.nii.gz")
    spec = {"kind": "nifti", "root": str(tmp_path), "size": 16, "min_foreground": 0.0, "val_subjects": 0,
            "test_subjects": 0, "percentile": 98.0, "hflip": False}
    dataset = build_dataset(spec, "train")
    method = through_a_checkpoint(dataset, spec, tmp_path)
    assert method.data.source_reading == {"kind": "nifti", "percentile": 98.0}
    seen = network_inputs(method, tmp_path / "subj" / "subj_t1.nii.gz", tmp_path)
    assert all(torch.equal(seen[i], dataset[i]["source"]) for i in range(3))


def test_target_only_and_unpaired_methods_record_the_side_their_inputs_come_from(tmp_path):
    """A zero-shot method never saw sources: its inputs are read as its (target) training images were."""
    for folder in ("s1", "s2"):
        (tmp_path / folder).mkdir()
    tifffile.imwrite(tmp_path / "s1" / "scene_s1_p1.tif", RNG.uniform(-30, 0, (2, 8, 8)).astype(np.float32),
                     photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(tmp_path / "s2" / "scene_s2_p1.tif", (RNG.random((8, 8, 3)) * 3000).astype(np.uint16))
    dataset = build_dataset({"kind": "sar-patches", "root": str(tmp_path), "val_scenes": 0, "test_scenes": 0}, "train")
    assert input_reading(dataset)["kind"] == "sar-db"
    assert input_reading(UnpairedData(dataset, dataset))["kind"] == "sar-db"
    assert input_reading(TargetOnlyData(dataset)) == {"kind": "optical", "reflectance_max": 3000.0, "bands": None}
    for view in (dataset, UnpairedData(dataset, dataset), TargetOnlyData(dataset)):
        assert file_reading(view, "target") == {"kind": "optical", "reflectance_max": 3000.0, "bands": None}


def test_a_damaged_reading_record_is_named():
    with pytest.raises(CdtsdeError, match="unknown input reading 'jpeg2000'"):
        reading_from_record({"kind": "jpeg2000"})
    with pytest.raises(CdtsdeError, match="unknown data.source_reading option"):
        reading_from_record({"kind": "unit", "gamma": 2})
