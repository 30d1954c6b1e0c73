"""Translate then evaluate on the layouts users keep: one folder per subject holding every modality (BraTS),
inputs and targets named for their modality (`translate --recursive`, `evaluate --recursive --rename`)."""

import csv
import json

import nibabel as nib
import numpy as np
from helpers import tiny_model

from cdtsde.cli import main
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
