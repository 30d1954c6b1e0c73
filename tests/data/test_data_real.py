"""Loaders against the real samples in ../shared/data (skipped when the folder is absent)."""

import warnings

import numpy as np
import pytest
import tifffile
from helpers import REPO

from cdtsde.data import build_dataset
from cdtsde.data.masks import decode_classes, encode_classes, mask_to_indices
from cdtsde.imagefiles import read_image

DATA = REPO.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

BRATS_SUBJECTS = ["Brats18_2013_20_1", "Brats18_CBICA_ALU_1", "Brats18_TCIA01_425_1"]
BRATS = {
    "kind": "brats",
    "root": "brats-mri",
    "source": "t1",
    "target": "t2",
    "subjects": BRATS_SUBJECTS,
    "val_subjects": 1,
    "test_subjects": 1,
    "min_foreground": 0.1,
    "slice_step": 4,
}


def check_item(item, source_channels, target_channels, size):
    for side, channels in (("source", source_channels), ("target", target_channels)):
        assert item[side].dtype.is_floating_point
        assert tuple(item[side].shape) == (channels, *size)
        assert -1.0 <= float(item[side].min()) and float(item[side].max()) <= 1.0


@pytest.fixture(scope="module")
def brats_splits():
    return {
        split: build_dataset({**BRATS, "size": 64}, split, base_dir=DATA)
        for split in ("train", "val", "test")
    }


def test_brats_slices_shape_range_and_subject_split(brats_splits):
    subjects = {split: set(ds.subjects) for split, ds in brats_splits.items()}
    assert set().union(*subjects.values()) == set(BRATS_SUBJECTS)
    assert all(len(s) == 1 for s in subjects.values())
    assert not (
        subjects["train"] & subjects["val"]
        or subjects["train"] & subjects["test"]
        or subjects["val"] & subjects["test"]
    )
    for split, dataset in brats_splits.items():
        assert len(dataset) > 5
        item = dataset[0]
        check_item(item, 1, 1, (64, 64))
        assert item["name"].startswith(next(iter(subjects[split])))
        assert float(item["source"].min()) == -1.0  # zero background stays at the bottom of the range
    # the same spec gives the same split and slices
    again = build_dataset({**BRATS, "size": 64}, "val", base_dir=DATA)
    assert [again[i]["name"] for i in range(len(again))] == [
        brats_splits["val"][i]["name"] for i in range(len(again))
    ]


def test_brats_pairs_come_from_one_subject_and_keep_foreground(brats_splits):
    native = build_dataset({**BRATS}, "test", base_dir=DATA)
    for index in range(0, len(native), 3):
        item = native[index]
        brain_source, brain_target = item["source"][0] > -0.98, item["target"][0] > -0.98
        overlap = (brain_source & brain_target).sum() / (brain_source | brain_target).sum()
        assert overlap > 0.85, item["name"]  # co-registered T1/T2 of one subject share the brain outline
        assert (brain_source | brain_target).float().mean() >= 0.1


def test_brats_normalisation_uses_brain_percentile():
    dataset = build_dataset(
        {**BRATS, "subjects": BRATS_SUBJECTS[:1], "val_subjects": 0, "test_subjects": 0, "hflip": False},
        "train",
        base_dir=DATA,
    )
    volume, _ = read_image(next((DATA / "brats-mri" / BRATS_SUBJECTS[0]).glob("*_t1.nii.gz")))
    middle = len(dataset) // 2
    item = dataset[middle]
    number = int(item["name"].rsplit("slice", 1)[1])
    raw = volume[:, :, number].astype(np.float32)
    expected = np.clip(raw / np.percentile(volume[volume != 0], 99.5), 0, 1) * 2 - 1
    np.testing.assert_allclose(item["source"][0].numpy(), expected, atol=1e-4)


def test_ixi_2d_slices_pair_by_subject():
    dataset = build_dataset(
        {"kind": "ixi", "root": "ixi-slice", "val_subjects": 0, "test_subjects": 0, "hflip": False},
        "train",
        base_dir=DATA,
    )
    assert len(dataset) == 1 and dataset.skipped == []
    item = dataset[0]
    check_item(item, 1, 1, (150, 256))
    assert item["name"] == "IXI002-Guys-0828_slice90"
    assert float(item["source"].max()) == 1.0 and float(item["target"].max()) == 1.0


