"""Paired folders and list files in every supported format, transforms, masks, and bad input."""

import warnings

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from cdtsde.cli import main
from cdtsde.data import build_dataset
from cdtsde.data.masks import decode_classes, encode_classes
from cdtsde.errors import CdtsdeError
from cdtsde.imagefiles import write_image


def gradient(height=24, width=32):
    return np.linspace(0.0, 1.0, height * width, dtype=np.float32).reshape(height, width)


def make_folder(root, pairs, source_dir="source", target_dir="target"):
    """pairs: {file name in source/: (source array, target file name, target array)}"""
    for name, (source, target_name, target) in pairs.items():
        write_image(root / source_dir / name, source)
        write_image(root / target_dir / target_name, target)
    return root


def all_train(spec):
    return {**spec, "val_fraction": 0.0, "test_fraction": 0.0, "hflip": False}


def test_formats_load_with_their_ranges_and_pair_by_stem(tmp_path):
    ramp = gradient()
    make_folder(
        tmp_path,
        {
            "a.png": (
                (ramp * 65535).astype(np.uint16),
                "a.tif",
                (np.stack([ramp, 1 - ramp, ramp], -1) * 255).astype(np.uint8),
            ),
            "b.tif": (np.stack([ramp] * 3, -1).astype(np.float32), "b.npy", (ramp * 255).astype(np.uint8)),
            "c.npy": (ramp, "c.png", (np.stack([ramp] * 3, -1) * 255).astype(np.uint8)),
        },
        "A",
        "B",
    )
    dataset = build_dataset(
        all_train({"kind": "paired-folder", "root": str(tmp_path), "channels": {"source": 1, "target": 3}}),
        "train",
    )
    assert [dataset[i]["name"] for i in range(3)] == ["a", "b", "c"] and dataset.skipped == []
    for index in range(3):
        item = dataset[index]
        assert item["source"].shape == (1, 24, 32) and item["target"].shape == (3, 24, 32)
        assert item["source"].dtype == torch.float32
        np.testing.assert_allclose(
            item["source"][0].numpy(), ramp * 2 - 1, atol=2 / 255 if index == 0 else 1e-6
        )
    np.testing.assert_allclose(dataset[0]["target"][1].numpy(), (1 - ramp) * 2 - 1, atol=2 / 255)
    np.testing.assert_allclose(dataset[1]["target"][2].numpy(), ramp * 2 - 1, atol=2 / 255)  # grey repeated


