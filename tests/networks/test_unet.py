import json

import pytest
import torch

from cdtsde.networks.conditional_unet import ConditionalUNet, UNetConfig, count_parameters
from cdtsde.settings import from_plain, to_plain


def perturbed(channels: int, cond: int, config: UNetConfig, seed: int = 0) -> ConditionalUNet:
    """A UNet whose zero-initialised layers are given small random values, so every path is active."""
    torch.manual_seed(seed)
    net = ConditionalUNet(channels, cond, config)
    with torch.no_grad():
        for parameter in net.parameters():
            if parameter.abs().max() == 0:
                parameter.normal_(0, 0.05)
    return net.eval()


@pytest.mark.parametrize("channels, cond, size", [(1, 1, (16, 16)), (3, 2, (37, 50)), (5, 1, (9, 7)), (1, 3, (1, 3))])
def test_any_size_and_channel_count(channels, cond, size):
    net = perturbed(channels, cond, UNetConfig.tiny(attention_resolutions=(2,)))
    out = net(torch.randn(2, channels, *size), torch.randn(2, cond, *size), torch.tensor([3, 400]))
    assert out.shape == (2, channels, *size) and torch.isfinite(out).all()


def test_new_network_predicts_zero():
    net = ConditionalUNet(1, 1, UNetConfig.tiny())
    assert torch.all(net(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), 10) == 0)


def test_time_and_source_change_the_output_and_scalar_t_broadcasts():
    net = perturbed(1, 1, UNetConfig.tiny())
    x, src = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        same = net(x, src, torch.tensor([100, 100]))
        torch.testing.assert_close(net(x, src, 100), same)
        assert not torch.allclose(net(x, src, torch.tensor([100, 400])), same)
        assert not torch.allclose(net(x, torch.randn(2, 1, 16, 16), 100), same)


def test_items_do_not_see_each_other():
    net = perturbed(2, 1, UNetConfig.tiny(attention_resolutions=(1,)))
    x, src, t = torch.randn(3, 2, 12, 10), torch.randn(3, 1, 12, 10), torch.tensor([1, 200, 499])
    with torch.no_grad():
        whole = net(x, src, t)
        for i in range(3):
            torch.testing.assert_close(net(x[i : i + 1], src[i : i + 1], t[i : i + 1]), whole[i : i + 1], rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_parameter():
    net = perturbed(1, 1, UNetConfig.tiny(attention_resolutions=(2,))).train()
    net(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.tensor([5, 50])).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert missing == []


def test_config_round_trip_and_validation():
    config = UNetConfig.small()
    assert from_plain(UNetConfig, json.loads(json.dumps(to_plain(config))), "unet") == config
    with pytest.raises(ValueError, match="unknown unet option.*width"):
        from_plain(UNetConfig, {"width": 3}, "unet")
    with pytest.raises(ValueError, match=r"unet.channel_mults\[1\] must be an integer"):
        from_plain(UNetConfig, {"channel_mults": [1, "two"]}, "unet")
    net = ConditionalUNet(2, 1, UNetConfig.tiny())
    with pytest.raises(ValueError, match="x_t must have shape \\(B, 2, H, W\\)"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="x_src must have shape \\(B, 1, H, W\\)"):
        net(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 8, 8), 0)
    with pytest.raises(ValueError, match="differ in batch or size"):
        net(torch.zeros(2, 2, 8, 8), torch.zeros(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        net(torch.zeros(2, 2, 8, 8), torch.zeros(2, 1, 8, 8), torch.zeros(3))


def test_presets_have_the_documented_sizes():
    assert 1.4e6 <= count_parameters(ConditionalUNet(1, 1, UNetConfig.small())) <= 1.8e6
    assert count_parameters(ConditionalUNet(1, 1, UNetConfig.tiny())) <= 2.5e5
