"""A model whose activations exceed fp16's range (65504) but whose output does not: in fp32 the
normalisation cancels the scale; in fp16 the scaled values are inf and the output NaN."""

from __future__ import annotations

import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x) * 1e5
        centred = y - y.mean(-1, keepdim=True)
        return centred / (centred.abs().amax(-1, keepdim=True) + 1.0)


def scaled() -> nn.Module:
    return Scaled()
