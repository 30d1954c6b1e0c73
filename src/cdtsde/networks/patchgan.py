"""The PatchGAN discriminator of pix2pix (Isola et al., CVPR 2017, "Image-to-Image Translation with
Conditional Adversarial Networks", Section 3.2.2 and Appendix 6.1.2).

It classifies every N x N patch of its input as real or fake instead of the whole image: a fully
convolutional stack whose output map holds one logit per patch, N being the receptive field of one output
pixel. With the default `n_layers = 3` the layers are C64(stride 2, no norm) - C128(s2) - C256(s2) -
C512(s1) - conv to 1 channel (s1), all 4x4 with padding 1, and N = 70 (the paper's choice, Section 4.4).
The two stride-1 layers follow the authors' code; the paper's appendix lists every Ck as stride 2, which
would not give 70.

Smallest input: the output map must keep at least one pixel. The stride-2 layers halve the size (rounding
down) and each stride-1 layer takes one pixel off, so `n_layers` needs 3 * 2**n_layers px: 24 px for the
default (32 px gives a 2 x 2 map), 12 px for n_layers = 2. `smallest_input` computes it from the layers.

The output is the raw logit map: the sigmoid of the paper's D is left to the loss (BCE with logits is the
numerically stable form), and LSGAN uses the raw values.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

NORMS = ("batch", "instance")
LEAKY_SLOPE = 0.2  # "All ReLUs are leaky, with slope 0.2" (Appendix 6.1.2)


def norm_layer(norm: str, channels: int) -> nn.Module:
    """BatchNorm (the paper's) or InstanceNorm, both with learned scale and shift (instance norm without
    running statistics: it always normalises each image by its own)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")


def _convolutions(layers: Iterable[nn.Module]) -> list[nn.Conv2d]:
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    if any(conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1] for conv in convs):
        raise ValueError("receptive field and sizes are computed for square kernels and strides only")
    return convs


def receptive_field(layers: Iterable[nn.Module]) -> int:
    """The side (px) of the input window that one output pixel of the convolutions in `layers` sees.

    Going from the output back to the input, a window of r pixels at a layer's output covers
    (r - 1) * stride + (kernel - 1) * dilation + 1 pixels at its input; padding and the element-wise layers
    (norms, activations) do not change it."""
    field = 1
    for conv in reversed(_convolutions(layers)):
        field = (field - 1) * conv.stride[0] + (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
    return field


def output_size(layers: Iterable[nn.Module], size: int) -> int:
    """The side of the output map for an input side of `size` px (<= 0: the input is too small)."""
    for conv in _convolutions(layers):
        span = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
        size = (size + 2 * conv.padding[0] - span) // conv.stride[0] + 1
        if size <= 0:
            return size
    return size


def smallest_input(layers: Iterable[nn.Module]) -> int:
    """The smallest input side (px) for which the output map keeps at least one pixel."""
    layers = list(layers)
    size = 1
    while output_size(layers, size) < 1:
        size += 1
    return size


class PatchGANDiscriminator(nn.Module):
    """D(x, y): `in_channels` = source + target channels (the conditional GAN sees the pair, Eq. 1), one
    logit per patch out, shape (B, 1, H', W').

    `base_filters` (64 in the paper) doubles at each further layer up to 8x; `n_layers` is the number of
    stride-2 layers (3: 70x70 patches; 1: 16x16; 4: 142x142); `norm` is "batch" (the paper) or "instance".
    The first layer has no norm (Appendix 6.1.2); the convolutions followed by a norm have no bias, which
    the norm's mean subtraction would cancel."""

    def __init__(self, in_channels: int, base_filters: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"the PatchGAN needs n_layers >= 1, got {n_layers}")
        if base_filters < 1:
            raise ValueError(f"base_filters must be >= 1, got {base_filters}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_filters, 4, stride=2, padding=1),
                                   nn.LeakyReLU(LEAKY_SLOPE)]
        filters = base_filters
        for index in range(1, n_layers + 1):
            out = base_filters * min(2**index, 8)
            stride = 2 if index < n_layers else 1
            layers += [nn.Conv2d(filters, out, 4, stride=stride, padding=1, bias=False),
                       norm_layer(norm, out), nn.LeakyReLU(LEAKY_SLOPE)]
            filters = out
        layers.append(nn.Conv2d(filters, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        self.receptive_field = receptive_field(self.layers)
        self.smallest_input = smallest_input(self.layers)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if min(pair.shape[-2:]) < self.smallest_input:
            patch = f"{self.receptive_field}x{self.receptive_field}"
            raise ValueError(f"the PatchGAN with {patch} patches needs inputs of at least "
                             f"{self.smallest_input} px, got {tuple(pair.shape[-2:])}")
        return self.layers(pair)
