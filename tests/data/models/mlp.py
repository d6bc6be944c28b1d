"""Weight-heavy, compute-light: three 128 MB layers, so budgets bite while runs stay fast."""

from __future__ import annotations

import torch
from torch import nn


class WideMLP(nn.Module):
    def __init__(self, width: int = 4096, hidden: int = 8192) -> None:
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.mid = nn.Linear(hidden, width)
        self.down = nn.Linear(width, hidden)
        self.head = nn.Linear(hidden, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(x))
        x = torch.relu(self.mid(x))
        return self.head(torch.relu(self.down(x)))


def wide_mlp(width: int = 4096, hidden: int = 8192) -> WideMLP:
    return WideMLP(width, hidden)
