import csv
import json
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from cdtsde.cli import main


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folders_with_a_missing_partner(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        target = (rng.random((24, 24)) * 255).astype(np.uint8)
        write_png(tmp_path / "target" / f"{name}.png", target)
        if name != "c":
            write_png(tmp_path / "pred" / f"{name}.png", target if name == "a" else 255 - target)
    write_png(tmp_path / "pred" / "extra.png", np.zeros((24, 24), np.uint8))
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), "--out", str(out)])
    assert code == 1  # problems were reported
    printed = capsys.readouterr().out
    assert "extra.png: no target with this name" in printed and "c.png: no prediction with this name" in printed
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert [r["name"] for r in rows] == ["a", "b"] and float(rows[0]["ssim"]) == pytest.approx(1.0)
    summary = json.loads(out.read_text())["summary"]
    assert summary["ssim"]["n"] == 2 and summary["psnr"]["non_finite"] == 1
    assert "| pred |" in printed and "±" in printed


def test_nonzero_foreground_adds_restricted_scores(tmp_path, capsys):
    target = np.zeros((20, 20), np.uint8)
    target[5:15, 5:15] = 200
    pred = target.copy()
    pred[0, 0] = 255  # an error outside the foreground only
    write_png(tmp_path / "t" / "x.png", target)
    write_png(tmp_path / "p" / "x.png", pred)
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--target", str(tmp_path / "t"), "--nonzero-foreground",
                 "--out", str(tmp_path / "s.json")]) == 0
    row = next(csv.DictReader(open(tmp_path / "s.csv")))
    assert float(row["mse"]) > 0 and float(row["mse_fg"]) == 0


def test_mask_task_on_real_el_annotations(shared_data, tmp_path, capsys):
    from cdtsde.data.masks import read_mask

    truth = sorted((shared_data / "pv-el-cracks" / "val" / "ann").glob("*.png"))[:3]
    for path in truth:
        write_png(tmp_path / "pred" / path.name, read_mask(path))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(truth[0].parent), "--kind", "mask",
                 "--classes", "pv-el", "--out", str(tmp_path / "m.json")]) == 1  # the other val masks lack partners
    summary = json.loads((tmp_path / "m.json").read_text())["summary"]
    assert summary["dice/defect"]["mean"] == 1.0 and summary["hd/busbar"]["mean"] == 0.0
    assert json.loads((tmp_path / "m.json").read_text())["pairs"] == 3


def test_bad_arguments(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path / "none"), "--target", str(tmp_path)]) == 2
    assert "none: not a folder" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path), "--target", str(tmp_path), "--classes", "x:y"]) == 2
    assert "--classes" in capsys.readouterr().err


def test_kmeans_dice_fit_on_training_images_scores_cluster_agreement(tmp_path, capsys):
    """Three intensity classes, clusters fit on training images only: a translation with the target's
    layout and intensities scores K-Means Dice 1, one with the classes permuted scores low; misuse is refused."""
    levels = np.array([20, 120, 230], np.uint8)

    def layout(seed):
        return np.random.default_rng(seed).integers(0, 3, (4, 4)).repeat(6, 0).repeat(6, 1)

    for i in range(3):
        write_png(tmp_path / "train" / f"t{i}.png", levels[layout(10 + i)])
    labels = layout(0)
    write_png(tmp_path / "target" / "a.png", levels[labels])
    write_png(tmp_path / "pred" / "a.png", levels[labels])
    write_png(tmp_path / "target" / "b.png", levels[labels])
    write_png(tmp_path / "pred" / "b.png", levels[(labels + 1) % 3])
    out = tmp_path / "scores.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                 "--kmeans", "3", "--kmeans-fit", str(tmp_path / "train"), "--out", str(out)])
    assert code == 0
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "scores.csv"))}
    assert float(rows["a"]["kmeans3/dice/mean"]) == pytest.approx(1.0)
    assert float(rows["b"]["kmeans3/dice/mean"]) < 0.5
    assert {f"kmeans3/dice/cluster{k}" for k in range(3)} <= set(rows["a"])
    train = str(tmp_path / "train")
    for bad, message in ((["--kmeans", "3"], "needs --kmeans-fit"), (["--kmeans-fit", train], "without --kmeans"),
                         (["--kmeans", "1", "--kmeans-fit", train], "must be >= 2")):
        code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), *bad,
                     "--out", str(out)])
        assert code != 0 and message in capsys.readouterr().err


