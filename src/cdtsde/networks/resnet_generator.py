"""The ResNet generator of CycleGAN (Zhu et al., ICCV 2017, "Unpaired Image-to-Image Translation using
Cycle-Consistent Adversarial Networks", Section 4 and Appendix 7.2), after Johnson et al.'s (ECCV 2016)
image transformation network.

With `base_filters = 64` it is the paper's c7s1-64, d128, d256, R256 x n, u128, u64, c7s1-C_out:

* c7s1-k: 7x7 convolution, stride 1, k filters, with reflection padding (3 px) - InstanceNorm - ReLU;
* dk: 3x3 convolution, stride 2 (padding 1) - InstanceNorm - ReLU, halving the image;
* Rk: a residual block x + [reflect-pad 1, 3x3 conv, InstanceNorm, ReLU, reflect-pad 1, 3x3 conv,
  InstanceNorm](x), both convolutions with k filters;
* uk: 3x3 fractionally strided convolution, stride 1/2 (a transposed convolution, padding 1, output
  padding 1) - InstanceNorm - ReLU, doubling the image;
* the last c7s1 layer has no norm and ends in tanh (images in [-1, 1]).

"We use 6 blocks for 128 x 128 training images and 9 blocks for 256 x 256 and higher-resolution training
images" (Appendix 7.2): `default_blocks(size)` gives 9 for sizes >= 256 (and for an unknown size, as the
authors' code defaults to resnet_9blocks), 6 below.

Choices taken as in the rest of this package rather than the authors' code: the norm is InstanceNorm with a
learned scale and shift (`cdtsde.networks.patchgan.norm_layer`, the PatchGAN's; the authors' code uses it
without), and the convolutions followed by a norm have no bias, which the norm's mean subtraction would
cancel. Neither changes what the network can represent.

Sizes: the two stride-2 layers need image sides that are multiples of 4, and the residual blocks' reflection
padding and instance norms need at least 2 x 2 pixels at a quarter of the size, so sides of at least 8 px.
Other sizes are refused with a ValueError naming them, as the U-Net generator refuses them, rather than
padded and cropped (`cdtsde translate` resizes inputs to the training size anyway).
"""

from __future__ import annotations

import torch
from torch import nn

from .patchgan import norm_layer

PAPER_FILTERS = 64
SMALLEST_SIDE = 8


def default_blocks(image_size: int | None) -> int:
    """The paper's residual block count: 9 at 256 px and above (or an unknown size), 6 below."""
    return 9 if image_size is None or image_size >= 256 else 6


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), norm_layer(norm, channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), norm_layer(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """G(x): (B, in_channels, H, W) -> (B, out_channels, H, W) in [-1, 1], H and W multiples of 4 and at
    least 8. `blocks` residual blocks at a quarter of the resolution, `base_filters` (64 in the paper) in
    the outer layers and 4x that in the blocks."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int = 9, base_filters: int = PAPER_FILTERS,
                 norm: str = "instance"):
        super().__init__()
        if blocks < 0:
            raise ValueError(f"the ResNet generator needs blocks >= 0, got {blocks}")
        if base_filters < 1:
            raise ValueError(f"base_filters must be >= 1, got {base_filters}")
        if min(in_channels, out_channels) < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        self.blocks = blocks
        f = base_filters
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, f, 7, bias=False),
                                   norm_layer(norm, f), nn.ReLU()]  # c7s1-64
        for width in (f, 2 * f):  # d128, d256
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                       norm_layer(norm, 2 * width), nn.ReLU()]
        layers += [ResidualBlock(4 * f, norm) for _ in range(blocks)]  # R256 x blocks
        for width in (4 * f, 2 * f):  # u128, u64
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=False),
                       norm_layer(norm, width // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(f, out_channels, 7), nn.Tanh()]  # c7s1-C_out
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def check_size(height: int, width: int) -> None:
        if height % 4 or width % 4 or min(height, width) < SMALLEST_SIDE:
            raise ValueError(f"the ResNet generator needs image sides that are multiples of 4 and at least "
                             f"{SMALLEST_SIDE} px (two stride-2 layers), got {height}x{width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(*x.shape[-2:])
        return self.layers(x)
