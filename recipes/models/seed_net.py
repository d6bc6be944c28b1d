"""The toy network of the Torch-TensorRT "Low CPU Memory Compilation" tutorial (~430 MB fp32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeedNet(nn.Module):
    def __init__(self, channels: int = 1024, hidden: int = 4096, spatial: int = 224) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc1 = nn.Linear(channels * (spatial // 4) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, (2, 2))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, (2, 2))
        return self.fc1(torch.flatten(x, 1))


def seed_net(channels: int = 1024, hidden: int = 4096, spatial: int = 224) -> SeedNet:
    return SeedNet(channels, hidden, spatial)