def test_float_value_range_and_channel_inference(tmp_path):
    decibels = np.full((16, 16, 2), -12.5, np.float32)
    make_folder(tmp_path, {"x.tif": (decibels, "x.tif", np.full((16, 16), 0.25, np.float32))})
    spec = all_train({"kind": "paired-folder", "root": str(tmp_path), "value_range": {"source": [-25, 0]}})
    dataset = build_dataset(spec, "train")
    assert (dataset.source_channels, dataset.target_channels) == (2, 1)
    np.testing.assert_allclose(dataset[0]["source"].numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(dataset[0]["target"].numpy(), -0.5, atol=1e-6)


def test_2d_nifti_pairs_in_a_folder(tmp_path):
    for side in ("source", "target"):
        (tmp_path / side).mkdir()
        nib.save(
            nib.Nifti1Image((gradient() * 100).astype(np.float32), np.eye(4)), tmp_path / side / "s1.nii.gz"
        )
    spec = all_train(
        {
            "kind": "paired-folder",
            "root": str(tmp_path),
            "value_range": {"source": [0, 100], "target": [0, 100]},
        }
    )
    item = build_dataset(spec, "train")[0]
    assert item["name"] == "s1" and item["source"].shape == (1, 24, 32)
    np.testing.assert_allclose(item["source"][0].numpy(), gradient() * 2 - 1, atol=1e-5)


def test_a_root_of_linked_subject_folders_finds_every_pair_once(tmp_path):
    """Subject folders that are symbolic links (a data root assembled from a shared store) are read; a
    second link to one subject and a link back up the tree neither count a volume twice nor loop."""
    from helpers import brats_volumes

    from cdtsde.cli.data import folder_kind
    from cdtsde.data.nifti import find_volume_pairs
    from cdtsde.imagefiles import list_images_under

    brats_volumes(tmp_path / "store", subjects=3, size=8)
    root = tmp_path / "root"
    root.mkdir()
    for subject in sorted((tmp_path / "store").iterdir()):
        (root / subject.name).symlink_to(subject, target_is_directory=True)
    (root / "again").symlink_to(tmp_path / "store" / "Brats18_S00_1", target_is_directory=True)
    (root / "Brats18_S01_1" / "up").symlink_to(root, target_is_directory=True)
    pairs, unmatched = find_volume_pairs(root, "t1", "t2")
    assert sorted(subject for subject, _ in pairs) == ["Brats18_S00_1", "Brats18_S01_1", "Brats18_S02_1"]
    assert unmatched == []
    assert folder_kind(root) == "nifti"
    assert len(list_images_under(root, "*_t1.nii.gz")) == 3


def test_hash_split_is_deterministic_and_disjoint(tmp_path):
    ramp = (gradient() * 255).astype(np.uint8)
    make_folder(tmp_path, {f"{i:03d}.png": (ramp, f"{i:03d}.png", ramp) for i in range(40)})
    spec = {"kind": "paired-folder", "root": str(tmp_path), "val_fraction": 0.2, "test_fraction": 0.2}
    names = {split: [e[2] for e in build_dataset(spec, split).entries] for split in ("train", "val", "test")}
    assert sorted(sum(names.values(), [])) == [f"{i:03d}" for i in range(40)]
    assert all(names.values()) and names["val"] == [e[2] for e in build_dataset(spec, "val").entries]


def test_list_file_relative_paths(tmp_path):
    ramp = (gradient() * 255).astype(np.uint8)
    write_image(tmp_path / "mr" / "t1.png", ramp)
    write_image(tmp_path / "mr" / "t2.png", 255 - ramp)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("# authors' format\n../mr/t1.png,../mr/t2.png\n\n")
    dataset = build_dataset(
        {"kind": "list-file", "lists": {"train": "lists/train.txt"}, "hflip": False},
        "train",
        base_dir=tmp_path,
    )
    item = dataset[0]
    assert item["name"] == "t1"
    np.testing.assert_allclose(item["source"] + item["target"], 0.0, atol=1e-6)
    (tmp_path / "lists" / "bad.txt").write_text("only_one_path.png\n")
    with pytest.raises(CdtsdeError, match="bad.txt:1"):
        build_dataset({"kind": "list-file", "lists": {"train": "lists/bad.txt"}}, "train", base_dir=tmp_path)


def test_paired_crop_and_flip_are_identical_on_both_sides(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    make_folder(tmp_path, {"same.png": (image, "same.png", image)})
    spec = {
        "kind": "paired-folder",
        "root": str(tmp_path),
        "val_fraction": 0.0,
        "test_fraction": 0.0,
        "size": 16,
        "resize": "crop",
        "vflip": True,
    }
    train = build_dataset(spec, "train")
    crops = set()
    for _ in range(20):
        item = train[0]
        assert torch.equal(item["source"], item["target"])
        crops.add(item["source"].numpy().tobytes())
    assert len(crops) > 5  # random windows and flips were drawn
    spec_eval = {**spec, "val_fraction": 1.0}
    evaluation = build_dataset(spec_eval, "val")
    first = evaluation[0]["source"]
    assert torch.equal(first, evaluation[0]["source"])  # no randomness at evaluation: a centre crop
    expected = image[12:28, 17:33].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(first[0].numpy(), expected, atol=1e-6)


def test_resize_mode_scales_to_the_training_size(tmp_path):
    image = (gradient(40, 50) * 255).astype(np.uint8)
    make_folder(tmp_path, {"r.png": (image, "r.png", image)})
    item = build_dataset(all_train({"kind": "paired-folder", "root": str(tmp_path), "size": 20}), "train")[0]
    assert item["source"].shape == (1, 20, 20)
    # the whole 40 x 50 image scaled to 20 x 20 (no crop) by an anti-aliased bilinear filter, PIL's reference
    from PIL import Image as PILImage

    expected = np.asarray(PILImage.fromarray(image.astype(np.float32), mode="F").resize((20, 20), PILImage.BILINEAR))
    np.testing.assert_allclose((item["source"][0].numpy() + 1) / 2 * 255, expected, atol=0.01)


def test_mask_encoding_round_trips_and_decodes_batches():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 5, (2, 9, 11)).astype(np.uint8)
    encoded = encode_classes(classes, 5)
    assert encoded.shape == (2, 5, 9, 11) and set(np.unique(encoded)) == {-1.0, 1.0}
    np.testing.assert_array_equal(decode_classes(torch.from_numpy(encoded)), classes)  # batched: axis 1
    np.testing.assert_array_equal(decode_classes(encoded[1]), classes[1])  # single: axis 0
    noisy = encoded[0] + rng.normal(0, 0.3, encoded[0].shape)
    np.testing.assert_array_equal(decode_classes(noisy), classes[0])
    with pytest.raises(CdtsdeError, match="outside 0..4"):
        encode_classes(np.array([[5]]), 5)


def test_mask_folder_targets_are_class_channels(tmp_path):
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 3:30], mask[:, 16] = 3, 4
    make_folder(tmp_path, {"m.png": ((gradient() * 255).astype(np.uint8), "m.png", mask)})
    dataset = build_dataset(
        all_train({"kind": "paired-folder", "root": str(tmp_path), "classes": 5}), "train"
    )
    assert dataset.target_channels == 5
    np.testing.assert_array_equal(decode_classes(dataset[0]["target"]), mask)


