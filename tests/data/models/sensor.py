"""A sensor model fed raw pressures (about 1e5 Pa): its input norm subtracts a shift of the
same size, past fp16's largest number (65504), so an fp16 engine of it is wrong unless the norm
is kept at fp32. (Real models meet this with raw physical units, or ranges squared in a norm.)"""

from __future__ import annotations

import torch
from torch import nn

PRESSURE = 101_325.0  # Pa: the shift the norm learned


class Standardize(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.full((width,), PRESSURE))
        self.scale = nn.Parameter(torch.full((width,), 1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.scale


class SensorMLP(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.norm = Standardize(width)
        self.up = nn.Linear(width, 64)
        self.head = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.up(self.norm(x))))


def sensor_mlp() -> SensorMLP:
    return SensorMLP()
