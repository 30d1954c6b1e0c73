import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cdtsde.atomic import atomic_path
from cdtsde.errors import ImageReadError
from cdtsde.imagefiles import read_image, stem, write_image
from cdtsde.intensity import from_unit, to_unit
from cdtsde.training import load_pretrained
from cdtsde.training.checkpoint import file_sha256

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "name, array",
    [
        ("grey.png", RNG.integers(0, 256, (7, 9), dtype=np.uint8)),
        ("rgb.png", RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)),
        ("deep.png", RNG.integers(0, 65536, (7, 9), dtype=np.uint16)),
        ("deep.tif", RNG.integers(0, 65536, (7, 9), dtype=np.uint16)),
        ("bands.tif", RNG.random((12, 10, 2)).astype(np.float32)),
        ("array.npy", RNG.random((5, 6, 4)).astype(np.float32)),
        ("slice.nii.gz", RNG.random((8, 6)).astype(np.float32)),
    ],
)
def test_round_trip_keeps_values_dtype_and_shape(tmp_path, name, array):
    write_image(tmp_path / name, array)
    back, meta = read_image(tmp_path / name)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert meta.path == tmp_path / name


def test_nifti_keeps_its_affine(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5), np.int16), affine), tmp_path / "v.nii.gz")
    array, meta = read_image(tmp_path / "v.nii.gz")
    write_image(tmp_path / "w.nii.gz", array.astype(np.float32) / 2, meta)
    np.testing.assert_allclose(nib.load(tmp_path / "w.nii.gz").affine, affine)


def test_palette_png_keeps_class_indices_when_asked(tmp_path):
    from PIL import Image

    indices = RNG.integers(0, 5, (6, 6), dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0] + [0] * 753)
    image.save(tmp_path / "mask.png")
    np.testing.assert_array_equal(read_image(tmp_path / "mask.png", palette="indices")[0], indices)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read as png"),
        ("cut.nii.gz", b"\x1f\x8b\x08garbage", "cannot read as nifti"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_raise_errors_naming_them(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(tmp_path / name)
    assert name in str(info.value)


def test_missing_file_and_non_finite_values(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "gone.png")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [np.inf, 0.0]], np.float32))
    with pytest.raises(ImageReadError, match="nan.npy: 2 NaN or infinite values"):
        read_image(tmp_path / "nan.npy")


def test_unit_range_conversions():
    assert to_unit(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    assert to_unit(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    values = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(from_unit(to_unit(values), np.uint16), values)
    assert from_unit(np.array([-0.5, 0.5, 2.0]), np.uint8).tolist() == [0, 128, 255]


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_stem_handles_double_suffixes():
    assert stem("a/IXI002-Guys-0828-T1.nii.gz") == "IXI002-Guys-0828-T1"
    assert stem("b/tile_001.tif") == "tile_001"


SAVE_TWICE = """
import sys
import torch
from helpers import tiny_model
from cdtsde.training.checkpoint import safetensors_bytes, save_pretrained

save_pretrained(tiny_model(), sys.argv[1])
metadata = {f"key{i}": f"value{i}" for i in range(10)}  # ten keys: a hash map's order repeats by chance 1 in 10!
open(sys.argv[2], "wb").write(safetensors_bytes({"b": torch.arange(3.0), "a": torch.ones(2, 2)}, metadata))
"""


@pytest.mark.slow
def test_identical_weights_give_identical_files_in_any_process(tmp_path):
    """Two processes (different hash seeds) saving the same weights and metadata write the same bytes, so
    config.json records the same SHA-256; the file is a valid safetensors file with every tensor and the
    metadata, and a file written by safetensors itself (as every earlier checkpoint) still loads."""
    for seed in (1, 2):
        env = {**os.environ, "PYTHONHASHSEED": str(seed), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", SAVE_TWICE, str(tmp_path / f"model{seed}"), str(tmp_path / f"raw{seed}")],
                       check=True, env=env)
    metadata = {f"key{i}": f"value{i}" for i in range(10)}
    assert (tmp_path / "raw1").read_bytes() == (tmp_path / "raw2").read_bytes()
    assert ((tmp_path / "model1/model.safetensors").read_bytes() == (tmp_path / "model2/model.safetensors").read_bytes())
    assert (tmp_path / "model1/config.json").read_text() == (tmp_path / "model2/config.json").read_text()
    raw = (tmp_path / "raw1").read_bytes()
    length = int.from_bytes(raw[:8], "little")
    assert length % 8 == 0 and list(json.loads(raw[8:8 + length])["__metadata__"]) == sorted(metadata)
    with safe_open(str(tmp_path / "raw1"), "pt") as handle:
        assert handle.metadata() == metadata
    loaded = load_file(str(tmp_path / "raw1"))
    assert torch.equal(loaded["b"], torch.arange(3.0)) and torch.equal(loaded["a"], torch.ones(2, 2))

    model = tiny_model()
    reference = load_pretrained(tmp_path / "model1")
    weights = tmp_path / "model1" / "model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", "library": "cdtsde", "method": "cdtsde"})
    record = json.loads((tmp_path / "model1/config.json").read_text())
    (tmp_path / "model1/config.json").write_text(json.dumps({**record, "weights_sha256": file_sha256(weights)}))
    again = load_pretrained(tmp_path / "model1")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), reference.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
