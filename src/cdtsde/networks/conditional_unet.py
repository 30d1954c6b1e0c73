"""Conditional UNet for x0-prediction (DDPM/ADM style): the denoiser D_theta(x_t, x_src, t).

Residual blocks with a FiLM time embedding (scale-shift, as in ADM), GroupNorm + SiLU, optional
self-attention at low resolution, skip connections, and a zero-initialised output layer. The source
enters by channel concatenation. Any H and W: inputs are padded to a multiple of the total downsampling
factor and the output is cropped back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """The architecture; the channel counts come from the data and are given to `ConditionalUNet`."""

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = ()  # downsampling factors with self-attention, e.g. (4,)
    dropout: float = 0.0
    groups: int = 8
    attention_heads: int = 4

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        self.attention_resolutions = tuple(self.attention_resolutions)
        if min(self.base_channels, self.num_res_blocks, self.groups, self.attention_heads) < 1:
            raise ValueError("base_channels, num_res_blocks, groups and attention_heads must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"unet.dropout must lie in [0, 1), got {self.dropout}")
        if not self.channel_mults:
            raise ValueError("channel_mults must not be empty")

    @classmethod
    def small(cls, **overrides) -> UNetConfig:
        """About 1.6M parameters: the CPU benchmark size at 64 px."""
        options = dict(base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attention_resolutions=(8,))
        return cls(**{**options, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> UNetConfig:
        """About 0.1M parameters: for tests."""
        return cls(**{**TINY_UNET, **overrides})


# the smallest UNet (about 0.1M parameters) as `model.unet` options: what tests and the suite's quick scale train
TINY_UNET = {"base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) steps, as in DDPM."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, embed_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm_in = group_norm(channels_in, groups)
        self.conv_in = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * channels_out)  # scale and shift of the second norm (ADM)
        self.norm_out = group_norm(channels_out, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv_out.bias)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(F.silu(self.norm_in(x)))
        scale, shift = self.film(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.norm_out(h) * (1 + scale) + shift
        h = self.conv_out(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = math.gcd(heads, channels)
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(batch, channels, height, width))


class ConditionalUNet(nn.Module):
    """D(x_t, x_src, t): `in_channels` of x_t, `cond_channels` of the source concatenated to it, and
    `out_channels` (default `in_channels`) out. With `cond_channels = 0` the network is unconditional (a
    target-only prior): `x_src` is then None (or has no channels) and x_t enters alone."""

    def __init__(self, in_channels: int, cond_channels: int, config: UNetConfig | None = None,
                 out_channels: int | None = None):
        super().__init__()
        config = config or UNetConfig()
        out_channels = out_channels or in_channels
        if min(in_channels, out_channels) < 1 or cond_channels < 0:
            raise ValueError("channel counts must be >= 1 (cond_channels >= 0: 0 for an unconditional network)")
        self.config = config
        self.in_channels, self.cond_channels, self.out_channels = in_channels, cond_channels, out_channels
        base, groups, dropout = config.base_channels, config.groups, config.dropout
        embed_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.stem = nn.Conv2d(in_channels + cond_channels, base, 3, padding=1)
        self.down, skips, channels, factor = nn.ModuleList(), [base], base, 1
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                block = nn.ModuleList([ResBlock(channels, base * mult, embed_dim, groups, dropout)])
                channels = base * mult
                if factor in config.attention_resolutions:
                    block.append(Attention(channels, config.attention_heads, groups))
                self.down.append(block)
                skips.append(channels)
            if level < len(config.channel_mults) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(channels, channels, 3, stride=2, padding=1)]))
                skips.append(channels)
                factor *= 2
        self.middle = nn.ModuleList([ResBlock(channels, channels, embed_dim, groups, dropout),
                                     Attention(channels, config.attention_heads, groups),
                                     ResBlock(channels, channels, embed_dim, groups, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for index in range(config.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(channels + skips.pop(), base * mult, embed_dim, groups, dropout)])
                channels = base * mult
                if factor in config.attention_resolutions:
                    block.append(Attention(channels, config.attention_heads, groups))
                if level > 0 and index == config.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(channels, channels, 3, padding=1))
                    factor //= 2
                self.up.append(block)
        self.head = nn.Sequential(group_norm(channels, groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # the network starts by predicting x0 = 0
        nn.init.zeros_(self.head[-1].bias)
        self.multiple = 2 ** (len(config.channel_mults) - 1)
        # channels-last activations and weights: oneDNN convolutions on CPU run about 4x faster (and GPU
        # tensor cores prefer them too)
        self.to(memory_format=torch.channels_last)

    def _check(self, x_t: torch.Tensor, x_src: torch.Tensor | None) -> None:
        if x_src is None:
            if self.cond_channels:
                raise ValueError(f"x_src must have shape (B, {self.cond_channels}, H, W), got None")
            x_src = x_t[:, :0]
        for name, tensor, channels in (("x_t", x_t, self.in_channels), ("x_src", x_src, self.cond_channels)):
            if tensor.ndim != 4 or tensor.shape[1] != channels:
                raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(tensor.shape)}")
        if x_t.shape[0] != x_src.shape[0] or x_t.shape[2:] != x_src.shape[2:]:
            raise ValueError(f"x_t {tuple(x_t.shape)} and x_src {tuple(x_src.shape)} differ in batch or size")

    def forward(self, x_t: torch.Tensor, x_src: torch.Tensor | None, t: torch.Tensor | float) -> torch.Tensor:
        self._check(x_t, x_src)
        batch, _, height, width = x_t.shape
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        # in the network's working precision (bf16-true, 64-true), float32 otherwise
        embedding = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x_t.dtype))
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        h = torch.cat([x_t, x_src], dim=1) if self.cond_channels else x_t
        if pad_h or pad_w:
            # reflect needs the pad to be smaller than the side; replicate works for any size
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            h = F.pad(h, (0, pad_w, 0, pad_h), mode=mode)
        h = self.stem(h.contiguous(memory_format=torch.channels_last))
        skips = [h]
        for block in self.down:
            h = self._run(block, h, embedding)
            skips.append(h)
        h = self._run(self.middle, h, embedding)
        for block in self.up:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), embedding)
        return self.head(h)[:, :, :height, :width].contiguous()

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
        return h
