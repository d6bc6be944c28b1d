"""A small image classifier (about 0.9 MB of fp32 weights): quantized builds (tests/test_quantize.py)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 4, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def small_cnn(classes: int = 4, width: int = 64) -> SmallCNN:
    return SmallCNN(classes, width)


class NormCNN(nn.Module):
    """SmallCNN's layers as ResNet writes them: convolutions without a bias, each followed by a
    BatchNorm (tests/test_quantize.py: int8 quantizes them)."""

    def __init__(self, classes: int = 4, width: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            for cin, cout, stride in [
                (3, width, 1),
                (width, 2 * width, 2),
                (2 * width, 2 * width, 2),
            ]
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in (width, 2 * width, 2 * width))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        return self.head(x.mean(dim=(2, 3)))


def norm_cnn() -> NormCNN:
    return NormCNN()


class OutlierCNN(nn.Module):
    """conv1 makes one channel ~500 (which conv2 ignores): a per-tensor int8 range for conv1's
    output (and conv2's input) rounds every other channel to 0, so the int8 check fails unless
    conv1 and conv2 stay at fp32 (tests/test_quantize.py: precision_search)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)
        with torch.no_grad():
            self.conv1.bias[0] = 500.0
            self.conv2.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(self.conv1(x)))
        return self.head(x.mean(dim=(2, 3)))


def outlier_cnn() -> OutlierCNN:
    return OutlierCNN()