def test_perception_flag_adds_set_level_scores(tmp_path, capsys):
    """Blurred predictions against sharp targets: sharpness ratio below 1 and a positive spectral distance,
    in the JSON summary and the printed table; refused for masks."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    for index in range(4):
        image = rng.random((32, 32))
        write_png(tmp_path / "target" / f"a{index}.png", (image * 255).astype(np.uint8))
        write_png(tmp_path / "pred" / f"a{index}.png", (gaussian_filter(image, 1.5) * 255).astype(np.uint8))
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), "--perception",
                 "--out", str(out)]) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["perception/sharpness_ratio"]["mean"] < 0.5 and summary["perception/spectral_distance"]["mean"] > 1
    assert summary["perception/patch_swd"]["n"] == 4 and "perception/sharpness_ratio" in capsys.readouterr().out
    for flag in ("--perception", "--nonzero-foreground"):
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), flag,
                     "--kind", "mask", "--out", str(out)]) == 2
        assert f"{flag} compares images" in capsys.readouterr().err


def test_a_pair_with_a_wrong_foreground_is_a_problem_left_out_of_every_score(tmp_path, capsys):
    """A foreground mask of another size makes its pair a problem: no row, and not in the set-level scores
    either (they equal those of the other pairs alone)."""
    rng = np.random.default_rng(3)
    for index in range(4):
        image = (rng.random((24, 24)) * 255).astype(np.uint8)
        write_png(tmp_path / "target" / f"a{index}.png", image)
        write_png(tmp_path / "pred" / f"a{index}.png", 255 - image)
        write_png(tmp_path / "fg" / f"a{index}.png", np.full((12, 12) if index == 3 else (24, 24), 255, np.uint8))
    common = ["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"), "--perception"]
    assert main([*common, "--foreground-dir", str(tmp_path / "fg"), "--out", str(tmp_path / "s.json")]) == 1
    assert "a3.png: foreground of shape (12, 12) does not match the target's (24, 24)" in capsys.readouterr().out
    (tmp_path / "pred" / "a3.png").unlink()
    (tmp_path / "target" / "a3.png").unlink()
    assert main([*common, "--out", str(tmp_path / "t.json")]) == 0
    with_problem, without = (json.loads((tmp_path / name).read_text()) for name in ("s.json", "t.json"))
    assert with_problem["pairs"] == 3 and with_problem["summary"]["perception/patch_swd"]["n"] == 3
    for key in ("perception/patch_swd", "perception/sharpness_ratio", "psnr"):
        assert with_problem["summary"][key] == without["summary"][key]


def test_nifti_volumes_get_volume_rows_a_table_and_a_figure_of_their_cuts(tmp_path, capsys):
    """Two volumes in [0, 1] (read as they are): the JSON's "volumes" section holds `volume_metrics` of
    each (the brain mask in 3-D, LPS planes from the affine, the flicker along --slice-axis), the table is
    printed, the per-file rows stay, and the figure of source, translation and target cuts is written
    beside the JSON, 9 panels of 200 px a volume."""
    import nibabel as nib
    from PIL import Image

    from cdtsde.metrics.volume import volume_metrics

    rng = np.random.default_rng(4)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    expected = {}
    for name in ("s1", "s2"):
        target = (0.2 + 0.6 * rng.random((16, 14, 12))).astype(np.float32)
        target[:3] = 0  # outside the brain
        pred = np.clip(target + 0.05 * (-1.0) ** np.arange(12), 0, 1).astype(np.float32) * (target > 0)
        for folder, volume in (("target", target), ("pred", pred), ("source", 1 - target)):
            (tmp_path / folder).mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(volume, lps), tmp_path / folder / f"{name}.nii.gz")
        expected[name] = volume_metrics(pred, target, target > 0, ("L", "P", "S"), slice_axis=1)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                 "--source", str(tmp_path / "source"), "--nonzero-foreground", "--slice-axis", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["pairs"] == 2 and [row["name"] for row in csv.DictReader(open(tmp_path / "scores.csv"))] == ["s1",
                                                                                                                "s2"]
    volumes = payload["volumes"]
    assert volumes["count"] == 2 and volumes["slice_axis"] == 1
    for row in volumes["rows"]:
        assert {k: v for k, v in row.items() if k != "name"} == pytest.approx(expected[row["name"]], abs=1e-6)
    flicker = [expected[name]["flicker_fg"] for name in ("s1", "s2")]
    assert volumes["summary"]["flicker_fg"]["mean"] == pytest.approx(np.mean(flicker))
    assert {"ci_low", "ci_high"} <= set(volumes["summary"]["psnr3d"])
    assert "| volumes |" in printed and "flicker_fg" in printed and "scores-volumes.png" in printed
    with Image.open(tmp_path / "scores-volumes.png") as image:
        assert image.size == (9 * 200, 2 * 200)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                 "--figure", str(tmp_path / "cuts.png"), "--out", str(tmp_path / "plain.json")]) == 0
    with Image.open(tmp_path / "cuts.png") as image:
        assert image.size == (6 * 200, 2 * 200)  # no source: translation and target
    plain = json.loads((tmp_path / "plain.json").read_text())["volumes"]
    assert plain["slice_axis"] == 2 and "flicker_fg" not in plain["summary"]


def test_image_folders_have_no_volume_section(tmp_path, capsys):
    image = (np.random.default_rng(5).random((24, 24)) * 255).astype(np.uint8)
    write_png(tmp_path / "target" / "a.png", image)
    write_png(tmp_path / "pred" / "a.png", image)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                 "--figure", str(tmp_path / "cuts.png"), "--out", str(out)]) == 0
    assert "volumes" not in json.loads(out.read_text()) and not (tmp_path / "cuts.png").exists()
    assert "there were none" in capsys.readouterr().out


def test_prediction_names_that_clash_without_their_extension_are_refused(tmp_path, capsys):
    image = (np.random.default_rng(6).random((16, 16)) * 255).astype(np.uint8)
    write_png(tmp_path / "target" / "a.png", image)
    write_png(tmp_path / "pred" / "a.png", image)
    Image.fromarray(255 - image).save(tmp_path / "pred" / "a.tif")
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                 "--out", str(tmp_path / "s.json")])
    error = capsys.readouterr().err
    assert code == 2 and "a.png" in error and "a.tif" in error and "'a'" in error
    assert not (tmp_path / "s.json").exists()


MRI_PHANTOM = {"kind": "procedural", "task": "mri-phantom", "n": 8, "n_test": 3, "size": 16}
EL_CELL = {"kind": "procedural", "task": "el-cell", "n": 8, "n_test": 4, "size": 16}


def write_yaml(path, document):
    import yaml

    path.write_text(yaml.safe_dump(document))
    return path


def without_timing(rows):
    return [{k: v for k, v in row.items() if k != "seconds_per_image"} for row in rows]


def test_checkpoint_on_a_data_spec_scores_as_evaluate_model_does(model_dir, tmp_path, capsys):
    """The tiny CDTSDE model at 2 steps on the test split of a procedural spec: the CSV rows and the JSON
    summary are those of `evaluate_model` on `build_dataset(spec, "test")`, whether the YAML holds a
    `data:` mapping alone or a whole run configuration; --split val scores the val split's items."""
    from cdtsde.data import build_dataset
    from cdtsde.evaluation import evaluate_model
    from cdtsde.training import load_pretrained

    model = load_pretrained(model_dir)
    rows, summary = evaluate_model(model, build_dataset(MRI_PHANTOM, "test"), steps=2)
    spec = write_yaml(tmp_path / "spec.yaml", {"data": MRI_PHANTOM})
    run_config = write_yaml(tmp_path / "run.yaml", {"method": "bbdm", "data": MRI_PHANTOM, "train": {"max_steps": 9}})
    for name, yaml_file in (("spec", spec), ("run", run_config)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(yaml_file), "--steps", "2",
                     "--out", str(out)]) == 0
        payload = json.loads(out.read_text())
        assert payload["split"] == "test" and payload["pairs"] == len(rows) and payload["sampling"]["steps"] == 2
        assert without_timing([payload["summary"]["psnr"], payload["summary"]["ssim"]]) == \
            without_timing([summary["psnr"], summary["ssim"]])
        written = list(csv.DictReader(open(out.with_suffix(".csv"))))
        assert [r["name"] for r in written] == [r["name"] for r in rows]
        assert [float(r["psnr"]) for r in written] == pytest.approx([r["psnr"] for r in rows], rel=1e-12)
        printed = capsys.readouterr().out
        assert f"| {model_dir.name} |" in printed and f"{len(rows)} item(s) of the test split" in printed
    val_out = tmp_path / "val.json"
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(spec), "--split", "val", "--steps", "2",
                 "--out", str(val_out)]) == 0
    val_rows, _ = evaluate_model(model, build_dataset(MRI_PHANTOM, "val"), steps=2)
    val_summary = json.loads(val_out.read_text())["summary"]
    assert val_summary["psnr"]["mean"] == pytest.approx(np.mean([r["psnr"] for r in val_rows]))
    assert val_summary["psnr"]["n"] == len(val_rows) != len(rows)


