"""Neighbouring-slice context (`data.context_slices`): the builder at a volume's edges, the NIfTI datasets'
sources holding their slice's neighbours from the whole volume, and the kinds without slices refusing it."""

import dataclasses

import nibabel as nib
import numpy as np
import pytest
from helpers import ixi_volumes

from cdtsde.data import build_dataset
from cdtsde.data.nifti import context_indices, with_context
from cdtsde.data.specs import DATA_SPECS, data_spec
from cdtsde.errors import CdtsdeError
from cdtsde.intensity import VOLUME_STEPS, volume_steps


def test_context_indices_replicate_the_first_and_last_slice_at_the_edges():
    assert context_indices(5, 2).tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4],
                                              [1, 2, 3, 4, 4], [2, 3, 4, 4, 4]]
    assert context_indices(3, 0).tolist() == [[0], [1], [2]]
    assert context_indices(1, 1).tolist() == [[0, 0, 0]]


def test_with_context_stacks_neighbours_slice_major_with_the_slice_itself_in_the_middle():
    count, channels = 4, 2
    # slice s, channel c holds 10 s + c everywhere
    slices = (10 * np.arange(count)[:, None] + np.arange(channels)).astype(np.float32)[:, None, None, :]
    slices = np.broadcast_to(slices, (count, 3, 5, channels))
    stacked = with_context(slices, 1)
    assert stacked.shape == (count, 3, 5, 3 * channels)
    assert stacked[0, 0, 0].tolist() == [0, 1, 0, 1, 10, 11]  # slice 0: itself for the missing slice -1
    assert stacked[2, 1, 4].tolist() == [10, 11, 20, 21, 30, 31]
    assert stacked[3, 2, 2].tolist() == [20, 21, 30, 31, 30, 31]  # the last slice stands in for slice 4
    np.testing.assert_array_equal(with_context(slices, 0), slices)


def test_nifti_sources_carry_their_neighbours_from_the_whole_volume_and_targets_stay_one_slice(tmp_path):
    ixi_volumes(tmp_path, subjects=1, shape=(12, 12, 6))
    source_volume = nib.load(tmp_path / "IXI000-Guys-0001-T1.nii.gz").get_fdata()
    target_volume = nib.load(tmp_path / "IXI000-Guys-0001-T2.nii.gz").get_fdata()
    source_volume[:, :, 0] = 0  # slice 0 left out (no foreground) but still a neighbour of slice 1
    target_volume[:, :, 0] = 0
    for name, volume in (("T1", source_volume), ("T2", target_volume)):
        nib.save(nib.Nifti1Image(volume.astype(np.int16), np.eye(4)), tmp_path / f"IXI000-Guys-0001-{name}.nii.gz")
    spec = {"kind": "ixi", "root": str(tmp_path), "val_subjects": 0, "test_subjects": 0, "hflip": False,
            "context_slices": 2}
    dataset = build_dataset(spec, "train")
    assert dataset.source_channels == 5 and dataset.target_channels == 1 and len(dataset) == 5
    unit_source = volume_steps(source_volume) / np.float32(VOLUME_STEPS) * 2 - 1
    unit_target = volume_steps(target_volume) / np.float32(VOLUME_STEPS) * 2 - 1
    for item in (dataset[i] for i in range(len(dataset))):
        number = int(item["name"].rsplit("_slice", 1)[1])
        around = np.clip(np.arange(number - 2, number + 3), 0, 5)
        np.testing.assert_allclose(item["source"].numpy(), np.moveaxis(unit_source[:, :, around], -1, 0), atol=1e-6)
        np.testing.assert_allclose(item["target"].numpy(), unit_target[None, :, :, number], atol=1e-6)
    first = dataset[0]
    assert first["name"].endswith("_slice001")
    np.testing.assert_allclose(first["source"][0].numpy(), unit_source[:, :, 0], atol=1e-6)  # replicated edge
    np.testing.assert_allclose(first["source"][1].numpy(), unit_source[:, :, 0], atol=1e-6)  # left-out slice 0
    without = build_dataset({**spec, "context_slices": 0}, "train")
    assert without.source_channels == 1
    np.testing.assert_array_equal(without[2]["source"][0].numpy(), dataset[2]["source"][2].numpy())


def test_two_d_slice_files_have_no_neighbours_and_are_skipped_with_context(tmp_path):
    for modality in ("T1", "T2"):
        nib.save(nib.Nifti1Image(np.full((8, 8), 100, np.int16), np.eye(4)),
                 tmp_path / f"IXI002-Guys-0828-{modality}_slice90.nii.gz")
    ixi_volumes(tmp_path, subjects=1, shape=(8, 8, 3))
    dataset = build_dataset({"kind": "ixi", "root": str(tmp_path), "val_subjects": 0, "test_subjects": 0,
                             "context_slices": 1}, "train")
    assert {item["name"].split("_slice")[0] for item in (dataset[i] for i in range(len(dataset)))} == {
        "IXI000-Guys-0001"}
    assert any("_slice90" in path and "no neighbouring slices for context_slices: 1" in reason
               for path, reason in dataset.skipped)


@pytest.mark.parametrize("kind", [kind for kind, cls in DATA_SPECS.items() if not cls.has_slices])
def test_kinds_without_slices_refuse_context_by_name_and_take_zero(kind):
    spec = {"kind": kind, **({"list": "pairs.txt"} if kind == "list-file" else {}),
            **({"root": "data"} if "root" in {f.name for f in dataclasses.fields(DATA_SPECS[kind])} else {})}
    assert data_spec({**spec, "context_slices": 0}).context_slices == 0
    with pytest.raises(CdtsdeError, match=rf"^data.context_slices applies to slices cut from volumes \(kinds "
                                          rf"nifti, brats, ixi\); kind '{kind}' has no neighbouring slices, got 1"):
        data_spec({**spec, "context_slices": 1})


def test_context_with_another_source_channel_count_is_refused_by_name():
    with pytest.raises(CdtsdeError, match=r"data.channels.source must be 1 .* with data.context_slices, got 3"):
        data_spec({"kind": "brats", "root": "data", "context_slices": 1, "channels": {"source": 3}})


def test_inspect_counts_the_context_channels_and_draws_the_slice_itself(tmp_path, monkeypatch, capsys):
    import cdtsde.cli.data as data_cli
    from cdtsde.cli import main

    (tmp_path / "ixi").mkdir()
    ixi_volumes(tmp_path / "ixi", subjects=1, shape=(8, 8, 4))
    (tmp_path / "spec.yaml").write_text("kind: ixi\nroot: ixi\nval_subjects: 0\ntest_subjects: 0\n"
                                        "context_slices: 1\nhflip: false\n")
    drawn = []
    monkeypatch.setattr(data_cli, "draw_grid", lambda examples, path: drawn.extend(examples))
    assert main(["data", "inspect", str(tmp_path / "spec.yaml"), "--examples", "2"]) == 0
    assert "4 pairs, source 3 ch, target 1 ch" in capsys.readouterr().out
    dataset = build_dataset({"kind": "ixi", "root": str(tmp_path / "ixi"), "val_subjects": 0, "test_subjects": 0,
                             "context_slices": 1, "hflip": False}, "train")
    assert [item["source"].shape[0] for item, _ in drawn] == [1, 1]
    by_name = {item["name"]: item for item in (dataset[i] for i in range(len(dataset)))}
    assert all(np.array_equal(item["source"][0], by_name[item["name"]]["source"][1]) for item, _ in drawn)
