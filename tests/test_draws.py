"""Per-item random draws (cdtsde.draws): a batch split in parts draws what the whole batch draws, so every
diffusion method's loss and gradients do not depend on how the global batch is shared among processes."""

import pytest
import torch
from helpers import TINY_UNET

from cdtsde import draws
from cdtsde.draws import ItemGenerators, item_generator, mixed_seed
from cdtsde.methods import DataInfo, method_class
from cdtsde.networks.conditional_unet import UNetConfig


def test_the_parts_of_a_batch_draw_the_rows_of_the_whole_batch():
    def whole_and_parts(draw):
        whole = draw(ItemGenerators(3, 17, 1, range(8)), 8)
        parts = [draw(ItemGenerators(3, 17, 1, range(first, first + 4)), 4) for first in (0, 4)]
        return whole, torch.cat(parts)

    for draw in (lambda g, n: draws.normal((n, 2, 5, 5), g), lambda g, n: draws.uniform((n, 3), g),
                 lambda g, n: draws.integers(0, 1000, (n,), g)):
        whole, parts = whole_and_parts(draw)
        assert torch.equal(whole, parts)
    # successive draws continue each item's stream; another step, seed or purpose draws otherwise
    g = ItemGenerators(3, 17, 1, range(2))
    first, second = draws.normal((2, 4), g), draws.normal((2, 4), g)
    assert not torch.equal(first, second)
    for other in (ItemGenerators(3, 18, 1, range(2)), ItemGenerators(4, 17, 1, range(2)),
                  ItemGenerators(3, 17, 2, range(2))):
        assert not torch.equal(draws.normal((2, 4), other), first)
    assert item_generator(g, 1) is g.generators[1]


def test_a_plain_generator_draws_as_torch_does_and_a_wrong_batch_is_refused():
    assert torch.equal(draws.normal((3, 4), torch.Generator().manual_seed(5)),
                       torch.randn(3, 4, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(draws.integers(2, 9, (6,), torch.Generator().manual_seed(5)),
                       torch.randint(2, 9, (6,), generator=torch.Generator().manual_seed(5)))
    one = torch.Generator()
    assert item_generator(one, 3) is one and item_generator(None, 0) is None
    with pytest.raises(ValueError, match=r"batch \(4 items\) as the first dimension, got shape \(3, 2\)"):
        draws.normal((3, 2), ItemGenerators(0, 0, 1, range(4)))


def test_mixed_seeds_do_not_collide_where_a_linear_combination_would():
    seeds = {mixed_seed(0, step, purpose, position) for step in range(100) for purpose in (1, 2)
             for position in range(64)}
    assert len(seeds) == 100 * 2 * 64 and all(0 <= s < 2**63 for s in seeds)


def build(name, **options):
    cls = method_class(name)
    torch.manual_seed(0)
    config = cls.config_class(unet=UNetConfig(**TINY_UNET), **options)
    paired = cls.data_kind == "paired"
    return cls(config, DataInfo(source_channels=1 if paired else None, target_channels=1, image_size=16))


def losses_and_gradients(method, batch, positions_list, phases):
    """Each part's loss per phase and the gradients of the mean over the parts (what DDP averages)."""
    method.zero_grad(set_to_none=True)
    losses = {}
    for positions in positions_list:
        part = {key: value[positions.start:positions.stop] for key, value in batch.items()}
        generator, shared = ItemGenerators(7, 11, 1, positions), {}
        for phase in phases:
            loss = method(part, phase=phase, generator=generator, shared=shared)["loss"]
            (loss / len(positions_list)).backward()
            losses.setdefault(phase, []).append(loss.detach())
    gradients = {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}
    return {phase: torch.stack(values).mean() for phase, values in losses.items()}, gradients


@pytest.mark.parametrize("name, options, phases", [
    ("cdtsde", {"variant": "dynamic"}, ["model"]), ("bbdm", {}, ["model"]), ("dbim", {}, ["model"]),
    ("abridge", {}, ["forward", "reverse"]), ("prior", {}, ["model"]),
    # the elbo objective's mixer phase normalises by its batch's weights (a ratio), so only its model phase
    ("cdtsde", {"variant": "content", "mixer_objective": "elbo"}, ["model"])])
def test_a_split_batch_gives_the_whole_batch_loss_and_gradients(name, options, phases):
    if name == "cdtsde":
        from cdtsde.methods.cdtsde.fields import FieldConfig

        options = {"field": FieldConfig(options.pop("variant")), **options}
    method = build(name, **options)
    generator = torch.Generator().manual_seed(1)
    batch = {"source": torch.rand(8, 1, 16, 16, generator=generator) * 2 - 1,
             "target": torch.rand(8, 1, 16, 16, generator=generator) * 2 - 1}
    whole_losses, whole_gradients = losses_and_gradients(method, batch, [range(0, 8)], phases)
    split_losses, split_gradients = losses_and_gradients(method, batch, [range(0, 4), range(4, 8)], phases)
    assert whole_gradients and whole_gradients.keys() == split_gradients.keys()
    for phase, loss in whole_losses.items():
        torch.testing.assert_close(split_losses[phase], loss, rtol=1e-5, atol=1e-7)
    for key, gradient in whole_gradients.items():
        torch.testing.assert_close(split_gradients[key], gradient, rtol=1e-4, atol=1e-6, msg=key)
