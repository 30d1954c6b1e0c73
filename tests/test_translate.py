"""A slice reaches the network identically whether it is read for training or translated inside its
NIfTI volume: one normalisation (cdtsde.intensity.volume_steps) and one resize serve both."""

import nibabel as nib
import numpy as np
import pytest
import torch

from cdtsde.data import build_dataset
from cdtsde.methods import DataInfo
from cdtsde.methods.identity import Identity, IdentityConfig
from cdtsde.translate import translate_file


@pytest.mark.parametrize("scale, offset", [(0.6, 0.0), (900.0, 0.0), (500.0, -200.0)])
def test_a_training_slice_and_the_translated_volume_reach_the_network_identically(tmp_path, scale, offset):
    """Volumes already in [0, 1] (the old `translate` kept them as they were while training rescaled
    them: inputs differed by up to 0.4), raw MRI intensities, and intensities with a negative part."""
    rng = np.random.default_rng(0)
    for modality in ("t1", "t2"):
        volume = (offset + scale * rng.random((24, 20, 5))).astype(np.float32)
        volume[:3] = 0  # background
        (tmp_path / "subj").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "subj" / f"subj_{modality}.nii.gz")
    spec = {"kind": "nifti", "root": str(tmp_path), "size": 16, "min_foreground": 0.0, "val_subjects": 0,
            "test_subjects": 0, "percentile": 99.0, "hflip": False}  # as `cdtsde train` builds it
    dataset = build_dataset(spec, "train")
    assert len(dataset) == 5

    method = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=1, image_size=16,
                                                 nifti_percentile=99.0))
    seen = []
    translate = method.translate
    method.translate = lambda sources, *args, **kwargs: seen.append(sources) or translate(sources, *args, **kwargs)
    translate_file(method, tmp_path / "subj" / "subj_t1.nii.gz", tmp_path / "out", batch_size=2)
    network_inputs = torch.cat(seen)
    assert network_inputs.shape == (5, 1, 16, 16)
    for index in range(5):
        item = dataset[index]
        assert item["name"] == f"subj_slice{index:03d}"
        assert torch.equal(network_inputs[index], item["source"])


@pytest.mark.parametrize("axis", [0, 1])
def test_volumes_cut_along_another_axis_are_translated_along_it(tmp_path, axis):
    """A model trained on slices along `axis` (the data spec's `axis`, recorded in its checkpoint) sees
    the translated volume's slices along that axis too, and the output volume is reassembled along it."""
    from cdtsde.run import data_info

    rng = np.random.default_rng(1)
    for modality in ("t1", "t2"):
        volume = (900.0 * rng.random((6, 7, 8))).astype(np.float32)
        (tmp_path / "subj").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "subj" / f"subj_{modality}.nii.gz")
    spec = {"kind": "nifti", "root": str(tmp_path), "axis": axis, "min_foreground": 0.0, "val_subjects": 0,
            "test_subjects": 0, "hflip": False, "vflip": False}
    dataset = build_dataset(spec, "train")
    info = data_info(dataset, spec)
    assert info.slice_axis == axis and info.training_scale == "resized"
    method = Identity(IdentityConfig(), info)
    seen = []
    translate = method.translate
    method.translate = lambda sources, *args, **kwargs: seen.append(sources) or translate(sources, *args, **kwargs)
    translate_file(method, tmp_path / "subj" / "subj_t1.nii.gz", tmp_path / "out")
    network_inputs = torch.cat(seen)
    assert len(network_inputs) == len(dataset) == (6, 7)[axis]
    for index in range(len(dataset)):
        assert torch.equal(network_inputs[index], dataset[index]["source"])
    written = nib.load(tmp_path / "out" / "subj_t1.nii.gz").get_fdata()
    volume = nib.load(tmp_path / "subj" / "subj_t1.nii.gz").get_fdata()
    expected = np.clip(volume / np.percentile(volume[volume != 0], 99.5), 0, 1)
    np.testing.assert_allclose(written, expected, atol=1e-4)
