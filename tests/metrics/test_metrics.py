import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cdtsde.metrics import (
    PV_EL_CLASSES,
    PV_EL_DEFECT,
    IntensityKMeans,
    binary_mask_metrics,
    format_table,
    image_metrics,
    image_metrics_batch,
    mask_metrics,
    paired_comparison,
    segmentation_dice,
    ssim_map,
    summarise,
)

RNG = np.random.default_rng(0)


def noisy_pair(shape, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    return np.clip(target + noise * rng.standard_normal(shape), 0, 1), target


@pytest.mark.parametrize("shape", [(32, 32), (29, 41), (16, 20, 3), (7, 7)])
def test_psnr_and_ssim_equal_scikit_image(shape):
    pred, target = noisy_pair(shape)
    scores = image_metrics(pred, target)
    channel_axis = -1 if len(shape) == 3 else None
    assert scores["ssim"] == pytest.approx(structural_similarity(pred, target, data_range=1, channel_axis=channel_axis), abs=1e-6)
    assert scores["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1), abs=1e-6)
    assert scores["mse"] == pytest.approx(np.mean((pred - target) ** 2), abs=1e-12)
    assert scores["mae"] == pytest.approx(np.mean(np.abs(pred - target)), abs=1e-12)
    if min(shape[:2]) >= 11:
        expected = structural_similarity(pred, target, data_range=1, channel_axis=channel_axis, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        assert scores["ssim_gaussian"] == pytest.approx(expected, abs=1e-6)
    else:
        assert math.isnan(scores["ssim_gaussian"])


def test_against_torchmetrics_with_the_known_difference_pinned():
    torchmetrics = pytest.importorskip("torchmetrics.functional.image")
    pred, target = noisy_pair((40, 36), seed=3)
    p, t = torch.tensor(pred)[None, None], torch.tensor(target)[None, None]
    scores = image_metrics(pred, target)
    assert scores["psnr"] == pytest.approx(torchmetrics.peak_signal_noise_ratio(p, t, data_range=1.0).item(), abs=1e-5)
    theirs = torchmetrics.structural_similarity_index_measure(p, t, data_range=1.0).item()
    # torchmetrics' Gaussian SSIM pads the images by reflection and averages the whole map; we (and
    # scikit-image) average only the 5-px-inset interior. Same map, different averaging region:
    padded = ssim_map(F.pad(p, (5,) * 4, mode="reflect"), F.pad(t, (5,) * 4, mode="reflect"), "gaussian")
    assert padded.mean().item() == pytest.approx(theirs, abs=1e-6)
    assert padded[..., 5:-5, 5:-5].mean().item() == pytest.approx(scores["ssim_gaussian"], abs=1e-9)
    assert abs(theirs - scores["ssim_gaussian"]) > 1e-3


def test_real_images(shared_data):
    from cdtsde.imagefiles import read_image
    from cdtsde.intensity import to_unit_image

    array, meta = read_image(shared_data / "ixi-slice" / "IXI002-Guys-0828-T2_slice90.nii.gz")
    target = to_unit_image(array, meta.format == "nifti")
    pred = np.clip(target + 0.05 * np.random.default_rng(1).standard_normal(target.shape), 0, 1)
    scores = image_metrics(pred, target)
    assert scores["ssim"] == pytest.approx(structural_similarity(pred, target, data_range=1), abs=1e-6)
    assert scores["psnr"] == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1), abs=1e-5)


def test_batch_agrees_with_single_images_and_masks_restrict():
    pred, target = noisy_pair((4, 24, 24), seed=5)
    batch = image_metrics_batch(torch.tensor(pred)[:, None], torch.tensor(target)[:, None])
    for i in range(4):
        single = image_metrics(pred[i], target[i])
        for key, value in single.items():
            assert batch[key][i] == pytest.approx(value, abs=1e-9)
    mask = np.zeros((24, 24), bool)
    mask[4:20, 6:18] = True
    restricted = image_metrics(pred[0], target[0], mask=mask)
    assert restricted["mse"] == pytest.approx(np.mean((pred[0][mask] - target[0][mask]) ** 2))
    assert restricted["ssim"] == pytest.approx(ssim_map(torch.tensor(pred[0])[None, None], torch.tensor(target[0])[None, None])[0, 0][1:17, 3:15].mean().item())
    assert all(math.isnan(v) for v in image_metrics(pred[0], target[0], mask=np.zeros((24, 24), bool)).values())


def test_identical_and_constant_images():
    image = RNG.random((16, 16))
    same = image_metrics(image, image)
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1) and same["mse"] == 0
    constant = image_metrics(np.full((16, 16), 0.3), np.full((16, 16), 0.7))
    # no variance on either side: SSIM is its luminance term alone, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    c1 = (0.01 * 1) ** 2
    assert constant["ssim"] == pytest.approx((2 * 0.3 * 0.7 + c1) / (0.3**2 + 0.7**2 + c1), rel=1e-9)
    assert constant["psnr"] == pytest.approx(10 * math.log10(1 / 0.16))
    with pytest.raises(ValueError, match="differ in shape"):
        image_metrics(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="smaller than the 7x7"):
        image_metrics(np.zeros((5, 8)), np.zeros((5, 8)))


