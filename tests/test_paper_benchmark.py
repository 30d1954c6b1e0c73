"""The paper benchmark's own arithmetic: field statistics against eta_t and the cross-task summary."""

import pytest
import torch
from helpers import InversionPairs, tiny_model

from benchmarks.paper import COLLAPSED, field_statistics_over_t, headline_metric, matched_fidelity
from benchmarks.paper_summary import envelope_position, seed_lines, summary_lines


def test_field_statistics_follow_eta_for_linear_and_vary_for_content():
    content = tiny_model(variant="content")
    with torch.no_grad():  # a mixer that reads the source gives a spatially varying field
        for parameter in content.field.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    stats = field_statistics_over_t({"linear": tiny_model(variant="linear"), "content": content}, InversionPairs(n=4))
    for row in stats["linear"]:
        assert row["mean"] == pytest.approx(row["eta"], abs=1e-6) and row["spatial_std"] == pytest.approx(0, abs=1e-6)
    assert stats["linear"][0]["eta"] < 1e-4 and stats["linear"][-1]["eta"] > 0.99
    assert max(row["spatial_std"] for row in stats["content"]) > 1e-3


def _result(linear, differences, is_mask=False):
    key = headline_metric("el-mask" if is_mask else "sar-optical", is_mask)
    paired = {field: {key: {"mean_difference": d, "ci_low": d - 0.1, "ci_high": d + 0.1}} for field, d in differences.items()}
    return {"table": {"linear": {key: {"mean": linear}}}, "paired_against_linear": paired,
            "matched": {"1.0": {"linear": {"goal": linear, "steps": 10}, "dynamic": {"goal": linear, "steps": None}}}}


def test_summary_marks_intervals_that_exclude_zero():
    lines = summary_lines({"sar-optical": _result(20.0, {"channel": 0.05, "dynamic": 0.5, COLLAPSED: -0.5})})
    row = next(line for line in lines if line.startswith("| sar-optical | psnr"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "+0.0500 [-0.0500, +0.1500]"  # channel: interval holds 0
    assert cells[4].endswith("*") and cells[5] == "-" and cells[6].endswith("*")
    matched = next(line for line in lines if line.startswith("| sar-optical | 1 | 20.0000"))
    assert matched.endswith("| 10 | > 20 | - |")


@pytest.mark.parametrize("bias, expected", [(-30.0, 0.0), (30.0, 1.0)])
def test_envelope_position_is_zero_and_one_on_the_bounds_of_eq2(bias, expected):
    model = tiny_model(variant="dynamic")
    with torch.no_grad():  # saturate g = 2 sigmoid(.) - 1 at -1 or +1 everywhere
        model.field.net[-1].bias.fill_(bias)
    stats = field_statistics_over_t({"dynamic": model}, InversionPairs(n=4))["dynamic"]
    rows = [row for row in stats if 0.01 < row["eta"] < 0.99]
    assert len(rows) >= 5
    for key in ("mean", "min", "max"):
        assert envelope_position(rows, model.field.squash_eps, key) == pytest.approx(expected, abs=1e-3)


def test_envelope_position_of_a_fresh_field_lies_inside_the_band():
    model = tiny_model(variant="dynamic")  # g = 0: f = eta, strictly between eta^2 and 2 eta - eta^2
    rows = [row for row in field_statistics_over_t({"dynamic": model}, InversionPairs(n=4))["dynamic"]
            if 0.01 < row["eta"] < 0.99]
    position = envelope_position(rows, model.field.squash_eps, "mean")
    assert bool(((position > 0.1) & (position < 0.9)).all())


def test_matched_fidelity_finds_the_fewest_steps_reaching_linear_at_10():
    sweep = {"linear": {1: 0.1, 2: 0.2, 3: 0.3, 5: 0.4, 10: 0.5, 20: 0.6},
             "dynamic": {1: 0.45, 2: 0.5, 3: 0.7, 5: 0.7, 10: 0.7, 20: 0.7},
             "content": {n: 0.49 for n in (1, 2, 3, 5, 10, 20)}}
    table = {v: {"seconds_per_image": {"mean": 1.0}} for v in sweep}
    matched = matched_fidelity(sweep, table)
    assert matched["linear"]["steps"] == 10 and matched["linear"]["seconds_per_image"] == pytest.approx(2.0)
    assert matched["dynamic"]["steps"] == 2 and matched["dynamic"]["seconds_per_image"] == pytest.approx(0.4)
    assert matched["content"] == {"goal": 0.5, "steps": None, "seconds_per_image": None}


def test_seed_lines_give_one_row_per_training_seed():
    seeds = {0: _result(20.0, {"dynamic": 0.5}), 1: _result(21.0, {"dynamic": 0.05})}
    rows = [line for line in seed_lines({"sar-optical": seeds}) if line.startswith("| sar-optical")]
    assert [row.split("|")[3].strip() for row in rows] == ["0", "1"]
    assert rows[0].split("|")[4].strip() == "20.0000" and rows[1].split("|")[4].strip() == "21.0000"
    assert rows[0].rstrip(" |").endswith("- | +0.5000 [+0.4000, +0.6000]* | - | -")
    assert "+0.0500 [-0.0500, +0.1500] |" in rows[1] and "*" not in rows[1]


@pytest.mark.parametrize("scale", ["cpu", "cpu-long", "128"])
@pytest.mark.parametrize("task", ["brats-t2t1", "brats-flairt1"])
def test_every_zero_shot_preset_builds_each_method(scale, task, monkeypatch):
    """The zero-shot benchmark's configurations are valid for every method, task and scale (no data read:
    the subject list is stubbed): same images seen by every model, CycleGAN on two disjoint halves."""
    from benchmarks import zero_shot
    from cdtsde.methods import DataInfo, method_class
    from cdtsde.settings import from_plain
    from cdtsde.training import TrainConfig

    monkeypatch.setattr(zero_shot, "training_subjects", lambda data: [f"s{i}" for i in range(8)])
    budgets = set()
    for name in (zero_shot.UPPER, *zero_shot.METHODS):
        config = zero_shot.method_config(task, name, scale, seed=0)
        cls = method_class(config.get("method", "cdtsde"))
        train = from_plain(TrainConfig, {**cls.train_defaults, **config["train"]}, "train")
        budgets.add(train.max_steps * train.batch_size)
        size = config["data"].get("size") or config["data"]["source"]["size"]
        cls(from_plain(cls.config_class, config.get("model"), "model"),
            DataInfo(source_channels=None if cls.data_kind == "target-only" else 1, target_channels=1, image_size=size))
        if name == "cyclegan":
            halves = config["data"]["source"]["subjects"], config["data"]["target"]["subjects"]
            assert not set(halves[0]) & set(halves[1]) and config["data"]["source"]["source"] == task.split("-")[1][:-2]
    assert len(budgets) == 1