def test_identity_on_el_masks_gives_the_mask_metrics(tmp_path, capsys):
    """The identity's all-background masks, scored per class with the pv-el classes (the data spec is
    pv-el mask data): the scores of `evaluate_model` with PV_EL_CLASSES and PV_EL_DEFECT, where a class's
    Dice is 1 on the items without it (empty on empty) and 0 on the others, and the mask table printed."""
    from cdtsde.data import build_dataset
    from cdtsde.data.masks import decode_classes
    from cdtsde.evaluation import evaluate_model
    from cdtsde.metrics import PV_EL_CLASSES, PV_EL_DEFECT
    from cdtsde.run import build_run
    from cdtsde.training import save_pretrained

    identity = build_run({"method": "identity", "data": EL_CELL})[0]
    model_dir = save_pretrained(identity, tmp_path / "identity")
    test_set = build_dataset(EL_CELL, "test")
    _, summary = evaluate_model(identity, test_set, classes=PV_EL_CLASSES, foreground=PV_EL_DEFECT)
    out = tmp_path / "masks.json"
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data",
                 str(write_yaml(tmp_path / "el.yaml", {"data": EL_CELL})), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["kind"] == "mask" and payload["method"] == "identity" and payload["pairs"] == 4
    scores = {key: value["mean"] for key, value in payload["summary"].items() if key.startswith(("dice/", "iou/"))}
    assert scores == pytest.approx({key: summary[key]["mean"] for key in scores}) and len(scores) == 10
    # by index: a dataset wraps indices past its end (it skips unreadable entries), so iterating it never stops
    targets = [decode_classes(test_set[i]["target"]) for i in range(len(test_set))]
    for value, name in PV_EL_CLASSES.items():
        if value:
            assert scores[f"dice/{name}"] == pytest.approx(np.mean([not (t == value).any() for t in targets]))
    assert scores["dice/defect"] == pytest.approx(np.mean([not np.isin(t, PV_EL_DEFECT).any() for t in targets]))
    assert "| cross crack |" in capsys.readouterr().out


