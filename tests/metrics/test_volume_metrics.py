"""Volume metrics (cdtsde.metrics.volume) against hand computations and scikit-image, on the one scoring
path (ScoreAccumulator.update_volume) and in evaluate_model; the figure of orthogonal cuts."""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cdtsde.imagefiles import ImageMeta, canonical_orientation
from cdtsde.metrics import ScoreAccumulator, image_metrics
from cdtsde.metrics.volume import (
    ARRAY_AXCODES,
    axis_codes,
    axis_codes_of,
    flicker_ratio,
    plane_axes,
    plane_metrics,
    psnr_3d,
    ssim_3d,
    volume_metrics,
)


def textured(shape, seed=0):
    """Values in [0.2, 0.8], so that +-0.1 errors are never clipped."""
    return 0.2 + 0.6 * np.random.default_rng(seed).random(shape)


def test_psnr_3d_of_known_noise_and_inside_a_mask():
    target = textured((12, 13, 14))
    signs = np.where(np.random.default_rng(1).random(target.shape) < 0.5, -1.0, 1.0)
    assert psnr_3d(target + 0.1 * signs, target) == pytest.approx(20.0)  # MSE 0.01 exactly
    mask = np.zeros(target.shape, bool)
    mask[2:9, 3:10, 4:11] = True
    noisy = target + np.where(mask, 0.01, 0.1) * signs  # MSE 1e-4 inside the mask, 1e-2 outside
    assert psnr_3d(noisy, target, mask) == pytest.approx(40.0)
    assert psnr_3d(target, target) == math.inf and math.isnan(psnr_3d(noisy, target, np.zeros_like(mask)))


