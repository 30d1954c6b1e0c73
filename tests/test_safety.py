"""Nothing mixed, nothing lost, nothing read wrong: folder locks (two real processes), files a command must
not replace, failures mid-run reported per file, outputs readable by others."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_UNET, grey, translate
from PIL import Image

from cdtsde.atomic import atomic_path
from cdtsde.cli import main
from cdtsde.errors import CdtsdeError
from cdtsde.imagefiles import read_image, write_image
from cdtsde.locks import LOCK_FILE, FolderLockedError, folder_lock
from cdtsde.translate import TRANSLATIONS_RECORD, check_outputs, translate_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_run_config(path, seed=1, max_steps=6):
    path.write_text(yaml.safe_dump({
        "data": {"kind": "procedural", "task": "el-cell", "n": 24, "size": 16, "seed": 1},
        "model": {"field": {"variant": "linear"}, "unet": TINY_UNET},
        "train": {"max_steps": max_steps, "batch_size": 4, "log_every": 2, "checkpoint_every": 3, "sample_every": 0,
                  "seed": seed}}))
    return path


def wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- locks ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_training_into_a_held_run_folder_fails_at_once_and_mixes_nothing(tmp_path):
    """Two `cdtsde train` processes with different configurations into one folder: the second fails with exit
    2 naming the folder and the first's pid, before it writes anything; the folder holds the first run only.
    After the first is killed with SIGKILL the kernel has released its lock: the folder can be taken again."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cdtsde", "train", "--output", str(run)]
    first = subprocess.Popen([*command, "--config", str(write_run_config(tmp_path / "a.yaml", seed=1, max_steps=5000))],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for((run / "config.yaml").is_file, first)
        assert (run / LOCK_FILE).read_text().startswith(f"{first.pid} ")
        second = subprocess.run([*command, "--config", str(write_run_config(tmp_path / "b.yaml", seed=2))], env=ENV,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"{run}: in use by another cdtsde command (pid {first.pid} (cdtsde train))" in second.stderr
        assert "training" not in second.stdout  # refused before the data were even built
        assert first.poll() is None  # the first run goes on
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 1
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    with folder_lock(run, "test"):  # SIGKILL released the flock; the stale file does not block
        assert (run / LOCK_FILE).read_text().startswith(f"{os.getpid()} ")
    assert not (run / LOCK_FILE).exists()


def test_a_translation_into_a_folder_another_process_holds_is_refused(model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    grey(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cdtsde.locks import folder_lock\n"
                               f"with folder_lock({str(out)!r}, 'cdtsde translate'):\n"
                               "    print('held', flush=True); time.sleep(120)"],
                              env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert translate(model_dir, tmp_path / "in", out) == 2
        assert time.monotonic() - started < 30
        err = capsys.readouterr().err
        assert f"{out}: in use by another cdtsde command (pid {holder.pid} (cdtsde translate))" in err
        assert not (out / "a.png").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_is_released_on_exit_and_held_against_the_same_process(tmp_path):
    folder = tmp_path / "new"
    with folder_lock(folder, "first"):
        with pytest.raises(FolderLockedError, match=f"pid {os.getpid()} \\(first\\)"), folder_lock(folder, "second"):
            pass
    assert not folder.exists()  # created by the lock, left empty: removed
    folder.mkdir()
    with pytest.raises(RuntimeError), folder_lock(folder, "failing"):
        raise RuntimeError("the command failed")
    with folder_lock(folder, "again"):
        pass
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_without_fcntl_the_lock_file_is_created_exclusively_and_a_dead_holder_is_taken_over(tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` raises ImportError, as on Windows
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(f"{dead.stdout.strip()} (cdtsde train)\n")
    with folder_lock(tmp_path, "cdtsde translate"):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()} (cdtsde translate)\n"
        with pytest.raises(FolderLockedError, match=f"pid {os.getpid()} \\(cdtsde translate\\)"), \
                folder_lock(tmp_path, "second"):
            pass
    assert not (tmp_path / LOCK_FILE).exists()


# --- nothing lost --------------------------------------------------------------------------------------------

def test_training_never_writes_over_the_users_config_or_metrics(tmp_path, capsys):
    """The user's own config.yaml (with comments) inside --output is the configuration being read: refused,
    --overwrite included. A folder holding files a run writes but no run is refused, naming them."""
    folder = tmp_path / "exp"
    folder.mkdir()
    config = write_run_config(folder / "config.yaml")
    config.write_text("# my notes\n" + config.read_text())
    original = config.read_text()
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--config", str(config), "--output", str(folder), *extra]) == 2
        assert "is the file the run writes its configuration to" in capsys.readouterr().err
        assert config.read_text() == original
    (folder / "metrics.csv").write_text("my,table\n")
    elsewhere = write_run_config(tmp_path / "run.yaml", max_steps=2)
    assert main(["train", "--config", str(elsewhere), "--output", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: holds metrics.csv, config.yaml, which a run writes, but no training run" in err
    assert (folder / "metrics.csv").read_text() == "my,table\n" and config.read_text() == original
    assert main(["train", "--config", str(elsewhere), "--output", str(folder), "--overwrite"]) == 0
    assert (folder / "state.pt").is_file() and not (folder / LOCK_FILE).exists()


def test_translate_never_replaces_the_users_files_in_the_output_folder(model_dir, tmp_path, capsys):
    """`--input dir/e.jpg --output dir` with the user's own dir/e.png: named as a file no translation wrote;
    files a translation wrote there are replaced with --overwrite as before."""
    folder = tmp_path / "dir"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(folder / "e.jpg")
    grey(folder / "e.png", seed=3)
    original = (folder / "e.png").read_bytes()
    assert translate(model_dir, folder / "e.jpg", folder) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'e.png'}" in err and "that no translation wrote" in err
    assert (folder / "e.png").read_bytes() == original
    out = tmp_path / "out"
    assert translate(model_dir, folder / "e.jpg", out) == 0
    assert (out / TRANSLATIONS_RECORD).read_text() == "e.png\n"
    assert translate(model_dir, folder / "e.jpg", out) == 2
    assert "1 output file(s) exist already" in capsys.readouterr().err
    assert translate(model_dir, folder / "e.jpg", out, "--overwrite") == 0
    assert (out / TRANSLATIONS_RECORD).read_text() == "e.png\n"


def test_a_file_that_appears_while_translating_is_not_replaced(model_dir, tmp_path):
    """The outputs are checked at the start, and each again as it is written (created exclusively): a file
    made in between is left as it is."""
    from cdtsde.training import load_pretrained

    source = grey(tmp_path / "a.png")
    out = tmp_path / "out"
    assert check_outputs([source], out) == [source]
    (out / "a.png").write_bytes(b"made meanwhile")
    method = load_pretrained(model_dir)
    with pytest.raises(CdtsdeError, match="a.png: appeared while translating; left as it is"):
        translate_file(method, source, out, overwrite=False)
    assert (out / "a.png").read_bytes() == b"made meanwhile"
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []
    translate_file(method, source, out, overwrite=True)
    assert Image.open(out / "a.png").size == (16, 16)


# --- failures mid-run ----------------------------------------------------------------------------------------

def test_a_failed_write_is_reported_for_its_file_and_the_others_are_written(model_dir, tmp_path, capsys,
                                                                            monkeypatch):
    """A full disk while one file is written: that file is named with the reason, its half-written temporary
    removed, the files after it still translated, and the command exits 1 with the count."""
    (tmp_path / "in").mkdir()
    for index in range(3):
        grey(tmp_path / "in" / f"x{index}.png", seed=index)
    save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if ".x1.png." in str(fp):
            with open(fp, "wb") as handle:
                handle.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "out"
    assert translate(model_dir, tmp_path / "in", out) == 1
    printed = capsys.readouterr().out
    assert "translated 2 of 3 file(s)" in printed and "1 of 3 file(s) failed" in printed
    assert f"failed: {tmp_path / 'in' / 'x1.png'}: cannot write its translation: No space left on device" in printed
    assert sorted(p.name for p in out.iterdir()) == [TRANSLATIONS_RECORD, "x0.png", "x2.png"]


def test_a_failed_nifti_write_leaves_no_temporary(tmp_path, monkeypatch):
    import nibabel as nib

    def full_disk(img, filename):
        open(filename, "wb").write(b"half a volume")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_image(tmp_path / "v.nii.gz", np.zeros((4, 4, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_nifti_writes_temporary_is_removed_at_the_next_start(tmp_path):
    source = tmp_path / "in.nii.gz"
    write_image(source, np.zeros((4, 4, 3), np.int16))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".in.nii.gz.k1ll3d.tmp.nii.gz"
    stale.write_bytes(b"left by a kill")
    check_outputs([source], out)
    assert not stale.exists()


def test_free_space_is_estimated_from_the_output_format(tmp_path, monkeypatch):
    """An int16 NIfTI volume of zeros is a few hundred bytes gzipped; its translation is float32 voxels."""
    import shutil

    source = tmp_path / "in.nii.gz"
    write_image(source, np.zeros((64, 64, 40), np.int16))
    voxels_bytes = 64 * 64 * 40 * 4
    assert source.stat().st_size * 20 < voxels_bytes
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, voxels_bytes // 2))
    with pytest.raises(CdtsdeError, match=r"MiB free, the translations need about 1 MiB"):
        check_outputs([source], tmp_path / "out")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, voxels_bytes * 2))
    assert check_outputs([source], tmp_path / "out") == [source]


# --- outputs readable by others ------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_are_written_with_the_process_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        for name in ("a.png", "b.tif", "c.nii.gz", "d.npy"):
            write_image(tmp_path / name, np.zeros((4, 4), np.uint8))
        with atomic_path(tmp_path / "config.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(before)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert read_image(tmp_path / "a.png")[0].shape == (4, 4)


def test_evaluate_checks_its_output_before_the_work_and_never_replaces_results_silently(tmp_path, capsys,
                                                                                          monkeypatch):
    import cdtsde.metrics.folders as folders

    for folder in ("pred", "target"):
        (tmp_path / folder).mkdir()
        grey(tmp_path / folder / "a.png")
    command = ["evaluate", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target")]
    (tmp_path / "file").write_text("")
    evaluate_folders = folders.evaluate_folders
    monkeypatch.setattr(folders, "evaluate_folders", lambda *a, **k: pytest.fail("the work started"))
    assert main([*command, "--out", str(tmp_path / "file" / "scores.json")]) == 2
    assert f"--out {tmp_path / 'file' / 'scores.json'}: cannot write there" in capsys.readouterr().err
    monkeypatch.setattr(folders, "evaluate_folders", evaluate_folders)
    monkeypatch.chdir(tmp_path)
    assert main(command) == 0 and (tmp_path / "evaluation.json").is_file()
    first = (tmp_path / "evaluation.json").read_text()
    (tmp_path / "evaluation.json").write_text("earlier results")
    assert main(command) == 2
    assert "evaluation.json and evaluation.csv exist(s) already; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "evaluation.json").read_text() == "earlier results"
    assert main([*command, "--overwrite"]) == 0 and (tmp_path / "evaluation.json").read_text() == first


# --- inputs read faithfully ----------------------------------------------------------------------------------

def test_a_float_tiff_beyond_unit_range_is_refused_by_name_not_clipped(tmp_path):
    """0..1000 float32: clipping would saturate 99.9% of the pixels. Without a value_range the file is refused
    with its range; with one it is scaled by it."""
    import tifffile

    from cdtsde.data.readers import UnitReader

    values = np.linspace(0, 1000, 400, dtype=np.float32).reshape(20, 20)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, values)
    with pytest.raises(CdtsdeError, match=r"a.tif: float values 0..1000, outside \[0, 1\], would be clipped.*"
                                          r"value_range.*\[0, 1000\]"):
        UnitReader()(path)
    np.testing.assert_allclose(UnitReader(value_range=(0.0, 1000.0))(path), values / 1000, atol=1e-6)
    tifffile.imwrite(path, np.clip(values / 1000 + 0.005, 0, 1.005).astype(np.float32))  # a resampling's overshoot
    assert UnitReader()(path).max() == 1.0


def test_a_palette_png_gives_its_colours_as_an_image_and_its_indices_as_a_mask(tmp_path):
    from cdtsde.data.masks import read_mask
    from cdtsde.imagefiles import image_shape

    indices = np.zeros((6, 8), np.uint8)
    indices[2:, 3:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([200, 10, 30, 5, 180, 90] + [0, 0, 0] * 254)
    image.save(tmp_path / "p.png")
    colours, _ = read_image(tmp_path / "p.png")
    expected = np.array([[200, 10, 30], [5, 180, 90]], np.uint8)[indices]
    np.testing.assert_array_equal(colours, expected)
    assert image_shape(tmp_path / "p.png") == colours.shape == (6, 8, 3)
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), indices)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied_and_the_translation_is_upright(suffix, tmp_path):
    """Stored 12 x 20 with orientation 6 (shown turned 90 degrees clockwise): read 20 x 12 as a viewer shows it;
    the identity translation, a PNG without EXIF, is upright."""
    from cdtsde.imagefiles import image_shape
    from cdtsde.methods import DataInfo
    from cdtsde.methods.identity import Identity, IdentityConfig

    stored = np.zeros((12, 20), np.uint8)
    stored[:4, :] = 250  # a bright band along the stored top edge
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"turned{suffix}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    upright = np.rot90(stored, k=-1)  # turned clockwise: the stored top edge on the right
    array, _ = read_image(path)
    assert array.shape == image_shape(path) == (20, 12)
    assert np.abs(array.astype(int) - upright).max() <= (0 if suffix == ".png" else 40)
    method = Identity(IdentityConfig(), DataInfo(source_channels=1, target_channels=1, training_scale="native"))
    translate_file(method, path, tmp_path / "out")
    written = Image.open(tmp_path / "out" / "turned.png")
    assert written.getexif().get(0x0112) is None
    assert np.asarray(written)[:, -4:].mean() > 200 and np.asarray(written)[:, :-5].mean() < 50


def test_the_api_refuses_sources_with_nan_or_inf_for_every_method():
    from cdtsde.methods import REGISTRY, DataInfo, method_class
    from cdtsde.settings import from_plain

    sources = torch.zeros(3, 1, 16, 16)
    sources[1, 0, 2, 3] = float("nan")
    sources[2, 0, 0, 0] = float("inf")
    for name in REGISTRY:
        cls = method_class(name)
        data = DataInfo(source_channels=None if cls.data_kind == "target-only" else 1, target_channels=1,
                        image_size=16)
        method = cls(from_plain(cls.config_class, cls.tiny_config, "model"), data)
        with pytest.raises(CdtsdeError, match=r"2 NaN or infinite value\(s\), in batch item\(s\) \[1, 2\]"):
            method.translate(sources, generator=torch.Generator().manual_seed(0))

