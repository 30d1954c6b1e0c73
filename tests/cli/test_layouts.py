"""Translate then evaluate on the layouts users keep: one folder per subject holding every modality (BraTS),
inputs and targets named for their modality (`translate --recursive [--rename]`, `evaluate --recursive
[--rename]`), the README's recipe run as written."""

import csv
import json
import shlex
import warnings

import nibabel as nib
import numpy as np
import pytest
from helpers import REPO, tiny_model

from cdtsde.cli import main
from cdtsde.data.readers import NiftiReading
from cdtsde.imagefiles import read_image
from cdtsde.training import save_pretrained


def brats_like(root, subjects=("Brats18_A_1", "Brats18_B_1"), size=16):
    """Two subjects in BraTS' layout: <subject>/<subject>_{t1,t2,flair,seg}.nii.gz, three slices each."""
    rng = np.random.default_rng(0)
    for subject in subjects:
        (root / subject).mkdir(parents=True)
        for modality in ("t1", "t2", "flair", "seg"):
            volume = rng.random((size, size, 3)).astype(np.float32) * 100
            nib.save(nib.Nifti1Image(volume, np.eye(4)), root / subject / f"{subject}_{modality}.nii.gz")


def test_a_brats_layout_translates_t1_to_t2_and_evaluates_against_the_t2_volumes(tmp_path, capsys):
    """`translate --recursive '*_t1.nii.gz'` keeps the subject folders and translates only the T1 volumes;
    `evaluate --recursive --rename _t1:_t2` scores each against its own subject's T2 volume (a T2 replaced by
    its subject's translation scores perfectly, the other does not), with the other modalities left out."""
    for parameter in (model := tiny_model(size=16)).net.parameters():
        parameter.data.normal_(0, 0.05)
    save_pretrained(model, tmp_path / "model")
    brats_like(tmp_path / "brats")
    out = tmp_path / "translated"
    assert main(["translate", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "brats"),
                 "--output", str(out), "--recursive", "*_t1.nii.gz", "--steps", "2"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == [
        "Brats18_A_1/Brats18_A_1_t1.nii.gz", "Brats18_B_1/Brats18_B_1_t1.nii.gz"]
    # subject B's T2 is its own translation: a perfect score there and only there shows the pairing
    translated = nib.load(out / "Brats18_B_1/Brats18_B_1_t1.nii.gz")
    nib.save(translated, tmp_path / "brats/Brats18_B_1/Brats18_B_1_t2.nii.gz")
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(out), "--target", str(tmp_path / "brats"), "--recursive",
                 "--rename", "_t1:_t2", "--out", str(tmp_path / "evaluation.json")]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["pairs"] == 2 and report["problems"] == []
    with open(tmp_path / "evaluation.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"Brats18_A_1/Brats18_A_1_t2", "Brats18_B_1/Brats18_B_1_t2"}
    assert float(rows["Brats18_B_1/Brats18_B_1_t2"]["mae"]) == 0.0 < float(rows["Brats18_A_1/Brats18_A_1_t2"]["mae"])

    # without the renaming a translation pairs with its own input (same name) and every other modality is
    # "no prediction with this name"
    assert main(["evaluate", "--pred", str(out), "--target", str(tmp_path / "brats"), "--recursive",
                 "--out", str(tmp_path / "plain.json")]) == 1
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["pairs"] == 2 and len(plain["problems"]) == 6
    assert main(["evaluate", "--pred", str(out), "--target", str(tmp_path / "brats"), "--rename", "_t1",
                 "--out", str(tmp_path / "bad.json")]) == 2
    assert "--rename: expected FROM:TO" in capsys.readouterr().err


def readme_recipe() -> list[list[str]]:
    """The README's commands that translate a BraTS layout's T1 volumes and score them against its T2 ones."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("cdtsde translate --checkpoint runs/brats --input brats/ --recursive '*_t1.nii.gz' "
                        "--rename _t1:_t2 --output t2-from-t1/  # t2-from-t1/<subject>/<subject>_t2.nii.gz")
    return [shlex.split(line, comments=True)[1:] for line in lines[start:start + 2]]


def test_the_readme_renaming_recipe_runs_as_written_on_a_brats_layout(tmp_path, monkeypatch, capsys):
    """`translate --recursive '*_t1.nii.gz' --rename _t1:_t2` writes each subject's translation under its T2
    name; `evaluate --recursive '*_t2.nii.gz' --checkpoint` then pairs it with that subject's T2 volume
    (no --rename), read as the checkpoint's training targets were (NIfTI at its percentile, no guess
    warned about): exit 0, each row the MAE against its own subject's T2. The README's lines, as written."""
    translate, evaluate = readme_recipe()
    assert translate[0] == "translate" and evaluate[0] == "evaluate" and "--rename" not in evaluate
    monkeypatch.chdir(tmp_path)
    for parameter in (model := tiny_model(size=16)).net.parameters():
        parameter.data.normal_(0, 0.05)
    model.data.target_reading = NiftiReading(99.0).record()  # as a run on NIfTI data at percentile 99 records
    save_pretrained(model, tmp_path / "runs" / "brats")
    brats_like(tmp_path / "brats")
    assert main(translate) == 0
    out = tmp_path / "t2-from-t1"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")) == [
        "Brats18_A_1/Brats18_A_1_t2.nii.gz", "Brats18_B_1/Brats18_B_1_t2.nii.gz"]
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a guessed scaling would be a warning
        assert main(evaluate) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["pairs"] == 2 and report["problems"] == []
    with open(tmp_path / "evaluation.csv", newline="") as handle:
        rows = {row["name"]: float(row["mae"]) for row in csv.DictReader(handle)}
    reading = NiftiReading(99.0)
    for subject, other in (("Brats18_A_1", "Brats18_B_1"), ("Brats18_B_1", "Brats18_A_1")):
        prediction = read_image(out / subject / f"{subject}_t2.nii.gz")[0]
        own, theirs = (reading.to_unit(read_image(path)[0], path) for path in
                       (tmp_path / "brats" / s / f"{s}_t2.nii.gz" for s in (subject, other)))
        assert rows[f"{subject}/{subject}_t2"] == pytest.approx(np.abs(prediction - own).mean(), rel=1e-5)
        assert rows[f"{subject}/{subject}_t2"] != pytest.approx(np.abs(prediction - theirs).mean(), rel=1e-3)
    # an input not named with the FROM ending is refused before any work, naming the ending
    assert main(["translate", "--checkpoint", "runs/brats", "--input", "brats", "--recursive", "*_flair.nii.gz",
                 "--rename", "_t1:_t2", "--output", "flair-out"]) == 2
    assert "2 input(s) not named with the ending '_t1'" in capsys.readouterr().err and not (tmp_path / "flair-out").exists()