def test_checkpoint_mode_refusals(model_dir, tmp_path, capsys):
    spec = str(write_yaml(tmp_path / "spec.yaml", {"data": MRI_PHANTOM}))
    out = tmp_path / "s.json"
    cases = [
        (["--checkpoint", str(model_dir), "--data", spec, "--pred", str(tmp_path)], "--target is missing"),
        (["--checkpoint", str(model_dir), "--data", spec, "--pred", str(tmp_path), "--target", str(tmp_path)],
         "give one of the two"),
        (["--data", spec], "--checkpoint is missing"),
        (["--checkpoint", str(model_dir)], "--data is missing"),
        (["--pred", str(tmp_path)], "--target is missing"),
        ([], "give --pred and --target"),
        (["--checkpoint", str(model_dir), "--data", spec, "--split", "tset"], "split must be one of"),
        (["--checkpoint", str(model_dir), "--data", str(write_yaml(tmp_path / "el.yaml", {"data": EL_CELL}))],
         "channel(s) of masks, but the model"),
        (["--checkpoint", str(model_dir), "--data", spec, "--recursive"], "--recursive is for --pred/--target"),
        (["--checkpoint", str(model_dir), "--data", spec, "--kind", "mask"], "translates into images"),
        (["--checkpoint", str(model_dir), "--data", spec, "--gamma", "0.5", "--steps", "2"], None),
        (["--pred", str(tmp_path), "--target", str(tmp_path), "--steps", "2"], "--steps is for --checkpoint"),
    ]
    for extra, message in cases:
        code = main(["evaluate", *extra, "--out", str(out)])
        error = capsys.readouterr().err
        if message is None:  # a sampling option the method has, given: scored
            assert code == 0
            continue
        assert code == 2 and message in error, (extra, error)
    # the output written above is kept unless --overwrite replaces it
    before = out.read_text()
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", spec, "--steps", "3", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == before
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", spec, "--steps", "3", "--overwrite",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["sampling"]["steps"] == 3


