"""The paper benchmark's own arithmetic: field statistics against eta_t and the cross-task summary."""

import pytest
import torch
from helpers import InversionPairs, tiny_model

from benchmarks.paper import COLLAPSED, field_statistics_over_t, headline_metric
from benchmarks.paper_summary import summary_lines


def test_field_statistics_follow_eta_for_linear_and_vary_for_content():
    content = tiny_model(variant="content")
    with torch.no_grad():  # a mixer that reads the source gives a spatially varying field
        for parameter in content.mixer_parameters():
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
            "matched": {"linear": {"goal": linear, "steps": 10}, "dynamic": {"goal": linear, "steps": None}}}


def test_summary_marks_intervals_that_exclude_zero():
    lines = summary_lines({"sar-optical": _result(20.0, {"channel": 0.05, "dynamic": 0.5, COLLAPSED: -0.5})})
    row = next(line for line in lines if line.startswith("| sar-optical | psnr"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == "+0.0500 [-0.0500, +0.1500]"  # channel: interval holds 0
    assert cells[4].endswith("*") and cells[5] == "-" and cells[6].endswith("*")
    matched = next(line for line in lines if line.startswith("| sar-optical | 20.0000"))
    assert matched.endswith("| 10 | > 20 | - |")
