"""Small models and datasets for the training and translation tests, and where the repository lies."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cdtsde.cli import main
from cdtsde.methods import DataInfo, method_class
from cdtsde.methods.cdtsde import CDTSDE, CDTSDEConfig
from cdtsde.methods.cdtsde.fields import FieldConfig
from cdtsde.networks.conditional_unet import TINY_UNET, UNetConfig

REPO = Path(__file__).resolve().parents[1]  # tests mirror the package in folders; paths start here
FIXTURES = REPO / "tests" / "fixtures"


def tiny_model_options(name):
    """A run configuration's `model:` section with the smallest networks of method `name`."""
    return dict(method_class(name).tiny_config)


def tiny_run_config(name, size=16, **train):
    """A run configuration of method `name` with its smallest networks, two steps on procedural MRI data
    (`cdtsde.run.build_run` puts them in the form of the method's data kind); `train` adds train: settings."""
    return {"method": name, "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": size, "seed": 0},
            "model": tiny_model_options(name),
            "train": {"max_steps": 2, "batch_size": 2, "sample_every": 0, "checkpoint_every": 2, "seed": 7, **train}}


def tiny_model(source_channels=1, target_channels=1, variant="dynamic", target_kind="image", size=16, seed=0):
    torch.manual_seed(seed)
    config = CDTSDEConfig(field=FieldConfig(variant), unet=UNetConfig(**TINY_UNET))
    return CDTSDE(config, DataInfo(source_channels=source_channels, target_channels=target_channels,
                                   target_kind=target_kind, image_size=size))


class InversionPairs(Dataset):
    """Smooth random sources and their contrast-inverted, squared targets: a mapping a tiny net learns fast."""

    source_channels = 1
    target_channels = 1

    def __init__(self, n=32, size=16, seed=0):
        generator = torch.Generator().manual_seed(seed)
        coarse = torch.rand(n, 1, 4, 4, generator=generator)
        self.sources = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 2 - 1
        self.targets = 1 - (self.sources + 1) ** 2 / 2

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        return {"source": self.sources[index], "target": self.targets[index], "name": f"pair{index:03d}"}


def kill_when(command: list[str], ready, env: dict, delay: float = 0.0, timeout: float = 120.0) -> None:
    """Start `command` in its own process group, wait until `ready()` holds (then `delay` seconds more), and
    SIGKILL the whole group (every rank of a DDP run); fails if the process ended before it was killed."""
    import os
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the process ended before it could be killed"


def ixi_volumes(root, subjects=3, shape=(16, 16, 6), seed=0, affine=None):
    """IXI-named T1/T2 volume pairs of `shape` under `root`, one per subject (`IXI00<i>-Guys-0001`): smooth
    random T1 whose slices all differ, T2 its contrast inversion; returns `root`."""
    import nibabel as nib

    generator = torch.Generator().manual_seed(seed)
    affine = np.eye(4) if affine is None else affine
    for subject in range(subjects):
        coarse = torch.rand(1, 1, 4, 4, 4, generator=generator)
        t1 = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")[0, 0].numpy()
        t1 = 100 + 800 * t1 + np.arange(shape[2]) * 10  # slices that differ along the slice axis
        for modality, volume in (("T1", t1), ("T2", 1100 - t1)):
            nib.save(nib.Nifti1Image(volume.astype(np.int16), affine), root / f"IXI00{subject}-Guys-0001-{modality}.nii.gz")
    return root


def grey(path, seed=0, size=16):
    """A random grey PNG of `size` px at `path`."""
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(path)
    return path


def translate(model_dir, input_path, output, *extra):
    """`cdtsde translate` of `input_path` into `output` at 2 steps; its exit code."""
    return main(["translate", "--checkpoint", str(model_dir), "--input", str(input_path), "--output", str(output),
                 "--steps", "2", *extra])


def brats_volumes(root: Path, subjects: int = 12, size: int = 32) -> None:
    """`subjects` BraTS-like subjects of random (size, size, 3) volumes in brats-mri's layout under `root`."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    for index in range(subjects):
        name = f"Brats18_S{index:02d}_1"
        (root / name).mkdir(parents=True)
        for modality in ("t1", "t2", "flair", "seg"):
            volume = rng.random((size, size, 3)).astype(np.float32) * 100
            nib.save(nib.Nifti1Image(volume, np.eye(4)), root / name / f"{name}_{modality}.nii.gz")
