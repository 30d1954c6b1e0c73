"""Per-item random draws (cdtsde.draws): a batch split in parts draws what the whole batch draws, so every
diffusion method's loss and gradients do not depend on how the global batch is shared among processes."""

import pytest
import torch

from cdtsde import draws
from cdtsde.draws import ItemGenerators, SliceDraws, item_generator, mixed_seed, slice_kernel
from cdtsde.methods import REGISTRY, DataInfo, method_class
from cdtsde.settings import from_plain
from cdtsde.training import TrainConfig


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
    config = from_plain(cls.config_class, {**cls.tiny_config, **options}, "model")
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


DIFFUSION_METHODS = [name for name in REGISTRY if method_class(name).is_diffusion_sampler()]


@pytest.mark.parametrize("name, options, phases", [
    *((name, {}, None) for name in DIFFUSION_METHODS),
    # the elbo objective's mixer phase normalises by its batch's weights (a ratio), so only its model phase
    ("cdtsde", {"field": {"variant": "content"}, "mixer_objective": "elbo"}, ["model"])])
def test_a_split_batch_gives_the_whole_batch_loss_and_gradients(name, options, phases):
    """Every diffusion method draws its times and noise item by item, in every phase it trains (None: the
    phases of its optimisers, in order)."""
    method = build(name, **options)
    phases = phases or list(method.optimizers(TrainConfig()))
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


@pytest.mark.parametrize("correlation", [0.1, 0.5, 0.9, 0.99])
def test_the_slice_kernel_has_unit_norm_and_the_asked_adjacent_correlation(correlation):
    kernel = slice_kernel(correlation)
    assert len(kernel) % 2 == 1 and kernel == kernel[::-1]
    assert sum(w * w for w in kernel) == pytest.approx(1, abs=1e-12)
    assert sum(a * b for a, b in zip(kernel, kernel[1:])) == pytest.approx(correlation, abs=1e-9)
    for bad in (0, 1, -0.5):
        with pytest.raises(ValueError, match="correlation"):
            slice_kernel(bad)


def test_correlated_slice_draws_are_standard_normal_and_correlate_as_the_kernel_says():
    """Each slice's draws are N(0, 1) (its first four moments on 40000 draws, within 5 standard errors), and
    slices d apart correlate by sum_j w_j w_(j+d): 0.9 for adjacent ones as asked, less further apart."""
    kernel = slice_kernel(0.9)
    n = 40000
    x = draws.normal((6, n), SliceDraws(11, 8, range(-1, 5), [0] * 6, kernel)).double()
    mean, var = x.mean(1), x.var(1)
    centred = (x - mean[:, None]) / var.sqrt()[:, None]
    assert mean.abs().max() < 5 / n ** 0.5 and (var - 1).abs().max() < 5 * (2 / n) ** 0.5
    assert (centred ** 3).mean(1).abs().max() < 5 * (6 / n) ** 0.5
    assert ((centred ** 4).mean(1) - 3).abs().max() < 5 * (24 / n) ** 0.5
    for distance in (1, 2, 4):
        expected = sum(a * b for a, b in zip(kernel, kernel[distance:]))
        measured = torch.stack([torch.corrcoef(x[[i, i + distance]])[0, 1] for i in range(6 - distance)])
        assert (measured - expected).abs().max() < 5 * (1 - expected ** 2) / n ** 0.5 + 1e-3
    assert 0.6 < sum(a * b for a, b in zip(kernel, kernel[2:])) < 0.9  # smooth: still high two slices apart


def test_slice_draws_do_not_depend_on_the_batching_and_shared_ones_are_equal():
    kernel = slice_kernel(0.7)

    def volume(slices, streams, kernel=kernel):
        g = SliceDraws(5, 8, slices, streams, kernel)
        return torch.cat([draws.normal((len(slices), 12), g), draws.normal((len(slices), 2), g)], 1)

    whole = volume(range(8), [0] * 8)
    assert torch.equal(torch.cat([volume(range(0, 3), [0] * 3), volume(range(3, 8), [0] * 5)]), whole)
    assert not torch.equal(volume(range(8), [1] * 8), whole)  # another sample: other draws
    shared = volume([0] * 4, [2] * 4, (1.0,))
    assert all(torch.equal(row, shared[0]) for row in shared)
    # one-tap slice draws are the per-item draws of ItemGenerators, also for Pix2Pix's per-item generators
    own = SliceDraws(5, 8, [3, 3], [0, 1])
    assert torch.equal(draws.normal((2, 7), own), draws.normal((2, 7), ItemGenerators(5, 3, 8, [0, 1])))
    assert torch.equal(torch.rand(4, generator=own.item(1)),
                       torch.rand(4, generator=ItemGenerators(5, 3, 8, [0, 1]).item(1)))
    with pytest.raises(ValueError, match="first dimension"):
        draws.normal((3, 2), own)