def sentinel_patches(root, rng):
    """Two scenes of Sentinel-1 dB (VV, VH) / raw Sentinel-2 uint16 reflectance patches (x 10000 as stored,
    here up to 4000) in the sar-patches layout; {target stem: reflectance}."""
    reflectances = {}
    for folder in ("s1", "s2"):
        (root / folder).mkdir(parents=True)
    for scene in ("alpha", "beta"):
        db = rng.uniform(-30, 0, (2, 16, 16)).astype(np.float32)
        tifffile.imwrite(root / "s1" / f"{scene}_s1_p1.tif", db, photometric="minisblack", planarconfig="separate")
        reflectance = rng.integers(0, 4000, (16, 16, 3)).astype(np.uint16)
        tifffile.imwrite(root / "s2" / f"{scene}_s2_p1.tif", reflectance)
        reflectances[f"{scene}_s2_p1"] = reflectance
    return reflectances


def psnr(prediction, target):
    return 10 * np.log10(1 / np.mean((prediction.astype(np.float64) - target) ** 2))


def test_uint16_targets_are_read_as_the_training_data_read_them(tmp_path, capsys):
    """Raw Sentinel-2 targets (uint16; training divided them by reflectance_max 3000): with --checkpoint (its
    recorded target reading) or --data (the spec's) each target is read as training read it, so predictions
    near the training-scaled targets score the PSNR against those; without either the target is scaled by its
    uint16 range, a guess that is warned about and scores otherwise. In the model mode a spec that reads the
    files otherwise than training did is said."""
    from cdtsde.data import build_dataset
    from cdtsde.methods.identity import Identity, IdentityConfig
    from cdtsde.run import data_info
    from cdtsde.training import save_pretrained

    rng = np.random.default_rng(4)
    reflectances = sentinel_patches(tmp_path / "sen", rng)
    spec = {"kind": "sar-patches", "root": str(tmp_path / "sen"), "source_bands": ["VH"], "val_scenes": 0,
            "test_scenes": 1}
    model_dir = save_pretrained(Identity(IdentityConfig(), data_info(build_dataset(spec, "train"), spec)),
                                tmp_path / "model")
    (tmp_path / "pred").mkdir()
    expected = {"training": [], "dtype": []}
    for name, reflectance in reflectances.items():
        prediction = np.clip(reflectance / 3000 + rng.normal(0, 0.05, reflectance.shape), 0, 1).astype(np.float32)
        tifffile.imwrite(tmp_path / "pred" / f"{name}.tif", np.moveaxis(prediction, -1, 0), photometric="minisblack",
                         planarconfig="separate")
        expected["training"].append(psnr(prediction, np.clip(reflectance / 3000, 0, 1)))
        expected["dtype"].append(psnr(prediction, reflectance / 65535))
    folders = ["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "sen" / "s2")]
    spec_file = str(write_yaml(tmp_path / "spec.yaml", {"data": spec}))
    scores = {}
    for how, extra in (("checkpoint", ["--checkpoint", str(model_dir)]), ("data", ["--data", spec_file]),
                       ("guess", [])):
        out = tmp_path / f"{how}.json"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main([*folders, *extra, "--out", str(out)]) == 0
        guessed = [str(w.message) for w in caught if "by a guess" in str(w.message)]
        assert guessed == ([] if extra else [guessed[0]]) and (extra or "2 uint16 by its full range" in guessed[0])
        scores[how] = json.loads(out.read_text())["summary"]["psnr"]["mean"]
    assert scores["checkpoint"] == scores["data"] == pytest.approx(np.mean(expected["training"]), rel=1e-5)
    assert scores["guess"] == pytest.approx(np.mean(expected["dtype"]), rel=1e-5)
    assert scores["checkpoint"] - scores["guess"] > 10
    capsys.readouterr()
    other_scale = write_yaml(tmp_path / "other.yaml", {"data": {**spec, "reflectance_max": 10000}})
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(other_scale),
                 "--out", str(tmp_path / "model.json")]) == 0
    printed = capsys.readouterr().out
    assert "reads its targets as {'kind': 'optical', 'reflectance_max': 10000.0" in printed
    assert "reads its sources" not in printed


