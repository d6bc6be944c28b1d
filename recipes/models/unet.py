"""U-Net (Ronneberger et al., 2015): an encoder-decoder whose skip connections are parallel
branches, so a cut between engines has to carry several tensors at once."""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class UNet(nn.Module):
    def __init__(self, channels: int = 3, classes: int = 2, base: int = 32, depth: int = 4) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            _double_conv(cin, cout) for cin, cout in zip([channels, *widths[:-2]], widths[:-1])
        )
        self.bottom = _double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in reversed(widths[1:])
        )
        self.merge = nn.ModuleList(_double_conv(w, w // 2) for w in reversed(widths[1:]))
        self.head = nn.Conv2d(base, classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def unet(base: int = 32, depth: int = 4) -> UNet:
    return UNet(base=base, depth=depth)
