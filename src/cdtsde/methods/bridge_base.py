"""What the bridge methods (BBDM, DBIM, ...) share: a paired method on a Gaussian path from the source to
the target (cdtsde.diffusion.gaussian_path), the conditional UNet of CDTSDE (the source concatenated to
x_t, the same network for every diffusion method), training on draws of the path's marginal and
translation by the one posterior-step sampler (docs/bridges.md).

Channel policy: the bridge runs in the target's channel space. The source is mapped there by
`Method.in_target_space` (the adapter CDTSDE's anchor uses: equal channel counts as they are, otherwise the
source's channel mean repeated), mask targets are bridged in their one-hot [-1, 1] space and decoded by
argmax; the network itself still sees the source as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from dataclasses import field as option

import torch

from .. import draws
from ..diffusion.gaussian_path import GaussianPath, sample_path
from ..networks.conditional_unet import TINY_UNET, ConditionalUNet
from ..settings import check_count, check_unit_interval
from .base import DataInfo, Method, TranslationOutput

# the reference codes' `loss_type` (BBDM's and ABridge's): L1 learns each value's conditional median, L2 its mean
REGRESSION_LOSSES = ("l1", "l2")


def check_loss(loss: str) -> None:
    if loss not in REGRESSION_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(REGRESSION_LOSSES)}, got {loss!r}")


def regression_loss(prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    error = prediction - target
    return error.abs().mean() if loss == "l1" else error.square().mean()


@dataclass(frozen=True)
class PathDraw:
    """One training draw: x_t on the path between the source end x1 and the target x0 at times t, made
    with `noise`."""

    x_t: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor


@dataclass
class BridgeSampling:
    """Sampling options of a bridge method; each method declares its own reference defaults."""

    steps: int = option(default=10, metadata={"help": "network evaluations (NFE)"})
    eta: float = option(default=0.0, metadata={"help": "bridges: 0 deterministic (implicit) .. 1 the Markov posterior"})
    clip_denoised: bool = option(default=True, metadata={"help": "clip each x0 prediction to [-1, 1]"})

    def __post_init__(self):
        check_count("steps", self.steps)
        check_unit_interval("eta", self.eta)


def bridge_sampling(name: str, **defaults) -> type[BridgeSampling]:
    """A BridgeSampling dataclass with one method's reference defaults (e.g. steps=200, eta=1.0)."""
    fields = [(f.name, f.type, option(default=defaults[f.name], metadata=f.metadata))
              for f in dataclasses.fields(BridgeSampling) if f.name in defaults]
    return dataclasses.make_dataclass(name, fields, bases=(BridgeSampling,), namespace={"__module__": __name__})


class BridgeMethod(Method):
    data_kind = "paired"
    sampling_class = BridgeSampling
    tiny_config = {"unet": TINY_UNET}
    tiny_sampling = ({"steps": 1, "eta": 0.0}, {"steps": 3, "eta": 0.0}, {"steps": 2, "eta": 1.0}, {"steps": 3, "eta": 0.5})
    path: GaussianPath  # path_class(config.bridge)

    def __init__(self, config, data: DataInfo):
        super().__init__(config, data)
        if data.source_channels is None:
            raise ValueError(f"{self.name} needs paired data with sources")
        self.path = self.path_class(config.bridge)
        self.net = ConditionalUNet(data.target_channels, data.source_channels, config.unet)

    # --- what each bridge defines: `path_class` (built from the config's `bridge` section) and ---------
    def draw_times(self, size: int, generator: draws.Draws, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def estimate(self, x_t: torch.Tensor, sources: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0_hat from the network's output (the method's parameterisation)."""
        raise NotImplementedError

    def loss(self, draw: PathDraw, x0: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- what a bridge may change ------------------------------------------------------------------------
    def source_end(self, y: torch.Tensor, generator: draws.Draws) -> torch.Tensor:
        """The path's source end x1 for the source `y` in the target's space: `y` itself (I2SB may add noise)."""
        return y

    def sampling_path(self, sampling: BridgeSampling):
        """(the coefficients at a time given x1, eta) the sampler steps with: the path's marginal and the
        sampling's eta."""
        return self.path.point, sampling.eta

    # --- shared ---------------------------------------------------------------------------------------
    def draw_path(self, x0: torch.Tensor, sources: torch.Tensor, generator: draws.Draws) -> PathDraw:
        """One training draw of the path's marginal: times, noise, then the source end (in that order)."""
        self.check_source(sources)
        t = self.draw_times(x0.shape[0], generator, x0.device)
        noise = draws.normal(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x1 = self.source_end(self.in_target_space(sources), generator)
        return PathDraw(x_t=self.path.point(t, x0).draw(x1, x0, noise), x1=x1, t=t, noise=noise)

    def forward(self, batch: dict, phase: str = "model", generator: draws.Draws = None,
                shared: dict | None = None) -> dict:
        return {"loss": self.loss(self.draw_path(batch["target"], batch["source"], generator), batch["target"],
                                  batch["source"])}

    def check_sampling(self, sampling: BridgeSampling) -> None:
        self.path.times(sampling.steps)  # BBDM's and ABridge's grids hold at most T steps

    def generate(self, sources: torch.Tensor, sampling: BridgeSampling,
                 generator: torch.Generator | None) -> TranslationOutput:
        # the first iterate is the source end itself (DBIM's bridge is pinned there; BBDM's reference starts
        # there too, though its marginal at T - 1 keeps 0.1% of x0 and a noise std of 0.045)
        x1 = self.source_end(self.in_target_space(sources), generator)
        coefficients, eta = self.sampling_path(sampling)
        result = sample_path(lambda x, _y, t: self.estimate(x, sources, t), x1, lambda time: coefficients(time, x1),
                             self.path.times(sampling.steps), eta, x1.clone(), generator=generator,
                             clip_denoised=sampling.clip_denoised)
        return TranslationOutput(result.x0)