# ---- bad input: a clear message naming the file; bad files are skipped, never fatal ----


@pytest.fixture
def folder_with_problems(tmp_path):
    good = (gradient() * 255).astype(np.uint8)
    make_folder(tmp_path, {f"good{i}.png": (good, f"good{i}.png", good) for i in range(3)})
    make_folder(tmp_path, {"small.png": (good, "small.png", good[:10, :10])})
    make_folder(tmp_path, {"nan.npy": (np.full((24, 32), np.nan, np.float32), "nan.npy", good)})
    make_folder(tmp_path, {"inf.tif": (np.full((24, 32), np.inf, np.float32), "inf.png", good)})
    write_image(tmp_path / "source" / "alone.png", good)
    (tmp_path / "source" / "garbage.png").write_bytes(b"not a png at all")
    write_image(tmp_path / "target" / "garbage.png", good)
    write_image(
        tmp_path / "source" / "cut.png", (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    )
    data = (tmp_path / "source" / "cut.png").read_bytes()
    (tmp_path / "source" / "cut.png").write_bytes(data[: len(data) // 2])
    write_image(tmp_path / "target" / "cut.png", np.zeros((64, 64), np.uint8))
    return tmp_path


def reasons(dataset):
    return {path.split(" | ")[0].rsplit("/", 1)[-1]: reason for path, reason in dataset.skipped}


def test_bad_files_are_skipped_and_named(folder_with_problems):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = build_dataset(
            all_train({"kind": "paired-folder", "root": str(folder_with_problems), "verify": True}), "train"
        )
    assert [e[2] for e in dataset.entries] == ["good0", "good1", "good2"]
    found = reasons(dataset)
    assert "no partner" in found["alone.png"]
    assert "size mismatch" in found["small.png"]
    assert "NaN" in found["nan.npy"] and "infinite" in found["inf.tif"]
    assert "cannot read" in found["garbage.png"]
    assert "cannot read" in found["cut.png"]
    assert all(str(folder_with_problems) in path for path, _ in dataset.skipped)


def test_truncated_file_found_while_training_is_replaced_by_the_next_pair(folder_with_problems):
    spec = all_train(
        {"kind": "paired-folder", "root": str(folder_with_problems), "channels": {"source": 1, "target": 1}}
    )
    with pytest.warns(UserWarning, match="skipping"):
        dataset = build_dataset(spec, "train")
    names = [e[2] for e in dataset.entries]
    assert "cut" in names and "nan" in names  # headers are fine: only decoding finds these
    with pytest.warns(UserWarning, match="cut.png"):
        item = dataset[names.index("cut")]
    assert item["name"] == names[names.index("cut") + 1]
    assert "cut.png" in dataset.skipped[-1][0]
    with pytest.warns(UserWarning, match="skipping"):
        assert len({dataset[i]["name"] for i in range(len(dataset))} & {"cut", "nan", "inf"}) == 0


def test_empty_folder_and_bad_specs_raise_clear_errors(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "target").mkdir()
    with pytest.raises(CdtsdeError, match=f"{tmp_path}.*no image pairs"):
        build_dataset({"kind": "paired-folder", "root": str(tmp_path)}, "train")
    with pytest.raises(CdtsdeError, match="expected sub-folders"):
        build_dataset({"kind": "paired-folder", "root": str(tmp_path / "source")}, "train")
    with pytest.raises(CdtsdeError, match="unknown data option.*sise; expected .*size"):
        build_dataset({"kind": "paired-folder", "root": str(tmp_path), "sise": 64}, "train")
    with pytest.raises(CdtsdeError, match="split must be"):
        build_dataset({"kind": "procedural"}, "training")


def test_inspect_reports_skipped_files_with_nonzero_exit(folder_with_problems, tmp_path_factory, capsys):
    grid = tmp_path_factory.mktemp("grid") / "pairs.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["data", "inspect", str(folder_with_problems), "--grid", str(grid)])
    out = capsys.readouterr().out
    assert code == 1
    assert "garbage.png" in out and "cut.png" in out and "6 file(s) skipped" in out
    assert Image.open(grid).size[0] > 100


def test_tiff_multiband_planar_is_channels_last(tmp_path):
    planar = np.stack([gradient(), 1 - gradient()]).astype(np.float32)  # (bands, H, W) as GDAL writes
    tifffile.imwrite(tmp_path / "planar.tif", planar)
    from cdtsde.imagefiles import image_shape, read_image

    array, _ = read_image(tmp_path / "planar.tif")
    assert array.shape == image_shape(tmp_path / "planar.tif") == (24, 32, 2)
    np.testing.assert_array_equal(array[..., 0], gradient())
    np.testing.assert_array_equal(array[..., 1], 1 - gradient())


def test_hidden_files_are_not_images(tmp_path):
    ramp = (gradient() * 255).astype(np.uint8)
    make_folder(tmp_path, {"a.png": (ramp, "a.png", ramp)})
    (tmp_path / "source" / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    dataset = build_dataset(all_train({"kind": "paired-folder", "root": str(tmp_path)}), "train")
    assert len(dataset) == 1 and dataset.skipped == []


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("IXI002-Guys-0828-T1.nii.gz", ("IXI002-Guys-0828", "t1", "")),
        ("IXI002-Guys-0828-T2_slice90.nii.gz", ("IXI002-Guys-0828", "t2", "_slice90")),
        ("Brats18_2013_20_1_t1ce.nii.gz", ("Brats18_2013_20_1", "t1ce", "")),
        ("Brats18_2013_20_1_flair.nii", ("Brats18_2013_20_1", "flair", "")),
        ("notes.nii.gz", None),
    ],
)
def test_nifti_names_give_subject_and_modality(file_name, expected):
    from pathlib import Path

    from cdtsde.data.nifti import parse_nifti_name

    assert parse_nifti_name(Path(file_name)) == expected


def test_ixi_volumes_pair_by_subject_and_split_by_subject(tmp_path):
    volume = np.zeros((8, 8, 6), np.int16)
    volume[2:6, 2:6, 1:5] = 100
    for subject in ("IXI002-Guys-0828", "IXI012-HH-1211", "IXI013-HH-1212"):
        for modality in ("T1", "T2"):
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / f"{subject}-{modality}.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "IXI099-IOP-0001-T1.nii.gz")  # no T2 partner
    spec = {
        "kind": "ixi",
        "root": str(tmp_path),
        "val_subjects": 1,
        "test_subjects": 1,
        "min_foreground": 0.2,
    }
    splits = {split: build_dataset(spec, split) for split in ("train", "val", "test")}
    assert sorted(sum((ds.subjects for ds in splits.values()), [])) == [
        "IXI002-Guys-0828",
        "IXI012-HH-1211",
        "IXI013-HH-1212",
    ]
    assert all(len(ds) == 4 for ds in splits.values())  # slices 1..4 hold 25% foreground, 0 and 5 none
    assert any("IXI099" in path and "no t2 volume" in reason for path, reason in splits["train"].skipped)


def test_truncated_volume_skips_its_subject_only(tmp_path):
    volume = np.ones((8, 8, 4), np.int16)
    for subject in ("IXI002-Guys-0828", "IXI012-HH-1211"):
        for modality in ("T1", "T2"):
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / f"{subject}-{modality}.nii.gz")
    broken = tmp_path / "IXI012-HH-1211-T2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:60])
    dataset = build_dataset(
        {"kind": "ixi", "root": str(tmp_path), "val_subjects": 0, "test_subjects": 0}, "train"
    )
    assert dataset.subjects == ["IXI002-Guys-0828", "IXI012-HH-1211"] and len(dataset) == 4
    assert {item["name"].split("_slice")[0] for item in (dataset[i] for i in range(4))} == {
        "IXI002-Guys-0828"
    }
    assert len(dataset.skipped) == 1 and str(broken) in dataset.skipped[0][1]


@given(arrays(np.uint8, array_shapes(min_dims=2, max_dims=3, max_side=6), elements=st.integers(0, 6)))
def test_any_class_map_round_trips(classes):
    np.testing.assert_array_equal(decode_classes(encode_classes(classes, 7)), classes)


def test_image_folder_holds_one_modality_split_by_name_and_reports_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for i in range(30):
        write_image(tmp_path / f"img{i:02d}.png", (rng.random((12, 10, 3)) * 255).astype(np.uint8))
    (tmp_path / "img99.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    spec = {"kind": "image-folder", "root": str(tmp_path), "size": 8, "channels": {"source": 1}}
    splits = {split: build_dataset(spec, split) for split in ("train", "val", "test")}
    names = [{item["name"] for item in (ds[i] for i in range(len(ds)))} for ds in splits.values()]
    assert sum(len(n) for n in names) == 30 and not (names[0] & names[1]) and not (names[0] & names[2])
    item = splits["train"][0]
    assert set(item) == {"image", "name"} and item["image"].shape == (1, 8, 8) and splits["train"].channels == 1
    assert any("img99.png" in path for path, _ in sum((ds.skipped for ds in splits.values()), []))
    assert main(["data", "inspect", str(tmp_path), "--grid", str(tmp_path / "grid.png")]) == 1  # a file skipped
    out = capsys.readouterr().out
    assert "images, 3 ch" in out and "image range [" in out and (tmp_path / "grid.png").is_file()


def test_group_table_holds_out_whole_groups_by_name_or_count(tmp_path):
    ramp = gradient(8, 8)
    make_folder(tmp_path, {f"p{i}.png": (ramp, f"p{i}.png", ramp) for i in range(9)})
    regions = ["north"] * 3 + ["south"] * 3 + ["east"] * 2  # p8 is not in the table
    (tmp_path / "pairs.csv").write_text(
        "pair_id,region\n" + "".join(f"p{i},{region}\n" for i, region in enumerate(regions))
    )
    spec = {"kind": "paired-folder", "root": str(tmp_path), "groups": {"table": "pairs.csv", "column": "region"}}
    named = {**spec, "val_groups": 0, "test_groups": ["south"]}
    splits = {split: build_dataset(named, split) for split in ("train", "val", "test")}
    names = {split: sorted(entry[2] for entry in d.entries) for split, d in splits.items()}
    assert names == {"train": ["p0", "p1", "p2", "p6", "p7"], "val": [], "test": ["p3", "p4", "p5"]}
    assert any("p8" in path and "not listed" in why for path, why in splits["train"].skipped)
    counted = {split: {entry[2] for entry in build_dataset(spec, split).entries} for split in ("train", "val", "test")}
    groups_of = {split: {regions[int(n[1:])] for n in items} for split, items in counted.items()}
    assert [len(groups_of[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert set().union(*groups_of.values()) == {"north", "south", "east"}
    with pytest.raises(CdtsdeError, match="unknown group.*west"):
        build_dataset({**spec, "test_groups": ["west"]}, "train")
    with pytest.raises(CdtsdeError, match="both val and test"):
        build_dataset({**spec, "val_groups": ["east"], "test_groups": ["east"]}, "train")
    with pytest.raises(CdtsdeError, match="no column.*country"):
        build_dataset({**spec, "groups": {"table": "pairs.csv", "column": "country"}}, "train")
    with pytest.raises(CdtsdeError, match=r"data.groups must be \{table: FILE, column: NAME\[, key: NAME\]\} or \{pattern: REGEX\}"):
        build_dataset({**spec, "groups": "pairs.csv"}, "train")


def test_a_name_pattern_holds_out_whole_groups_in_every_paired_kind(tmp_path):
    ramp = gradient(8, 8)
    names = [f"{scene}_r{row}" for scene in ("003", "004", "005") for row in (1, 2)] + ["stray"]
    make_folder(tmp_path, {f"{n}.png": (ramp, f"{n}.png", ramp) for n in names})
    (tmp_path / "pairs.txt").write_text("".join(f"source/{n}.png,target/{n}.png\n" for n in names))
    grouping = {"groups": {"pattern": r"^(\d+)_"}, "val_groups": 0, "test_groups": ["004"]}
    for spec in ({"kind": "paired-folder", "root": str(tmp_path), **grouping},
                 {"kind": "list-file", "list": str(tmp_path / "pairs.txt"), **grouping},
                 {"kind": "image-folder", "root": str(tmp_path / "source"), **grouping}):
        splits = {split: build_dataset(spec, split) for split in ("train", "val", "test")}
        held = {split: sorted(entry[2] for entry in d.entries) for split, d in splits.items()}
        assert held == {"train": ["003_r1", "003_r2", "005_r1", "005_r2"], "val": [], "test": ["004_r1", "004_r2"]}
        assert any("stray" in path and "does not match" in why for path, why in splits["train"].skipped)
    named = {"kind": "paired-folder", "root": str(tmp_path), "groups": {"pattern": r"r(?P<group>\d)$"},
             "val_groups": 0, "test_groups": ["2"]}
    assert sorted(e[2] for e in build_dataset(named, "test").entries) == ["003_r2", "004_r2", "005_r2"]
    with pytest.raises(CdtsdeError, match="not a valid regular expression"):
        build_dataset({**named, "groups": {"pattern": "(unclosed"}}, "train")


def test_bands_are_picked_by_index_on_either_side(tmp_path):
    rng = np.random.default_rng(0)
    four = rng.integers(0, 2**16, (4, 8, 8), dtype=np.uint16)  # band-first, as multi-band TIFFs are stored
    for side in ("source", "target"):
        (tmp_path / side).mkdir()
        tifffile.imwrite(tmp_path / side / "a.tif", four, photometric="minisblack", planarconfig="separate")
    spec = {"kind": "paired-folder", "root": str(tmp_path), "source_bands": [3], "target_bands": [2, 1, 0],
            "val_fraction": 0.0, "test_fraction": 0.0, "hflip": False}
    dataset = build_dataset(spec, "train")
    item = dataset[0]
    assert item["source"].shape == (1, 8, 8) and item["target"].shape == (3, 8, 8)
    np.testing.assert_allclose(item["source"][0].numpy(), four[3] / 65535 * 2 - 1, atol=1e-5)
    np.testing.assert_allclose(item["target"].numpy(), four[[2, 1, 0]] / 65535 * 2 - 1, atol=1e-5)
    assert dataset.source_reader.record() == {"kind": "unit", "value_range": None, "bands": [3]}
    with pytest.warns(UserWarning):
        skipped = build_dataset({**spec, "source_bands": [4], "verify": True}, "train").skipped
    assert "bands [4] asked of an image with 4 band(s)" in skipped[0][1]
    with pytest.raises(CdtsdeError, match=r"data.target_bands must be a non-empty list of band indices"):
        build_dataset({**spec, "target_bands": ["red"]}, "train")
    with pytest.raises(CdtsdeError, match="data.source_bands must be a non-empty list"):
        build_dataset({**spec, "source_bands": []}, "train")
    with pytest.raises(CdtsdeError, match=r"data.target_bands does not apply to a mask target \(data.classes is set\)"):
        build_dataset({**spec, "classes": 2}, "train")
    with pytest.raises(CdtsdeError, match="optical_bands is now target_bands"):
        build_dataset({"kind": "sar-patches", "root": str(tmp_path), "optical_bands": [0]}, "train")