def test_el_masks_load_and_round_trip_exactly():
    dataset = build_dataset({"kind": "el-masks", "root": "pv-el-cracks"}, "val", base_dir=DATA)
    assert len(dataset) == 172 and dataset.skipped == []
    assert (dataset.source_channels, dataset.target_channels) == (1, 5)
    for index in (0, 50, 171):
        item = dataset[index]
        check_item(item, 1, 5, (400, 400))
        assert set(np.unique(item["target"].numpy())) <= {-1.0, 1.0}
        assert (item["target"] == 1).sum(0).eq(1).all()  # exactly one class per pixel
        raw, _ = read_image(DATA / "pv-el-cracks" / "val" / "ann" / f"{item['name']}.png")
        classes = mask_to_indices(raw, "mask")
        np.testing.assert_array_equal(decode_classes(item["target"]), classes)
        np.testing.assert_array_equal(decode_classes(encode_classes(classes, 5)), classes)


def test_el_masks_resized_keep_one_hot():
    dataset = build_dataset({"kind": "el-masks", "root": "pv-el-cracks", "size": 64}, "val", base_dir=DATA)
    target = dataset[3]["target"]
    assert tuple(target.shape) == (5, 64, 64)
    assert set(np.unique(target.numpy())) <= {-1.0, 1.0} and (target == 1).sum(0).eq(1).all()
    assert (decode_classes(target) == 4).any()  # busbars survive the resize


def tile_rectangles(dataset):
    return {(dataset.scenes[s][0], y, x) for s, y, x in dataset.entries}


@pytest.fixture(scope="module")
def region_tiles():
    spec = {"kind": "scene-tiles", "root": "sar-optical/scenes", "tile": 64, "stride": 64}
    return {split: build_dataset(spec, split, base_dir=DATA) for split in ("train", "val", "test")}


def test_scene_tiles_shape_and_channels(region_tiles):
    train = region_tiles["train"]
    assert len(train) > 500 and train.skipped == []
    check_item(train[0], 1, 3, (64, 64))  # SAR stored as grey RGB is one channel


def test_region_split_never_puts_neighbouring_tiles_on_both_sides(region_tiles):
    rectangles = {split: tile_rectangles(ds) for split, ds in region_tiles.items()}
    assert all(rectangles.values())
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        for scene, y, x in rectangles[first]:
            for other_scene, other_y, other_x in rectangles[second]:
                if scene == other_scene:
                    # touching or overlapping tiles would be within one tile (64 px) plus one pixel
                    assert abs(x - other_x) > 64 or abs(y - other_y) > 64


def test_default_region_bands_hold_large_tiles():
    spec = {"kind": "scene-tiles", "root": "sar-optical/scenes", "tile": 128}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a band too narrow for one tile warns
        assert all(len(build_dataset(spec, split, base_dir=DATA)) > 0 for split in ("val", "test"))


def test_scene_split_keeps_each_scene_on_one_side():
    spec = {
        "kind": "scene-tiles",
        "root": "sar-optical/scenes",
        "tile": 128,
        "split_by": "scene",
        "test_scenes": 1,
    }
    train, test = (build_dataset(spec, split, base_dir=DATA) for split in ("train", "test"))
    train_scenes = {name for name, *_ in train.scenes}
    test_scenes = {name for name, *_ in test.scenes}
    assert len(train_scenes) == len(test_scenes) == 1 and not train_scenes & test_scenes


def test_sen12ms_db_scaling_band_choice_and_reflectance():
    spec = {"kind": "sar-patches", "root": "sar-optical/sen12ms-cr", "val_scenes": 0, "test_scenes": 1}
    both = build_dataset(spec, "test", base_dir=DATA)
    vh_only = build_dataset({**spec, "source_bands": ["VH"]}, "test", base_dir=DATA)
    assert (both.source_channels, both.target_channels, vh_only.source_channels) == (2, 3, 1)
    item = both[0]
    check_item(item, 2, 3, (256, 256))
    source_path, target_path, _ = both.entries[0]
    expected_vv = np.clip((tifffile.imread(source_path)[..., 0] + 25) / 25, 0, 1) * 2 - 1
    np.testing.assert_allclose(item["source"][0].numpy(), expected_vv, atol=1e-5)
    np.testing.assert_array_equal(vh_only[0]["source"][0].numpy(), item["source"][1].numpy())
    s2 = tifffile.imread(target_path)
    np.testing.assert_allclose(
        item["target"].numpy(), np.moveaxis(np.clip(s2 / 3000, 0, 1) * 2 - 1, -1, 0), atol=1e-5
    )
    train = build_dataset(spec, "train", base_dir=DATA)
    assert not set(train.scenes) & set(both.scenes)


