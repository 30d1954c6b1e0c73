"""The volume-noise benchmark end to end on small volumes in BraTS's layout (--smoke): it trains, translates
the held-out volumes whole with each option, scores them and writes its results and figure."""

import json
import sys

import nibabel as nib
import numpy as np
import pytest

from benchmarks import volume_noise


@pytest.mark.slow
def test_the_smoke_run_scores_each_option_per_subject_and_chooses_on_validation(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for index in range(3):
        subject = f"Brats18_T_{index}_1"
        (tmp_path / "data" / subject).mkdir(parents=True)
        brain = np.zeros((24, 24, 16))
        brain[2:22, 2:22, 1:15] = 1
        t1 = brain * (400 + 200 * rng.random((24, 24, 16)))
        for modality, volume in (("t1", t1), ("t2", brain * 1000 - t1 / 2)):
            nib.save(nib.Nifti1Image(volume.astype(np.int16), np.diag([-1, -1, 1, 1])),
                     tmp_path / "data" / subject / f"{subject}_{modality}.nii.gz")
    monkeypatch.setattr(sys, "argv", ["volume_noise", "--smoke", "--methods", "bbdm", "--data",
                                      str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    volume_noise.main()
    found = json.loads((tmp_path / "out" / "volume_noise.json").read_text())
    assert set(found["options"]) == {"independent", "shared"} and found["machine"]["cores"] >= 1
    bbdm = found["methods"]["bbdm"]
    for split in ("val", "test"):
        rows = bbdm[split]["rows"]
        assert [len(rows[option]) for option in ("independent", "shared")] == [1, 1]
        assert rows["independent"][0]["name"] == rows["shared"][0]["name"]
        assert all(np.isfinite(rows[option][0][key]) for option in rows for key in volume_noise.METRICS)
        # an independent sampler's slices differ where shared draws keep them alike: they score differently
        assert rows["independent"][0]["flicker_fg"] != rows["shared"][0]["flicker_fg"]
        assert "vs_independent" in bbdm[split]["summary"]["shared"]
    val = bbdm["val"]["rows"]
    assert bbdm["default_by_val"] == max(val, key=lambda option: val[option][0]["ssim3d_fg"])
    assert (tmp_path / "out" / "volume_noise.png").stat().st_size > 0

    # again with a context model: the single-slice model's finished scores are reused, not retrained, and
    # the context model is compared with it subject by subject
    monkeypatch.setattr(volume_noise, "train", lambda method, data, config, folder, **options: pytest.fail(f"trains {folder.name}"))
    monkeypatch.setattr(sys, "argv", ["volume_noise", "--smoke", "--methods", "bbdm", "--context", "0", "1",
                                      "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    with pytest.raises(pytest.fail.Exception, match="trains run-bbdm-context-1$"):  # bbdm itself reused
        volume_noise.main()
    assert not (tmp_path / "out" / "volume_noise-parts" / "bbdm-context-1.json").exists()
    monkeypatch.undo()
    monkeypatch.setattr(sys, "argv", ["volume_noise", "--smoke", "--methods", "bbdm", "--context", "0", "1",
                                      "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    volume_noise.main()
    again = json.loads((tmp_path / "out" / "volume_noise.json").read_text())["methods"]
    assert again["bbdm"]["test"]["rows"] == bbdm["test"]["rows"]
    compared = again["bbdm context 1"]["vs_context_0"]
    assert set(compared) == {"independent", "shared"} and "ssim3d_fg" in compared["shared"]
    assert (tmp_path / "out" / "volume_context.png").stat().st_size > 0
