from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real data beside the repository; tests that need it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def model_dir(tmp_path) -> Path:
    """A tiny CDTSDE checkpoint with small random weights, for translation tests."""
    from helpers import tiny_model

    from cdtsde.training import save_pretrained

    model = tiny_model(size=16)
    for parameter in model.net.parameters():
        parameter.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    return save_pretrained(model, tmp_path / "model")


def randomise(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Give every parameter random values, so that learned fields are really spatially varying."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module
