"""The U-Net generator of pix2pix (Isola et al., CVPR 2017, Section 3.2.1 and Appendix 6.1.1).

An encoder of `depth` 4x4 stride-2 convolutions, each halving the image, down to a bottleneck, and a
mirrored decoder of 4x4 stride-2 transposed convolutions, with skip connections that concatenate the
output of encoder layer i to the input of the decoder layer that mirrors it ("skip connections between
each layer i and layer n - i", Section 3.2.1). With 64 base filters and depth 8 (256 px) it is the paper's
encoder C64-C128-C256-C512-C512-C512-C512-C512 and decoder CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128
(the decoder's channel counts include the concatenated skips), Ck = Conv-Norm-ReLU, CDk = Conv-Norm-
Dropout(0.5)-ReLU; encoder ReLUs are leaky (slope 0.2), decoder ones are not, and a final transposed
convolution to the output channels is followed by tanh.

Choices the paper leaves open, taken as in the authors' code: no norm on the first encoder layer (the
paper) nor on the bottleneck (a 1 x 1 map with batch size 1 cannot be normalised: InstanceNorm is
undefined and BatchNorm has one value per channel); filters double up to 8x base and stay there. The
paper puts dropout in the first three decoder layers (counted from the bottleneck; the authors' code starts
one block further out), as here; `dropout_blocks` sets how many (never the output layer), `dropout` its rate.

Sizes: the image sides must be multiples of 2**depth (every power of two >= 2**depth is one); with depth =
log2(size) the bottleneck is 1 x 1, as the paper's. Another size is refused with a ValueError naming it
rather than padded and cropped: padding would silently change what the network sees at the borders, and
the translate command already resizes inputs to the training size, so only a deliberate native-size run
meets the error.
"""

from __future__ import annotations

import torch
from torch import nn

from .patchgan import LEAKY_SLOPE, norm_layer


class UNetGenerator(nn.Module):
    """G(x): (B, in_channels, H, W) -> (B, out_channels, H, W) in [-1, 1] (tanh), H and W multiples of
    2**depth. `norm` is "batch" (the paper) or "instance"; the convolutions followed by a norm have no bias,
    which the norm's mean subtraction would cancel."""

    def __init__(self, in_channels: int, out_channels: int, depth: int, base_filters: int = 64,
                 norm: str = "batch", dropout: float = 0.5, dropout_blocks: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"the U-Net generator needs depth >= 1, got {depth}")
        if base_filters < 1:
            raise ValueError(f"base_filters must be >= 1, got {base_filters}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.depth = depth
        filters = [base_filters * min(2**index, 8) for index in range(depth)]

        self.encoder = nn.ModuleList()
        previous = in_channels
        for index, out in enumerate(filters):
            normed = 0 < index < depth - 1  # not the first layer (Appendix 6.1.1) nor the bottleneck
            block = [nn.Conv2d(previous, out, 4, stride=2, padding=1, bias=not normed)]
            if normed:
                block.append(norm_layer(norm, out))
            block.append(nn.LeakyReLU(LEAKY_SLOPE))
            self.encoder.append(nn.Sequential(*block))
            previous = out

        # decoder block j (0 = next to the bottleneck) mirrors encoder block depth - 1 - j: it outputs that
        # block's input channels (the last: the target's), and every block after the first also takes that
        # block's output as a skip
        self.decoder = nn.ModuleList()
        for j in range(depth):
            mirrored = depth - 1 - j
            width = filters[mirrored] if j == 0 else 2 * filters[mirrored]
            if j == depth - 1:
                output = nn.ConvTranspose2d(width, out_channels, 4, stride=2, padding=1)
                self.decoder.append(nn.Sequential(output, nn.Tanh()))
                continue
            out = filters[mirrored - 1]
            block = [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1, bias=False),
                     norm_layer(norm, out)]
            if j < dropout_blocks and dropout > 0:
                block.append(nn.Dropout(dropout))
            block.append(nn.ReLU())
            self.decoder.append(nn.Sequential(*block))

    def check_size(self, height: int, width: int) -> None:
        multiple = 2**self.depth
        if height % multiple or width % multiple:
            raise ValueError(f"the U-Net generator of depth {self.depth} needs image sides that are "
                             f"multiples of {multiple} (e.g. {multiple} or {2 * multiple} px), "
                             f"got {height}x{width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(*x.shape[-2:])
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck's output is the first decoder block's input, not a skip
        for j, block in enumerate(self.decoder):
            if j:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x)
        return x