def test_ssim_3d_is_scikit_images_and_reduces_to_the_2d_gaussian_ssim():
    from skimage.metrics import structural_similarity

    target = textured((16, 15, 13))
    prediction = np.clip(target + 0.1 * np.random.default_rng(2).standard_normal(target.shape), 0, 1)
    reference = structural_similarity(prediction, target, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert ssim_3d(prediction, target) == pytest.approx(reference, abs=1e-12)
    # constant along the third axis, the 3-D window sees each slice's 2-D one: the 3-D SSIM is the 2-D
    # Gaussian SSIM of one slice (cdtsde.metrics.image, computed independently of scikit-image)
    flat_target, flat_prediction = (np.repeat(a[:, :, :1], 13, axis=2) for a in (target, prediction))
    two_d = image_metrics(flat_prediction[:, :, 0], flat_target[:, :, 0])["ssim_gaussian"]
    assert ssim_3d(flat_prediction, flat_target) == pytest.approx(two_d, abs=1e-9)
    # the mask restricts the mean of the map to its voxels among the centres 5 voxels inside every face
    _, full = structural_similarity(prediction, target, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    mask = np.zeros(target.shape, bool)
    mask[3:9, 6:12, 5:8] = True
    assert ssim_3d(prediction, target, mask) == pytest.approx(full[5:9, 6:10, 5:8].mean(), abs=1e-12)
    assert math.isnan(ssim_3d(prediction, target, ~np.pad(np.ones((6, 5, 3), bool), 5)))  # the border only
    assert math.isnan(ssim_3d(prediction[:, :, :10], target[:, :, :10]))  # under the 11-voxel window


def test_flicker_ratio_is_one_for_identical_volumes_and_exact_for_alternating_offsets():
    """Target: a ramp of 0.02 a slice along the slice axis over an in-plane texture; prediction: the target
    with +-0.01 alternating per slice. Adjacent differences 0.02 -+ 0.02: over an even number of pairs the
    mean square is 0.02^2 + 4 * 0.01^2, twice the target's 0.02^2."""
    texture = textured((10, 9, 1), seed=3) * 0.5
    ramp = 0.02 * np.arange(13)
    target = texture + ramp  # slice axis 2, 12 adjacent pairs
    prediction = target + 0.01 * (-1.0) ** np.arange(13)
    assert flicker_ratio(target, target) == 1.0
    assert flicker_ratio(prediction, target, slice_axis=2) == pytest.approx(2.0)
    assert flicker_ratio(prediction, target, slice_axis=0) == pytest.approx(1.0)  # the same in-plane changes
    mask = np.zeros(target.shape, bool)
    mask[:, :, :5] = True  # 4 pairs inside: the alternating part still cancels
    assert flicker_ratio(prediction, target, 2, mask) == pytest.approx(2.0)
    mask[:] = False
    mask[:, :, 5:7] = True  # one pair, 5 -> 6: difference 0.02 + 0.02, squared 0.0016 over 0.0004
    assert flicker_ratio(prediction, target, 2, mask) == pytest.approx(4.0)
    mask[:, :, 4] = True  # and 4 -> 5: difference 0.02 - 0.02
    assert flicker_ratio(prediction, target, 2, mask) == pytest.approx(2.0)
    assert math.isnan(flicker_ratio(prediction, np.repeat(texture, 13, axis=2)))  # a target without change


def test_plane_metrics_are_the_mean_of_2d_metrics_over_the_cuts_of_each_plane():
    target = textured((9, 11, 8), seed=4)
    prediction = np.clip(target + 0.05 * np.random.default_rng(5).standard_normal(target.shape), 0, 1)
    mask = target > 0.35
    codes = ("S", "R", "A")  # axial cuts across axis 0, sagittal across 1, coronal across 2
    assert plane_axes(codes) == {"axial": 0, "sagittal": 1, "coronal": 2}
    scores = plane_metrics(prediction, target, mask, codes)
    for plane, axis in plane_axes(codes).items():
        cuts = [image_metrics(np.take(prediction, k, axis), np.take(target, k, axis), np.take(mask, k, axis))
                for k in range(target.shape[axis])]
        for key in ("psnr", "ssim"):
            assert scores[f"{key}_{plane}"] == pytest.approx(np.mean([cut[key] for cut in cuts]), abs=1e-12)
    identical = plane_metrics(target, target)
    assert identical["psnr_axial"] == math.inf and identical["ssim_axial"] == pytest.approx(1.0)
    # a cut with an empty mask has no score and is left out of the mean
    mask[:, :, 0] = False
    first_cut_out = plane_metrics(prediction, target, mask)["psnr_axial"]
    kept = [image_metrics(prediction[:, :, k], target[:, :, k], mask[:, :, k])["psnr"] for k in range(1, 8)]
    assert first_cut_out == pytest.approx(np.mean(kept), abs=1e-12)


def test_axis_codes_from_the_affine():
    assert axis_codes(None) == ARRAY_AXCODES == ("R", "A", "S")
    assert axis_codes(np.diag([-1.0, -1.0, 1.0, 1.0])) == ("L", "P", "S")  # BraTS' LPS
    permuted = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    assert axis_codes(permuted) == ("A", "I", "R")
    assert plane_axes(axis_codes(permuted)) == {"coronal": 0, "axial": 1, "sagittal": 2}
    # a volume as read: the codes follow the axes in the order the reader put them in
    meta = ImageMeta(path=Path("v.nii.gz"), format="nifti", dtype=np.dtype(np.float32), affine=permuted)
    assert axis_codes_of(meta) == ("A", "I", "R") and axis_codes_of(None) == ARRAY_AXCODES
    meta.extra["orientation"] = canonical_orientation(permuted)  # as read: moved and flipped to R, A, S
    assert axis_codes_of(meta) == ("R", "A", "S")
    meta.affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS' LPS, flipped in x and y as read
    meta.extra["orientation"] = canonical_orientation(meta.affine)
    assert axis_codes_of(meta) == ("R", "A", "S")


def test_the_accumulator_scores_volumes_beside_items_with_the_brain_mask_in_3d():
    target = textured((12, 12, 12), seed=6)
    target[:, :, :2] = 0  # background: outside the brain
    rng = np.random.default_rng(7)
    scores = ScoreAccumulator("image", nonzero_foreground=True)
    predictions = [np.clip(target + s * rng.standard_normal(target.shape), 0, 1) for s in (0.02, 0.05, 0.1)]
    for index, prediction in enumerate(predictions):
        row = scores.update_volume(f"v{index}", prediction, target, codes=("L", "P", "S"), slice_axis=2)
        expected = volume_metrics(prediction, target, target > 0, ("L", "P", "S"), 2)
        assert row == {"name": f"v{index}", **expected}
    assert len(scores) == 0  # items and volumes are counted apart
    rows, summary = scores.compute_volumes()
    assert [row["name"] for row in rows] == ["v0", "v1", "v2"]
    values = [row["psnr3d_fg"] for row in rows]
    assert summary["psnr3d_fg"]["mean"] == pytest.approx(np.mean(values)) and summary["psnr3d_fg"]["n"] == 3
    assert summary["psnr3d_fg"]["ci_low"] <= np.mean(values) <= summary["psnr3d_fg"]["ci_high"]
    assert {"flicker", "flicker_fg", "ssim3d", "ssim_sagittal_fg"} <= set(summary)
    with pytest.raises(ValueError, match="not masks"):
        ScoreAccumulator("mask", classes={}).update_volume("m", target, target)
    assert ScoreAccumulator().compute_volumes() == ([], {})


def write_subject(root, subject, affine, shape=(14, 12, 13), seed=0):
    rng = np.random.default_rng(seed)
    (root / subject).mkdir(parents=True, exist_ok=True)
    for modality in ("t1", "t2"):
        volume = (900.0 * rng.random(shape)).astype(np.float32)
        volume[:2] = 0
        nib.save(nib.Nifti1Image(volume, affine), root / subject / f"{subject}_{modality}.nii.gz")


@pytest.mark.parametrize("axis", [2, 0])
def test_evaluate_model_stacks_slices_back_into_volumes(tmp_path, axis):
    """The identity's translations of a NIfTI slice dataset, grouped by subject and slice index and put
    back along the data's axis, score as `volume_metrics` of the stacked sources against the stacked
    targets, with the planes of the target file's affine (in the canonical orientation the reader puts the
    voxels in: R, A, S for a file stored A, I, R)."""
    from cdtsde.data import build_dataset
    from cdtsde.evaluation import evaluate_model
    from cdtsde.imagefiles import canonical_shape
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.run import data_info

    permuted = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)  # codes A, I, R
    shape, codes = canonical_shape((14, 12, 13), canonical_orientation(permuted)), ("R", "A", "S")
    assert shape == (13, 14, 12)
    for index, subject in enumerate(("subjA", "subjB")):
        write_subject(tmp_path, subject, permuted, seed=index)
    spec = {"kind": "nifti", "root": str(tmp_path), "axis": axis, "min_foreground": 0.0, "val_subjects": 0,
            "test_subjects": 0, "hflip": False, "vflip": False}
    dataset = build_dataset(spec, "train")
    method = Identity(IdentityConfig(), data_info(dataset, spec))
    rows, summary, volume_rows, volume_summary = evaluate_model(method, dataset, batch_size=5, volumes=True,
                                                                nonzero_foreground=True)
    assert len(rows) == len(dataset) == 2 * shape[axis] and [r["name"] for r in volume_rows] == ["subjA",
                                                                                                        "subjB"]
    for row in volume_rows:
        items = [item for item in (dataset[i] for i in range(len(dataset))) if item["name"].startswith(row["name"])]
        source, target = (np.moveaxis(np.stack([(item[key][0].numpy() + 1) / 2 for item in items]), 0, axis)
                          for key in ("source", "target"))
        assert target.shape == shape
        expected = volume_metrics(source, target, target > 0, codes, axis)
        assert {k: v for k, v in row.items() if k != "name"} == pytest.approx(expected, abs=1e-6)
    assert volume_summary["flicker_fg"]["n"] == 2
    plain_rows, _ = evaluate_model(method, dataset, batch_size=5, nonzero_foreground=True)  # no volumes: as before
    assert json.dumps([{k: v for k, v in row.items() if k != "seconds_per_image"} for row in plain_rows]) == json.dumps(
        [{k: v for k, v in row.items() if k != "seconds_per_image"} for row in rows])


def test_evaluate_model_refuses_volumes_with_missing_slices(tmp_path):
    from cdtsde.data import build_dataset
    from cdtsde.evaluation import evaluate_model
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.run import data_info

    write_subject(tmp_path, "subjA", np.eye(4))
    spec = {"kind": "nifti", "root": str(tmp_path), "min_foreground": 0.0, "slice_step": 2, "val_subjects": 0,
            "test_subjects": 0, "hflip": False, "vflip": False}
    dataset = build_dataset(spec, "train")
    with pytest.raises(ValueError, match=r"subjA: slices \[1, 3, 5, 7, 9\] ... are missing"):
        evaluate_model(Identity(IdentityConfig(), data_info(dataset, spec)), dataset, volumes=True)


def test_to_ras_orders_and_flips_the_axes():
    from cdtsde.visualize import to_ras

    volume = np.zeros((3, 4, 5))
    volume[0, 1, 2] = 1  # LPS: index 0 of axis 0 is the rightmost, index 1 of axis 1 the second most anterior
    ras = to_ras(volume, ("L", "P", "S"))
    assert ras.shape == (3, 4, 5) and np.argwhere(ras).tolist() == [[2, 2, 2]]
    assert np.argwhere(to_ras(volume, ("S", "R", "A"))).tolist() == [[1, 2, 0]]


def test_the_volume_figure_has_three_cuts_per_volume_and_200_px_panels(tmp_path):
    from PIL import Image

    from cdtsde.visualize import VolumeRow, save_volume_cuts

    target = textured((20, 18, 16), seed=8)
    translation = target + 0.05 * (-1.0) ** np.arange(16)  # flickering along the slices
    rows = [VolumeRow("a", {"source": 1 - target, "translation": translation, "target": target}, target > 0.5,
                      ("L", "P", "S")),
            VolumeRow("b", {"translation": translation, "target": target})]
    path = save_volume_cuts(tmp_path / "cuts.png", rows)
    with Image.open(path) as image:
        assert image.size == (9 * 200, 2 * 200)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # something was drawn


def test_volume_metrics_refuse_other_shapes():
    with pytest.raises(ValueError, match="3-D volumes of one shape"):
        volume_metrics(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="slice_axis"):
        volume_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), slice_axis=3)