def test_a_checkpoint_from_before_ras_reading_is_warned_of_on_nifti_data(model_dir, tmp_path, capsys):
    """A checkpoint without `data.nifti_orientation` saw volumes in their stored directions; a NIfTI data spec
    reads them in RAS: `evaluate --checkpoint --data` says so (and is silent for a checkpoint that records RAS)."""
    from helpers import ixi_volumes

    ixi_volumes(tmp_path, subjects=2, shape=(16, 16, 4), affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    spec = write_yaml(tmp_path / "ixi.yaml", {"data": {"kind": "ixi", "root": str(tmp_path), "size": 16,
                                                        "val_subjects": 0, "test_subjects": 1}})
    for recorded in (True, False):
        if not recorded:
            record = json.loads((model_dir / "config.json").read_text())
            del record["data"]["nifti_orientation"]
            (model_dir / "config.json").write_text(json.dumps(record))
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(spec), "--steps", "1",
                     "--out", str(tmp_path / f"{recorded}.json")]) == 0
        assert ("trained before NIfTI volumes were read in RAS" in capsys.readouterr().out) is not recorded


def test_kmeans_fit_images_are_read_as_the_checkpoint_s_training_targets(model_dir, tmp_path, monkeypatch):
    """Scoring a checkpoint with --kmeans-fit FOLDER reads the fitting images by the reading its training
    targets recorded (`DataInfo.target_reading`), not by their dtype."""
    import cdtsde.metrics.folders as folders

    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    recorded = {"kind": "optical", "reflectance_max": 3000.0, "bands": None}
    config["data"]["target_reading"] = recorded
    config_path.write_text(json.dumps(config))
    fit = folders.fit_kmeans_on_folder
    readings = []

    def recording_fit(folder, clusters, seed=0, reading=None):
        readings.append(reading)
        return fit(folder, clusters, seed)

    monkeypatch.setattr(folders, "fit_kmeans_on_folder", recording_fit)
    for i in range(3):
        write_png(tmp_path / "train" / f"t{i}.png", (np.random.default_rng(i).random((16, 16)) * 255).astype(np.uint8))
    spec = write_yaml(tmp_path / "spec.yaml", {"data": MRI_PHANTOM})
    assert main(["evaluate", "--checkpoint", str(model_dir), "--data", str(spec), "--steps", "1", "--kmeans", "3",
                 "--kmeans-fit", str(tmp_path / "train"), "--out", str(tmp_path / "s.json")]) == 0
    assert len(readings) == 1 and readings[0].record() == recorded
