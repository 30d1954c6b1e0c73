"""The exponential moving average of a method's weights, which the run samples with and saves as its model."""

from __future__ import annotations

import copy

import torch


class EMA:
    """Exponential moving average of the weights (used for sampling) in float32 whatever the training
    precision, with the usual warm-up decay = min(decay, (1 + step) / (10 + step)); buffers are copied."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        if ema_params:
            current = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params)]
            torch._foreach_lerp_(ema_params, current, 1 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)