def test_evaluate_model_draws_a_volume_s_slices_as_its_volume_noise_says(tmp_path):
    """A volume whose slices are all alike, translated by a stochastic sampler: with shared volume noise every
    slice draws the same noise and scores alike, whatever the batch size; with one generator for the batches
    (the default) or correlated noise the slices differ."""
    import torch
    from helpers import tiny_model

    from cdtsde.data import build_dataset
    from cdtsde.evaluation import evaluate_model
    from cdtsde.translate import VolumeNoise

    plane = 100 + 800 * np.random.default_rng(0).random((16, 16, 1))
    (tmp_path / "subjA").mkdir()
    for modality in ("t1", "t2"):
        volume = np.repeat(plane, 6, axis=2).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "subjA" / f"subjA_{modality}.nii.gz")
    dataset = build_dataset({"kind": "nifti", "root": str(tmp_path), "size": 16, "min_foreground": 0.0,
                             "val_subjects": 0, "test_subjects": 0, "hflip": False, "vflip": False}, "train")
    model = tiny_model(size=16)
    for parameter in model.net.parameters():
        parameter.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    model.eval()

    def scores(noise, batch_size=4):
        rows, _ = evaluate_model(model, dataset, batch_size=batch_size, volume_noise=noise, steps=3, gamma=1.0)
        return [row["psnr"] for row in rows]

    def spread(found):  # across the slices; a batch's float rounding differs by ~1e-8 dB from another's
        return max(found) - min(found)

    shared = scores(VolumeNoise("shared"))
    assert len(shared) == 6 and spread(shared) < 1e-6
    assert scores(VolumeNoise("shared"), batch_size=5) == pytest.approx(shared, abs=1e-6)
    assert spread(scores(None)) > 1e-3 and spread(scores(VolumeNoise("correlated", 0.9))) > 1e-3
    assert scores(VolumeNoise("independent")) == scores(None)
