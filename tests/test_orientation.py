"""NIfTI volumes are read in nibabel's closest canonical (RAS) orientation, translated and scored so, and
written back in each file's own voxel order, directions and affine."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from cdtsde.imagefiles import image_shape, read_image
from cdtsde.methods import DataInfo, TranslationOutput
from cdtsde.methods.identity import Identity, IdentityConfig
from cdtsde.metrics.folders import evaluate_folders
from cdtsde.translate import translate_file

STORED_ORIENTATIONS = {"ras": ("R", "A", "S"), "lps": ("L", "P", "S"), "permuted": ("I", "L", "A")}


def stored_as(image, codes):
    """The NIfTI `image` (RAS) with its voxels stored in the order and directions `codes` name, its affine
    saying so: the same anatomy at the same world positions."""
    ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
    return image.as_reoriented(nib.orientations.ornt_transform(ras, nib.orientations.axcodes2ornt(codes)))


class RowRamp(Identity):
    """The source weighted by a ramp down its rows: a translation that is not symmetric under flips, as a
    trained network is not, so that a slice read upside down translates to other anatomy."""

    def generate(self, sources, sampling, generator):
        ramp = torch.linspace(0.2, 1.0, sources.shape[-2])[:, None]
        return TranslationOutput((sources + 1) * ramp - 1)


def test_volumes_are_sliced_in_canonical_ras_orientation_and_written_back_in_their_own(tmp_path):
    """One anatomy stored RAS, LPS (BraTS: x and y flipped) and with permuted, flipped axes: each reads as
    the same RAS array, translates (by a translation that is not flip-symmetric) to the same anatomy, and is
    written back in its own voxel order, directions and affine."""
    anatomy = (np.arange(5 * 6 * 4).reshape(5, 6, 4) % 7 * 100 + 50).astype(np.int16)
    affine = np.diag([1.2, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-3.0, 4.0, 10.0)
    image = nib.Nifti1Image(anatomy, affine)
    method = RowRamp(IdentityConfig(), DataInfo(source_channels=1, target_channels=1, training_scale="native"))
    outputs = {}
    for name, codes in STORED_ORIENTATIONS.items():
        stored = stored_as(image, codes)
        path = tmp_path / f"{name}.nii.gz"
        nib.save(stored, path)
        assert nib.aff2axcodes(stored.affine) == codes
        array, _ = read_image(path)
        np.testing.assert_array_equal(array, anatomy)
        assert image_shape(path) == anatomy.shape
        translate_file(method, path, tmp_path / "out")
        written = nib.load(tmp_path / "out" / f"{name}.nii.gz")
        assert written.shape == stored.shape
        np.testing.assert_allclose(written.affine, stored.affine)
        outputs[name] = np.asarray(nib.as_closest_canonical(written).dataobj)
    assert np.ptp(outputs["ras"]) > 0.5
    np.testing.assert_array_equal(outputs["lps"], outputs["ras"])
    np.testing.assert_array_equal(outputs["permuted"], outputs["ras"])


def test_evaluate_scores_a_prediction_and_target_stored_in_other_orientations_as_identical(tmp_path):
    """`evaluate` reads both sides in canonical orientation: the same anatomy stored LPS as a prediction and
    RAS as its target (or both with other permuted, flipped axes) scores as identical, per file and as a
    volume."""
    anatomy = np.random.default_rng(0).random((12, 13, 11)).astype(np.float32)
    image = nib.Nifti1Image(anatomy, np.eye(4))
    for folder, files in {"pred": {"a": ("L", "P", "S"), "b": ("I", "L", "A")},
                          "target": {"a": ("R", "A", "S"), "b": ("S", "R", "P")}}.items():
        (tmp_path / folder).mkdir()
        for name, codes in files.items():
            nib.save(stored_as(image, codes), tmp_path / folder / f"{name}.nii.gz")
    rows, _, problems, volumes = evaluate_folders(tmp_path / "pred", tmp_path / "target")
    assert problems == [] and [row["name"] for row in rows] == ["a", "b"]
    assert [row["psnr"] for row in rows] == [math.inf, math.inf]
    assert [row["psnr3d"] for row in volumes.rows] == [math.inf, math.inf]
    assert [row["ssim3d"] for row in volumes.rows] == pytest.approx([1.0, 1.0])


def test_a_checkpoint_from_before_ras_reading_translates_volumes_in_their_stored_directions(tmp_path):
    """A checkpoint whose record has no `data.nifti_orientation` was trained on volumes with their axes
    reordered but not flipped (a BraTS volume, stored LPS, upside down and mirrored against RAS): it loads as
    "axes" and `translate` slices an LPS volume as it was trained to, where a new model reads RAS; both write
    the volume back in its own orientation and affine."""
    import json

    from cdtsde.training import load_pretrained, save_pretrained

    anatomy = (np.arange(5 * 6 * 4).reshape(5, 6, 4) % 7 * 100 + 50).astype(np.int16)
    lps = stored_as(nib.Nifti1Image(anatomy, np.eye(4)), ("L", "P", "S"))
    nib.save(lps, tmp_path / "lps.nii.gz")
    np.testing.assert_array_equal(read_image(tmp_path / "lps.nii.gz", nifti_orientation="axes")[0],
                                  np.asarray(lps.dataobj))
    save_pretrained(Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=1)), tmp_path / "new")
    record = json.loads((tmp_path / "new" / "config.json").read_text())
    assert record["data"]["nifti_orientation"] == "ras"
    del record["data"]["nifti_orientation"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(record))
    (tmp_path / "old" / "model.safetensors").write_bytes((tmp_path / "new" / "model.safetensors").read_bytes())
    old, new = load_pretrained(tmp_path / "old"), load_pretrained(tmp_path / "new")
    assert (old.data.nifti_orientation, new.data.nifti_orientation) == ("axes", "ras")
    slices = {}
    for name, model in (("old", old), ("new", new)):
        ramp = RowRamp(IdentityConfig(), model.data)
        translate_file(ramp, tmp_path / "lps.nii.gz", tmp_path / name)
        written = nib.load(tmp_path / name / "lps.nii.gz")
        np.testing.assert_allclose(written.affine, lps.affine)
        slices[name] = np.asarray(written.dataobj)
    # the old model translates the stored voxels as they lie: as the new one translates the same voxels
    # declared RAS
    nib.save(nib.Nifti1Image(np.asarray(lps.dataobj), np.eye(4)), tmp_path / "as_stored.nii.gz")
    translate_file(RowRamp(IdentityConfig(), new.data), tmp_path / "as_stored.nii.gz", tmp_path / "new")
    np.testing.assert_array_equal(slices["old"], np.asarray(nib.load(tmp_path / "new" / "as_stored.nii.gz").dataobj))
    assert not np.allclose(slices["old"], slices["new"])