def square(shift=0, size=40):
    mask = np.zeros((size, size), bool)
    mask[10:20, 10 + shift : 20 + shift] = True
    return mask


def medpy_border(mask):
    """medpy's surface: the mask minus its erosion by the 4-connected cross (medpy.metric.binary)."""
    from scipy import ndimage

    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), iterations=1)


def reference_hausdorff(pred, true):
    """HD and HD95 as medpy defines them (hd95: the 95th percentile of both directed surface distances
    together), from all pairwise border distances (scipy's cdist)."""
    a, b = np.argwhere(medpy_border(pred)), np.argwhere(medpy_border(true))
    distances = cdist(a, b)
    both = np.concatenate([distances.min(1), distances.min(0)])
    return both.max(), np.percentile(both, 95)


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_shifted_square_has_hausdorff_k(shift):
    scores = binary_mask_metrics(square(shift), square())
    assert scores["hd"] == pytest.approx(shift)
    assert scores["dice"] == pytest.approx(2 * 10 * (10 - shift) / 200)
    assert scores["iou"] == pytest.approx(10 * (10 - shift) / (200 - 10 * (10 - shift)))


def test_hand_made_cases():
    line = np.zeros((20, 20), bool)
    line[10, 2:18] = True
    assert binary_mask_metrics(line, line)["skeleton_f1"] == 1.0
    shifted = np.roll(line, 2, axis=0)
    assert binary_mask_metrics(shifted, line)["skeleton_f1"] == 1.0  # within the 2-px tolerance
    assert binary_mask_metrics(np.roll(line, 3, axis=0), line)["skeleton_f1"] == 0.0
    disjoint = binary_mask_metrics(square(), np.roll(square(), 20, axis=0))
    assert disjoint["dice"] == 0 and disjoint["iou"] == 0 and disjoint["precision"] == 0 and disjoint["hd"] == pytest.approx(20)


def test_empty_mask_policy():
    empty, full = np.zeros((30, 40), bool), np.ones((30, 40), bool)
    both = binary_mask_metrics(empty, empty)
    assert both["dice"] == 1 and both["hd"] == 0 and both["hd95"] == 0 and both["skeleton_f1"] == 1
    one = binary_mask_metrics(empty, square(size=40)[:30])
    assert one["dice"] == 0 and one["hd"] == pytest.approx(50.0) and one["recall"] == 0 and one["precision"] == 0
    all_foreground = binary_mask_metrics(full, full)
    assert all_foreground["dice"] == 1 and all_foreground["hd"] == 0


