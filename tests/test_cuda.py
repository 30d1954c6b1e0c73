"""Every registered method on a CUDA device: trained for two steps through the loop and translated there
with each of its tiny sampling settings, since device mix-ups (a CPU table indexed by a CUDA tensor, a
generator on the wrong device) show only on a GPU. Skipped where no CUDA device is present;
`scripts/device-check.sh` runs it on a lent GPU."""

import pytest
import torch
from helpers import tiny_run_config

from cdtsde.methods import REGISTRY
from cdtsde.run import build_run
from cdtsde.training import load_pretrained, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", REGISTRY)
def test_trains_and_translates_on_cuda(name, tmp_path):
    config = tiny_run_config(name, size=32, accelerator="gpu", devices=1)
    method, train_set, _, train_config = build_run(config)
    result = train(method, train_set, train_config, tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(result["losses"])))
    gpu, cpu = load_pretrained(tmp_path, device=torch.device("cuda")), load_pretrained(tmp_path)
    sources = torch.rand(2, 1, 32, 32) * 2 - 1
    for overrides in gpu.tiny_sampling:
        out = gpu.translate(sources.cuda(), generator=torch.Generator("cuda").manual_seed(0), **overrides).images
        assert out.device.type == "cuda" and out.shape[0] == 2 and torch.isfinite(out).all()
        # one network evaluation and no draws (the CPU's translation does not depend on the seed): the GPU
        # must give the CPU's translation, up to TF32 convolutions
        on_cpu = [cpu.translate(sources, generator=torch.Generator().manual_seed(seed), **overrides).images
                  for seed in (0, 1)]
        if cpu.network_evaluations(cpu.sampling_options(**overrides)) == 1 and torch.equal(*on_cpu):
            torch.testing.assert_close(out.cpu(), on_cpu[0], rtol=0, atol=1e-2)
