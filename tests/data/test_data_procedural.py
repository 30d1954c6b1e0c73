"""Procedural tasks: determinism, physics of the MRI phantom, the heterogeneity knob, written folders."""

import numpy as np
import pytest

from cdtsde.cli import main
from cdtsde.data import build_dataset
from cdtsde.data.masks import PV_EL_CLASSES, decode_classes
from cdtsde.data.procedural import (
    SEQUENCES,
    TASKS,
    TISSUE_ORDER,
    TISSUES,
    make_pairs,
    mapping_heterogeneity,
    mri_tissue_map,
    render_mri,
    spin_echo,
)
from cdtsde.errors import CdtsdeError
from cdtsde.imagefiles import read_image


@pytest.mark.parametrize("task", TASKS)
def test_seeded_and_deterministic(task):
    first, again, other = (
        make_pairs(task, 3, 32, seed=7),
        make_pairs(task, 3, 32, seed=7),
        make_pairs(task, 3, 32, seed=8),
    )
    for (source, target), (source_again, target_again) in zip(first, again):
        np.testing.assert_array_equal(source, source_again)
        np.testing.assert_array_equal(target, target_again)
        assert source.dtype == target.dtype == np.float32
        assert source.min() >= 0 and source.max() <= 1 and target.min() >= 0 and target.max() <= 1
    assert not np.array_equal(first[0][0], other[0][0])
    np.testing.assert_array_equal(make_pairs(task, 1, 32, seed=7)[0][0], first[0][0])  # pair i ignores n


def test_spin_echo_constants_give_textbook_contrast_orderings():
    signal = {
        sequence: {
            tissue: spin_echo(*TISSUES[tissue], *SEQUENCES[sequence]) for tissue in ("wm", "gm", "csf")
        }
        for sequence in ("t1w", "t2w")
    }
    assert signal["t1w"]["wm"] > signal["t1w"]["gm"] > signal["t1w"]["csf"]
    assert signal["t2w"]["csf"] > signal["t2w"]["gm"] > signal["t2w"]["wm"]


def test_rendered_phantom_keeps_the_orderings():
    rng = np.random.default_rng(3)
    labels = mri_tissue_map(rng, 96)
    means = {}
    for sequence in ("t1w", "t2w"):
        image = render_mri(rng, labels, sequence, heterogeneity=0.0)
        means[sequence] = {
            name: image[labels == TISSUE_ORDER.index(name)].mean() for name in ("wm", "gm", "csf")
        }
    assert means["t1w"]["wm"] > means["t1w"]["gm"] > means["t1w"]["csf"]
    assert means["t2w"]["csf"] > means["t2w"]["gm"] > means["t2w"]["wm"]


def heterogeneity_of(task, knob):
    return np.mean(
        [mapping_heterogeneity(s, t) for s, t in make_pairs(task, 4, 64, seed=1, heterogeneity=knob)]
    )


@pytest.mark.parametrize("task", TASKS)
def test_heterogeneity_knob_makes_the_mapping_less_global(task):
    assert heterogeneity_of(task, 0.0) < heterogeneity_of(task, 0.5) < heterogeneity_of(task, 1.0)


def test_mri_mapping_is_the_most_global():
    assert heterogeneity_of("mri-phantom", 0.5) < 0.5 * min(
        heterogeneity_of(t, 0.5) for t in ("el-cell", "sar-landcover")
    )


def test_mapping_heterogeneity_bounds():
    source = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    assert mapping_heterogeneity(source, source**2) < 0.01  # one global mapping explains everything
    assert mapping_heterogeneity(source, np.random.default_rng(1).random((32, 32, 1))) > 0.9


def test_el_cell_target_is_one_hot_with_busbars():
    source, target = make_pairs("el-cell", 1, 64, seed=0)[0]
    assert source.shape == (64, 64, 1) and target.shape == (64, 64, len(PV_EL_CLASSES))
    assert (target.sum(-1) == 1).all()
    busbar = target[..., list(PV_EL_CLASSES.values()).index("busbar")] == 1
    assert busbar.any() and source[..., 0][busbar].mean() < source[..., 0][~busbar].mean()


def test_bad_task_arguments_are_rejected():
    with pytest.raises(CdtsdeError, match="unknown procedural task"):
        make_pairs("ct-phantom", 1, 32, 0)
    with pytest.raises(CdtsdeError, match="heterogeneity"):
        make_pairs("el-cell", 1, 32, 0, heterogeneity=2.0)


def test_procedural_spec_splits_differ_and_encode_masks():
    spec = {"kind": "procedural", "task": "el-cell", "n": 6, "size": 32, "seed": 0}
    train, val = build_dataset(spec, "train"), build_dataset(spec, "val")
    assert (len(train), len(val), train.target_channels) == (6, 1, 5)
    assert not np.array_equal(train.pairs[0][0], val.pairs[0][0])
    np.testing.assert_array_equal(decode_classes(val[0]["target"]), val.pairs[0][1].argmax(-1))


def test_iterating_a_dataset_stops_at_its_end():
    """A dataset is a sequence: `for item in dataset` gives its items and stops (an index past the end is an
    IndexError, not wrapped round to the start as unreadable entries are stepped over, which made iteration
    endless); read one past the length at most, so that a regression fails instead of running away."""
    import itertools

    dataset = build_dataset({"kind": "procedural", "task": "el-cell", "n": 4, "n_test": 3, "size": 16}, "test")
    items = list(itertools.islice(iter(dataset), len(dataset) + 1))
    assert [item["name"] for item in items] == [dataset[i]["name"] for i in range(3)]
    assert dataset[-1]["name"] == items[-1]["name"]
    with pytest.raises(IndexError):
        dataset[3]


def test_data_make_writes_a_folder_that_reads_back(tmp_path, capsys):
    output = tmp_path / "cells"
    assert (
        main(
            [
                "data",
                "make",
                "--task",
                "el-cell",
                "--n",
                "5",
                "--size",
                "32",
                "--seed",
                "2",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (output / "source").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    mask, _ = read_image(output / "target" / "00003.png")
    np.testing.assert_array_equal(mask, make_pairs("el-cell", 4, 32, seed=2)[3][1].argmax(-1))
    grid = tmp_path / "grid.png"
    assert main(["data", "inspect", str(output), "--grid", str(grid)]) == 0
    assert grid.stat().st_size > 0 and "5 ch" in capsys.readouterr().out


def test_written_mri_phantom_keeps_16_bit_precision(tmp_path):
    main(["data", "make", "--task", "mri-phantom", "--n", "2", "--size", "32", "--output", str(tmp_path)])
    stored, _ = read_image(tmp_path / "source" / "00001.png")
    assert stored.dtype == np.uint16
    np.testing.assert_allclose(
        stored / 65535, make_pairs("mri-phantom", 2, 32, 0)[1][0][..., 0], atol=1 / 65535
    )


def test_batches_through_dataloader_workers():
    from torch.utils.data import DataLoader

    dataset = build_dataset({"kind": "procedural", "task": "sar-landcover", "n": 8, "size": 32}, "train")
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True))
    assert len(batches) == 2
    assert batches[0]["source"].shape == (4, 1, 32, 32) and batches[0]["target"].shape == (4, 3, 32, 32)
    assert sorted(sum((b["name"] for b in batches), [])) == [f"sar-landcover-{i:05d}" for i in range(8)]