def test_hausdorff_against_pairwise_distances_on_random_shapes():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for _ in range(5):
        a = ndimage.gaussian_filter(rng.random((48, 48)), 3) > 0.5
        b = ndimage.gaussian_filter(rng.random((48, 48)), 3) > 0.5
        if not a.any() or not b.any():
            continue
        scores = binary_mask_metrics(a, b)
        hd, hd95 = reference_hausdorff(a, b)
        assert scores["hd"] == pytest.approx(hd) and scores["hd95"] == pytest.approx(hd95)
        assert scores["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_real_el_masks_per_class_and_defect_group(shared_data):
    from cdtsde.data.masks import read_mask

    # Cells with defects, so that every pairing below compares two non-empty defect masks (the all-clear
    # cells, the majority, would only exercise the empty-mask policy, tested above).
    paths = sorted((shared_data / "pv-el-cracks" / "val" / "ann").glob("*.png"))
    masks = [m for m in map(read_mask, paths[:120]) if np.isin(m, PV_EL_DEFECT).any()][:5]
    assert len(masks) >= 3, "expected defect cells among the first 120 pv-el-cracks val masks"
    for true, pred in zip(masks, masks[1:] + masks[:1]):
        scores = mask_metrics(pred, true, classes=PV_EL_CLASSES, foreground=PV_EL_DEFECT)
        assert "dice/background" not in scores and "hd95/defect" in scores and "skeleton_f1/busbar" in scores
        p, t = np.isin(pred, PV_EL_DEFECT), np.isin(true, PV_EL_DEFECT)
        assert scores["dice/defect"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
        assert scores["hd/defect"] == pytest.approx(reference_hausdorff(p, t)[0])
        pb, tb = pred == 4, true == 4  # class 4: busbar
        assert scores["dice/busbar"] == pytest.approx(2 * (pb & tb).sum() / (pb.sum() + tb.sum()))
        self_scores = mask_metrics(true, true, classes=PV_EL_CLASSES, foreground=PV_EL_DEFECT)
        assert all(v == (0.0 if k.startswith("hd") else 1.0) for k, v in self_scores.items())


def test_mask_metrics_names_and_errors():
    pred = np.array([[0, 1], [2, 2]])
    scores = mask_metrics(pred, pred)
    assert set(scores) == {f"{m}/{c}" for m in ("dice", "iou", "precision", "recall", "hd", "hd95", "skeleton_f1") for c in ("1", "2")}
    with pytest.raises(ValueError, match="differ in shape"):
        mask_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


def test_kmeans_segmentation_orders_clusters_by_intensity():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (32, 32))
    levels = np.array([0.1, 0.5, 0.9])
    image = levels[labels] + 0.02 * rng.standard_normal((32, 32))
    kmeans = IntensityKMeans(3).fit([image])
    np.testing.assert_allclose(kmeans.centres, levels, atol=0.01)
    np.testing.assert_array_equal(kmeans.segment(image), labels)
    assert segmentation_dice(kmeans, image, image) == {"dice/cluster0": 1.0, "dice/cluster1": 1.0, "dice/cluster2": 1.0}
    swapped = segmentation_dice(kmeans, 1 - image, image)
    assert swapped["dice/cluster1"] > 0.9 and swapped["dice/cluster0"] < 0.1


def test_summary_and_table():
    rows = [{"psnr": 20.0, "ssim": 0.5}, {"psnr": 30.0, "ssim": 0.7}, {"psnr": math.inf, "ssim": 0.6}]
    summary = summarise(rows)
    assert summary["psnr"] == {"mean": 25.0, "std": 5.0, "min": 20.0, "max": 30.0, "n": 2, "non_finite": 1}
    assert summary["ssim"]["mean"] == pytest.approx(0.6)
    table = format_table({"dynamic": summary}, ["ssim", "psnr"])
    assert table.splitlines()[2] == "| dynamic | 0.6000 ± 0.0816 | 25.00 ± 5.00 |"


def test_mask_table_has_a_row_per_class():
    from cdtsde.metrics import format_mask_table

    pred = np.array([[0, 1], [2, 2]])
    table = format_mask_table(summarise([mask_metrics(pred, pred, classes={1: "crack", 2: "busbar"})]))
    lines = table.splitlines()
    assert lines[0] == "| class | dice | iou | precision | recall | hd | hd95 | skeleton_f1 |"
    assert lines[2].startswith("| crack | 1.0000 ± 0.0000") and lines[3].startswith("| busbar |")


def _rows(values, prefix="item"):
    return [{"name": f"{prefix}{i}", "psnr": float(v)} for i, v in enumerate(values)]


def test_paired_comparison_finds_a_shift_and_pairs_by_name():
    rng = np.random.default_rng(0)
    baseline = rng.normal(25, 3, 40)  # wide spread between items, as between slices
    method = baseline + 0.5 + rng.normal(0, 0.1, 40)
    result = paired_comparison(_rows(method), _rows(baseline), "psnr")
    assert result["n"] == 40 and result["better_share"] == 1.0
    assert result["ci_low"] < 0.5 < result["ci_high"] and result["ci_low"] > 0.4
    assert result["wilcoxon_p"] < 1e-6
    shuffled = _rows(method)[::-1]
    assert paired_comparison(shuffled, _rows(baseline), "psnr") == result
    # unpaired, the same shift would drown in the spread between items
    assert abs(method.mean() - baseline.mean()) < 2 * baseline.std() / np.sqrt(40) * np.sqrt(2)
    worse = paired_comparison(_rows(method), _rows(baseline), "psnr", higher_is_better=False)
    assert worse["better_share"] == 0.0


def test_paired_comparison_interval_covers_the_true_mean():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        differences = rng.exponential(1.0, 30) - 1.0  # skewed, true mean 0
        result = paired_comparison(_rows(differences), _rows(np.zeros(30)), "psnr", resamples=1000)
        covered += result["ci_low"] <= 0.0 <= result["ci_high"]
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_comparison_edge_cases():
    same = paired_comparison(_rows([1.0, 2.0, 3.0]), _rows([1.0, 2.0, 3.0]), "psnr")
    assert same["mean_difference"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.0 and same["wilcoxon_p"] == 1.0
    with_nan = paired_comparison(_rows([1.0, math.nan, 3.0, 5.0]), _rows([0.0, 1.0, 1.0, 1.0]), "psnr")
    assert with_nan["n"] == 3 and with_nan["non_finite"] == 1
    assert math.isnan(paired_comparison(_rows([1.0]), _rows([0.0]), "psnr")["mean_difference"])
    with pytest.raises(ValueError, match="no baseline row"):
        paired_comparison(_rows([1.0, 2.0], "other"), _rows([1.0, 2.0]), "psnr")


def test_the_cluster_bootstrap_widens_the_interval_where_items_share_a_subject():
    """Six subjects of twenty slices each, the subject's effect much larger than the slices' noise: the
    item bootstrap's interval is far too narrow, the cluster bootstrap's reflects six units. With one item
    per cluster both agree; with two clusters there is no interval."""
    from cdtsde.metrics import paired_comparison

    rng = np.random.default_rng(0)
    effects = rng.normal(0.2, 1.0, 6)
    rows, base = [], []
    for subject, effect in enumerate(effects):
        for index in range(20):
            name = f"s{subject}_slice{index:03d}"
            rows.append({"name": name, "psnr": 20 + effect + rng.normal(0, 0.05)})
            base.append({"name": name, "psnr": 20.0})
    items = paired_comparison(rows, base, "psnr")
    clusters = paired_comparison(rows, base, "psnr", cluster_of=lambda name: name.split("_")[0])
    assert clusters["mean_difference"] == pytest.approx(items["mean_difference"])
    assert clusters["n_clusters"] == 6 and clusters["n"] == 120
    assert (clusters["ci_high"] - clusters["ci_low"]) > 3 * (items["ci_high"] - items["ci_low"])
    assert clusters["ci_low"] < clusters["mean_difference"] < clusters["ci_high"]

    singles = paired_comparison(rows[::20], base[::20], "psnr", cluster_of=lambda name: name)
    plain = paired_comparison(rows[::20], base[::20], "psnr")
    assert singles["ci_low"] == pytest.approx(plain["ci_low"], abs=0.02)
    assert singles["ci_high"] == pytest.approx(plain["ci_high"], abs=0.02)

    two = paired_comparison(rows[:40], base[:40], "psnr", cluster_of=lambda name: name.split("_")[0])
    assert two["n_clusters"] == 2 and math.isnan(two["ci_low"]) and math.isnan(two["wilcoxon_p"])


def test_a_mean_interval_is_the_paired_interval_against_zero():
    """One method's mean with its (cluster) bootstrap interval: the same numbers as its difference with a
    baseline of zeros, and the interval covers the population mean of a known distribution."""
    from cdtsde.metrics import mean_interval, paired_comparison

    rng = np.random.default_rng(1)
    rows = [{"name": f"s{i // 10}_slice{i % 10:03d}", "psnr": float(v)} for i, v in enumerate(rng.normal(20, 2, 80))]
    zeros = [{"name": row["name"], "psnr": 0.0} for row in rows]
    subject = lambda name: name.split("_")[0]  # noqa: E731
    for cluster_of in (None, subject):
        single = mean_interval(rows, "psnr", cluster_of=cluster_of)
        paired = paired_comparison(rows, zeros, "psnr", cluster_of=cluster_of)
        assert (single["mean"], single["ci_low"], single["ci_high"]) == pytest.approx(
            (paired["mean_difference"], paired["ci_low"], paired["ci_high"]))
        assert single["ci_low"] < 20 < single["ci_high"] and single["n"] == 80
    assert mean_interval(rows, "psnr", cluster_of=subject)["n_clusters"] == 8
    assert math.isnan(mean_interval(rows[:20], "psnr", cluster_of=subject)["ci_low"])  # two subjects


def scored_items(n=6, size=24, seed=0):
    """(name, prediction, target) triples of brain-like images: a zero background around a noisy target."""
    rng = np.random.default_rng(seed)
    items = []
    for index in range(n):
        target = rng.random((size, size, 1)) * 0.8 + 0.1
        target[: size // 3] = 0
        pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1)
        items.append((f"item{(7 * index) % n}", pred, target))  # names not in sorted order
    return items


def accumulated(items, **options):
    from cdtsde.metrics import ScoreAccumulator

    scores = ScoreAccumulator(**options)
    for name, pred, target in items:
        scores.update(name, pred, target)
    return scores


def test_accumulated_rows_are_the_metrics_of_each_item_and_the_summary_theirs():
    from cdtsde.metrics import fit_kmeans, perception_metrics
    from cdtsde.metrics.segmentation import kmeans_dice

    items = scored_items()
    kmeans = fit_kmeans([target for _, _, target in items[:2]], [3])
    rows, summary = accumulated(items, nonzero_foreground=True, kmeans=kmeans, perception=True).compute()
    assert [row["name"] for row in rows] == [name for name, _, _ in items]  # the order of the updates
    for row, (name, pred, target) in zip(rows, items):
        expected = {"name": name, **image_metrics(pred, target), **kmeans_dice(kmeans, pred, target),
                    **{f"{k}_fg": v for k, v in image_metrics(pred, target, target > 0).items()}}
        assert row == expected and list(row) == list(expected)
        assert row["mse_fg"] == pytest.approx(((pred - target)[target > 0] ** 2).mean())
    assert summary["mse"]["mean"] == pytest.approx(np.mean([row["mse"] for row in rows]), rel=1e-12)
    perception = perception_metrics([p for _, p, _ in items], [t for _, _, t in items])
    assert summary["perception/patch_swd"] == {"mean": perception["patch_swd"], "std": pytest.approx(math.nan, nan_ok=True),
                                               "min": perception["patch_swd"], "max": perception["patch_swd"],
                                               "n": len(items), "non_finite": 0}


def test_updates_in_two_batches_equal_one_and_compute_can_be_read_between():
    items = scored_items()
    options = {"nonzero_foreground": True, "perception": True}
    whole = accumulated(items, **options).compute()
    split = accumulated(items[:2], **options)
    first_rows, first_summary = split.compute()
    assert len(first_rows) == 2 and first_summary["psnr"]["n"] == 2
    for name, pred, target in items[2:]:
        split.update(name, pred, target)
    assert split.compute() == whole


def test_an_item_that_cannot_be_scored_leaves_the_accumulator_unchanged():
    items = scored_items(n=4)
    scores = accumulated(items[:3], perception=True)
    name, pred, target = items[3]
    with pytest.raises(ValueError, match="foreground of shape"):
        scores.update(name, pred, target, region=np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="differ in shape"):
        scores.update(name, pred[:-1], target)
    assert len(scores) == 3 and scores.compute() == accumulated(items[:3], perception=True).compute()


def test_a_given_region_overrides_the_nonzero_foreground_and_holds_for_every_channel():
    rng = np.random.default_rng(1)
    target, pred = rng.random((16, 16, 3)), rng.random((16, 16, 3))
    region = np.zeros((16, 16), bool)
    region[4:12, 2:9] = True
    row = accumulated([], nonzero_foreground=True).update("x", pred, target, region=region)
    assert row["mae_fg"] == pytest.approx(np.abs(pred - target)[region].mean(), rel=1e-12)


def test_masks_are_scored_per_class_and_image_options_refused():
    from cdtsde.metrics import ScoreAccumulator

    true = np.zeros((20, 20), int)
    true[2:8, 2:18], true[12:18, 5:9] = 2, 4
    pred = np.roll(true, 1, axis=1)
    options = {"classes": PV_EL_CLASSES, "foreground": PV_EL_DEFECT, "skeleton_tolerance": 1.0}
    rows, summary = accumulated([("m", pred, true)], kind="mask", **options).compute()
    assert rows == [{"name": "m", **mask_metrics(pred, true, **options)}]
    assert summary["dice/defect"]["mean"] == rows[0]["dice/defect"] < 1
    for image_option in ({"perception": True}, {"nonzero_foreground": True}, {"kmeans": [IntensityKMeans(3)]}):
        with pytest.raises(ValueError, match="not masks"):
            ScoreAccumulator("mask", **image_option)
    with pytest.raises(ValueError, match="masks are scored per class"):
        ScoreAccumulator("mask").update("m", pred, true, region=true > 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ScoreAccumulator("volume")


def test_an_empty_accumulator_refuses_to_summarise():
    with pytest.raises(ValueError, match="no items were scored"):
        accumulated([]).compute()


def test_fit_kmeans_fits_one_clustering_per_count():
    from cdtsde.metrics import fit_kmeans

    rng = np.random.default_rng(0)
    images = [rng.random((12, 12)) for _ in range(3)]
    models = fit_kmeans(images, [3, 5], seed=2)
    assert [m.clusters for m in models] == [3, 5]
    for model in models:
        np.testing.assert_array_equal(model.centres, IntensityKMeans(model.clusters, seed=2).fit(images).centres)
    with pytest.raises(ValueError, match="no images"):
        fit_kmeans([], [3])
