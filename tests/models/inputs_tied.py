"""A model with a tied weight (embedding and head share one Parameter) and buffers of several
dtypes: what the state job must write once per tensor, in any dtype a safetensors file holds."""

from __future__ import annotations

import torch
from torch import nn


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.arange(6, dtype=torch.bfloat16))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("view", self.embed.weight.detach()[2:4].t())  # not contiguous

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids) * self.scale.float())


def tied() -> nn.Module:
    return Tied()
