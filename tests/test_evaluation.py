import json

import numpy as np
import pytest
import torch
from helpers import InversionPairs, tiny_model

from cdtsde.data import build_dataset
from cdtsde.evaluation import evaluate_model
from cdtsde.metrics import PV_EL_CLASSES, PV_EL_DEFECT, image_metrics


def test_image_model_scores_every_pair():
    model = tiny_model().eval()
    rows, summary = evaluate_model(model, InversionPairs(n=5), steps=2, batch_size=2)
    assert [row["name"] for row in rows] == [f"pair{i:03d}" for i in range(5)]
    assert summary["psnr"]["n"] == 5 and summary["seconds_per_image"]["mean"] > 0
    # an untrained model predicts x0 = 0 (grey 0.5) whatever the source: each row scores a flat grey image
    pairs = InversionPairs(n=5)
    for i, row in enumerate(rows):
        target = ((pairs[i]["target"][0] + 1) / 2).numpy()
        flat = image_metrics(np.full(target.shape, 0.5), target)
        assert all(row[key] == pytest.approx(flat[key], rel=1e-6) for key in ("psnr", "ssim", "mse", "mae"))


def test_the_batch_size_changes_only_the_timing_and_an_empty_set_is_refused():
    """The rows and summary come from one accumulator fed item by item: the batches only split the
    translation (the identity's is exact, so a batch cannot change a prediction)."""
    from cdtsde.methods import DataInfo
    from cdtsde.methods.identity import Identity, IdentityConfig

    method = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=1, image_size=16))
    data = InversionPairs(n=5)
    results = [evaluate_model(method, data, batch_size=size, nonzero_foreground=True, perception=True)
               for size in (2, 5)]
    (rows, summary), (whole_rows, whole_summary) = (
        ([{k: v for k, v in row.items() if k != "seconds_per_image"} for row in result[0]],
         {k: v for k, v in result[1].items() if k != "seconds_per_image"}) for result in results)
    assert rows == whole_rows and list(rows[0])[-1] == "ssim_gaussian_fg"
    assert list(results[0][0][0])[-1] == "seconds_per_image"
    assert json.dumps(summary) == json.dumps(whole_summary) and summary["perception/patch_swd"]["n"] == 5
    with pytest.raises(ValueError, match="no items were scored"):
        evaluate_model(method, InversionPairs(n=0))


def test_mask_model_is_scored_per_class_and_defect_group():
    data = build_dataset({"kind": "procedural", "task": "el-cell", "n": 3, "size": 16, "seed": 2}, "train")
    model = tiny_model(source_channels=1, target_channels=5, target_kind="mask").eval()
    rows, summary = evaluate_model(model, data, steps=1, classes=PV_EL_CLASSES, foreground=PV_EL_DEFECT)
    assert len(rows) == 3 and "dice/defect" in summary and "hd95/busbar" in summary
    # the untrained model's argmax is class 0 everywhere: no busbar predicted where cells have busbars
    assert summary["recall/busbar"]["max"] == pytest.approx(0.0)
    assert torch.is_tensor(data[0]["target"]) and data[0]["target"].shape[0] == 5


def test_nonzero_foreground_scores_only_the_target_support():
    data = InversionPairs(n=3)
    data.targets = torch.where(data.sources > 0, data.targets, -torch.ones_like(data.targets))  # background at 0
    model = tiny_model().eval()
    rows, _ = evaluate_model(model, data, steps=1, nonzero_foreground=True)
    prediction = ((model.translate(data.sources, steps=1, generator=torch.Generator().manual_seed(0)).images.clamp(-1, 1)
                   + 1) / 2)
    for row, pred, target in zip(rows, prediction, (data.targets + 1) / 2):
        region = target[0] > 0
        expected = ((pred[0] - target[0])[region] ** 2).mean()
        assert row["mse_fg"] == pytest.approx(float(expected), rel=1e-5)
        assert row["mse_fg"] != pytest.approx(row["mse"], rel=1e-3)


def test_perception_metrics_are_set_level_entries_of_the_summary():
    """The identity method on pairs whose target is the source: the sets are identical, so both distances
    are 0 and the sharpness ratio 1; the table shows the set value without a spread."""
    from cdtsde.methods import DataInfo
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.metrics import format_table

    class SelfPairs(InversionPairs):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return {**item, "target": item["source"]}

    method = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=1, image_size=16))
    _, summary = evaluate_model(method, SelfPairs(n=6), perception=True, batch_size=4)
    assert summary["perception/patch_swd"]["mean"] == 0 and summary["perception/spectral_distance"]["mean"] == 0
    assert summary["perception/sharpness_ratio"]["mean"] == 1 and summary["perception/patch_swd"]["n"] == 6
    assert format_table({"identity": summary}, ["perception/sharpness_ratio"]).splitlines()[-1] == "| identity | 1.0000 |"
    _, plain = evaluate_model(method, InversionPairs(n=6), perception=True, batch_size=4)
    assert plain["perception/patch_swd"]["mean"] > 0
