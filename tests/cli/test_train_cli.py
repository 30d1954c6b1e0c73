import pytest
import yaml
from helpers import TINY_UNET

from cdtsde.cli import main


def write_config(path, **train):
    config = {
        "data": {"kind": "procedural", "task": "el-cell", "n": 24, "n_val": 4, "size": 16, "seed": 1},
        "model": {"field": {"variant": "content"}, "unet": TINY_UNET},
        "train": {"max_steps": 6, "batch_size": 4, "log_every": 3, "checkpoint_every": 3, "sample_every": 6, **train},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_train_resume_and_translate_from_the_command_line(tmp_path, capsys):
    config = write_config(tmp_path / "run.yaml")
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--method", "cdtsde", "--output", str(run), "--max-steps", "3"]) == 0
    assert main(["train", "--config", str(config), "--output", str(run), "--resume"]) == 0
    assert "step 6" in capsys.readouterr().out
    assert (run / "samples" / "step_0000006.png").is_file() and (run / "config.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["field"]["variant"] == "content"
    # an EL mask model: five class channels, written back as class indices
    import json

    import numpy as np
    from PIL import Image

    from cdtsde import __version__

    record = json.loads((run / "model" / "config.json").read_text())
    assert record["method"] == "cdtsde" and record["format_version"] == 2 and record["cdtsde_version"] == __version__
    assert record["data"]["target_kind"] == "mask" and record["data"]["target_channels"] == 5
    assert record["config"]["field"]["variant"] == "content" and record["sampling"]["steps"] == 5
    from cdtsde.imagefiles import read_image
    from cdtsde.training import load_pretrained
    from cdtsde.translate import source_slices, translate_slices

    Image.fromarray((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)).save(tmp_path / "cell.png")
    assert main(["translate", "--checkpoint", str(run), "--input", str(tmp_path / "cell.png"), "--output",
                 str(tmp_path / "out"), "--steps", "2", "--gamma", "0"]) == 0
    method = load_pretrained(run)
    expected = translate_slices(method, source_slices(*read_image(tmp_path / "cell.png"), method.data),
                                sampling=method.sampling_options(steps=2, gamma=0.0), seed=0).mean[0, ..., 0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "cell.png")), expected)


def test_configuration_errors_are_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: configuration file not found" in capsys.readouterr().err
    bad = write_config(tmp_path / "bad.yaml", learning_rate=0.1)
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "r")]) == 2
    assert "unknown train option(s): learning_rate" in capsys.readouterr().err
    (tmp_path / "sections.yaml").write_text("data: {kind: procedural}\noptim: {}\n")
    assert main(["train", "--config", str(tmp_path / "sections.yaml")]) == 2
    assert "unknown run configuration option(s): optim; expected data, method, model, sampling, train" in \
        capsys.readouterr().err
    (tmp_path / "no-data.yaml").write_text("method: bbdm\n")
    assert main(["train", "--config", str(tmp_path / "no-data.yaml")]) == 2
    assert "no-data.yaml: run configuration.data is required" in capsys.readouterr().err
    # the data spec is typed when the file is read, before any output folder is touched: both sides of unpaired data
    (tmp_path / "data.yaml").write_text("data: {kind: unpaired, source: {kind: procedural}, "
                                        "target: {kind: procedural, n: -3}}\n")
    assert main(["train", "--config", str(tmp_path / "data.yaml"), "--output", str(tmp_path / "never")]) == 2
    assert "data.yaml: data.n must be" in capsys.readouterr().err and not (tmp_path / "never").exists()