def test_sen1_2_png_pairs():
    spec = {"kind": "sar-patches", "root": "sar-optical/sen1-2", "val_scenes": 1, "test_scenes": 1}
    names = []
    for split in ("train", "val", "test"):
        dataset = build_dataset(spec, split, base_dir=DATA)
        check_item(dataset[0], 1, 3, (256, 256))
        names += [dataset[i]["name"] for i in range(len(dataset))]
    assert sorted(names) == sorted(
        n.replace("_s1_", "_") for n in (p.stem for p in (DATA / "sar-optical/sen1-2/s1").glob("*.png"))
    )


def test_volkov_pairs_split_by_region():
    spec = {"kind": "paired-folder", "root": "sar-optical/volkov-s1s2", "source_dir": "sar", "target_dir": "opt",
            "groups": {"table": "pairs.csv", "column": "s2_tile"}, "val_groups": 0, "test_groups": ["T14RNT"]}
    train, val, test = (build_dataset(spec, split, base_dir=DATA) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (138, 0, 62)  # California (T11SLT, T11SMT) / Texas
    check_item(test[0], 1, 3, (256, 256))
    fragments = {split: {entry[2].split("_")[0] for entry in d.entries} for split, d in (("train", train), ("test", test))}
    assert not fragments["train"] & fragments["test"]


def test_volkov_fragments_stay_whole_with_a_name_pattern():
    """A hash of the stem puts the two crops of one fragment on both sides of a split; a pattern on the
    stem (the fragment number) keeps each fragment in one split."""
    spec = {"kind": "paired-folder", "root": "sar-optical/volkov-s1s2", "source_dir": "sar", "target_dir": "opt",
            "val_fraction": 0.2, "test_fraction": 0.2}
    def fragments(spec, split):
        return {entry[2].split("_")[0] for entry in build_dataset(spec, split, base_dir=DATA).entries}
    assert fragments(spec, "train") & fragments(spec, "test")  # the leak the grouped split removes
    grouped = {**spec, "groups": {"pattern": r"^(\d+)_"}, "val_groups": 20, "test_groups": 20}
    train, val, test = (fragments(grouped, split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (60, 20, 20) and not (train & test or train & val or val & test)


def test_bigearthnet_split_by_country_keeps_the_rgb_bands():
    spec = {"kind": "sar-patches", "root": "sar-optical/bigearthnet-mm", "target_bands": [0, 1, 2],
            "groups": {"table": "pairs.csv", "column": "country"}, "val_scenes": 0, "test_scenes": ["Finland"]}
    train, test = (build_dataset(spec, split, base_dir=DATA) for split in ("train", "test"))
    assert (len(train), len(test), test.scenes) == (35, 25, ["Finland"])
    assert "Finland" not in train.scenes and len(train.scenes) == 6  # the README says 8 countries; pairs.csv has 7
    item = test[0]
    check_item(item, 2, 3, (120, 120))
    source_path, target_path, _ = test.entries[0]
    s2 = tifffile.imread(target_path)  # band-first [B4, B3, B2, B8] reflectance x 10000
    np.testing.assert_allclose(item["target"].numpy(), np.clip(s2[:3] / 3000, 0, 1) * 2 - 1, atol=1e-5)



def test_data_inspect_names_the_groups_of_each_split(tmp_path, capsys):
    import yaml

    from cdtsde.cli import main

    spec = {"kind": "paired-folder", "root": str(DATA / "sar-optical/volkov-s1s2"), "source_dir": "sar",
            "target_dir": "opt", "size": 32, "groups": {"table": "pairs.csv", "column": "s2_tile"}, "val_groups": 0,
            "test_groups": ["T14RNT"]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["data", "inspect", str(tmp_path / "spec.yaml"), "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "train: 138 pairs" in out and "groups: T11SLT, T11SMT" in out
    assert "test : 62 pairs" in out and "groups: T14RNT" in out
