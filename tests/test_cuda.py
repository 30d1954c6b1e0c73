"""Every method on a CUDA device: trained for two steps through the loop and translated there, since device
mix-ups (a CPU table indexed by a CUDA tensor, a generator on the wrong device) show only on a GPU. Skipped
where no CUDA device is present; `scripts/device-check.sh` runs it on a lent GPU."""

import pytest
import torch
from helpers import tiny_model_options

from cdtsde.run import build_run
from cdtsde.training import load_pretrained, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

METHODS = ["cdtsde", "bbdm", "dbim", "abridge", "pix2pix", "prior", "sdedit", "lmi", "cyclegan", "inversion",
           "identity"]
# one network pass, no draws: the GPU must give the CPU's translation (up to TF32 convolutions)
DETERMINISTIC = {"pix2pix", "cyclegan", "identity"}


@pytest.mark.parametrize("name", METHODS)
def test_trains_and_translates_on_cuda(name, tmp_path):
    config = {"method": name, "data": {"kind": "procedural", "task": "mri-phantom", "n": 8, "size": 32, "seed": 0},
              "model": tiny_model_options(name),
              "train": {"max_steps": 2, "batch_size": 2, "sample_every": 0, "checkpoint_every": 2, "seed": 7,
                        "accelerator": "gpu", "devices": 1}}
    method, train_set, _, train_config = build_run(config)
    result = train(method, train_set, train_config, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    gpu = load_pretrained(tmp_path, device=torch.device("cuda"))
    sources = torch.rand(2, 1, 32, 32) * 2 - 1
    options = {"steps": 3} if hasattr(gpu.sampling, "steps") else {}
    out = gpu.translate(sources.cuda(), generator=torch.Generator("cuda").manual_seed(0), **options).images
    assert out.device.type == "cuda" and out.shape[0] == 2 and torch.isfinite(out).all()
    if name in DETERMINISTIC:
        cpu = load_pretrained(tmp_path).translate(sources, generator=torch.Generator().manual_seed(0), **options)
        torch.testing.assert_close(out.cpu(), cpu.images, rtol=0, atol=1e-2)
