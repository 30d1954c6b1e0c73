"""A small style-based generator after StyleGAN2 (Karras et al., CVPR 2020, "Analyzing and Improving the
Image Quality of StyleGAN"), reduced to what the GAN-inversion baseline needs (docs/zero-shot.md, section
"Reduced GAN inversion"): it stands in for a pretrained StyleGAN2-ADA, which can be neither downloaded nor
trained here.

* Mapping network: z ~ N(0, I) (normalised to unit mean square, StyleGAN's pixel norm) through
  `mapping_layers` fully connected layers with leaky ReLU (slope 0.2, gain sqrt 2) to w in W.
* Synthesis network: a learned constant 4 x 4 input; one modulated 3 x 3 convolution at 4 x 4, then per
  resolution 8, 16, ..., `size` a bilinear 2x upsampling and two modulated 3 x 3 convolutions; every
  resolution adds its own 1 x 1 "toRGB" output (modulated, not demodulated) to the upsampled sum of the
  coarser ones (StyleGAN2's skip architecture); tanh of the sum is the image, in [-1, 1].
* Modulation / demodulation (StyleGAN2 Eq. 1 and 3): each layer's affine map A turns its w into per-input-
  channel scales s; the weights become w'_ijk = s_i w_ijk and are divided by sqrt(sum_ik w'_ijk^2 + 1e-8),
  so that unit-variance independent inputs give unit-variance outputs (`ModulatedConv2d`).
* W+: one w per layer, `num_ws` = 2 log2(size) - 2 of them (StyleGAN2's count: each resolution's toRGB uses
  the w of the next resolution's first convolution). `forward(ws)` takes ws of shape (B, num_ws, w_dim).
* `w_avg`: a buffer, the exponential moving average of mapped w (`update_w_avg`, called by the training
  loss), the centre of the inversion's latent prior and of the truncation trick.

Left out from StyleGAN2: per-pixel noise inputs (the inversion is deterministic without them), equalised
learning rate for the mapping network's 0.01 multiplier, FIR-filtered resampling (bilinear here), style
mixing regularisation and path-length regularisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)  # StyleGAN's gain after leaky ReLU: keeps the activations' second moment
DEMOD_EPS = 1e-8


def check_size(size: int) -> int:
    """log2 of `size`, which must be a power of two >= 4."""
    if not isinstance(size, int) or size < 4 or size & (size - 1):
        raise ValueError(f"the style generator needs a power-of-two image size >= 4, got {size!r}")
    return size.bit_length() - 1


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: weights scaled per input channel by the style s = A(w) (bias 1
    at initialisation, so s starts at 1), then, with `demodulate`, each output channel's weights divided by
    their norm. Weights ~ N(0, 1) times the equalised-learning-rate gain 1 / sqrt(fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.normal_(self.affine.weight, 0.0, 1.0 / math.sqrt(w_dim))
        nn.init.ones_(self.affine.bias)
        self.demodulate = demodulate
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        style = self.affine(w)  # (B, in)
        weight = self.weight[None] * self.gain * style[:, None, :, None, None]  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + DEMOD_EPS)
        out_channels = weight.shape[1]
        # one grouped convolution: each image of the batch with its own weights
        out = F.conv2d(x.reshape(1, batch * in_channels, height, width),
                       weight.reshape(batch * out_channels, in_channels, *weight.shape[3:]),
                       padding=self.padding, groups=batch)
        return out.reshape(batch, out_channels, height, width)


class StyleLayer(nn.Module):
    """Modulated 3 x 3 convolution, bias, leaky ReLU with gain sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x, w) + self.bias[None, :, None, None], LEAKY_SLOPE) * ACT_GAIN


class ToImage(nn.Module):
    """The 1 x 1 modulated, not demodulated, output layer of one resolution (StyleGAN2's toRGB), linear."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"the mapping network needs at least one layer, got {layers}")
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # StyleGAN's normalisation of z
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LEAKY_SLOPE) * ACT_GAIN
        return x


class StyleGenerator(nn.Module):
    """G(ws): ws (B, num_ws, w_dim) -> images (B, out_channels, size, size) in [-1, 1] (module docstring).
    `channels` is the width of every synthesis layer (StyleGAN2 narrows it at high resolutions)."""

    def __init__(self, out_channels: int, size: int, z_dim: int = 64, w_dim: int = 64, mapping_layers: int = 4,
                 channels: int = 64, w_avg_beta: float = 0.995):
        super().__init__()
        levels = check_size(size)
        if not 0.0 <= w_avg_beta < 1.0:
            raise ValueError(f"w_avg_beta must lie in [0, 1), got {w_avg_beta}")
        self.size, self.z_dim, self.w_dim, self.w_avg_beta = size, z_dim, w_dim, w_avg_beta
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        # resolution 4: one convolution; every further resolution: two; each resolution one output layer
        self.first = StyleLayer(channels, channels, w_dim)
        self.blocks = nn.ModuleList(
            nn.ModuleList([StyleLayer(channels, channels, w_dim), StyleLayer(channels, channels, w_dim)])
            for _ in range(levels - 2))
        self.outputs = nn.ModuleList(ToImage(channels, out_channels, w_dim) for _ in range(levels - 1))
        self.num_ws = 2 * levels - 2
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def map(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """W+ codes (B, num_ws, w_dim) of latents z (B, z_dim): the mapped w repeated per layer, pulled
        towards `w_avg` by the truncation trick w_avg + truncation (w - w_avg)."""
        w = self.mapping(z)
        if truncation != 1.0:
            w = self.w_avg + truncation * (w - self.w_avg)
        return w[:, None].expand(-1, self.num_ws, -1)

    @torch.no_grad()
    def update_w_avg(self, ws: torch.Tensor) -> None:
        """One EMA step of `w_avg` towards the batch mean of mapped w (StyleGAN's w_avg_beta = 0.995)."""
        w = ws[:, 0] if ws.ndim == 3 else ws
        self.w_avg.lerp_(w.detach().mean(0).to(self.w_avg.dtype), 1.0 - self.w_avg_beta)

    def mean_ws(self, batch: int) -> torch.Tensor:
        """W+ at `w_avg` for every layer, (batch, num_ws, w_dim)."""
        return self.w_avg[None, None].expand(batch, self.num_ws, -1).clone()

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"the style generator takes W+ codes (B, {self.num_ws}, {self.w_dim}), got "
                             f"{tuple(ws.shape)}")
        x = self.first(self.const.expand(ws.shape[0], -1, -1, -1), ws[:, 0])
        image = self.outputs[0](x, ws[:, 1])
        for index, (conv0, conv1) in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = conv0(x, ws[:, 1 + 2 * index])
            x = conv1(x, ws[:, 2 + 2 * index])
            image = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
            image = image + self.outputs[index + 1](x, ws[:, 3 + 2 * index])
        return torch.tanh(image)
