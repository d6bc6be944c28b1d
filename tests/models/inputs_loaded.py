"""A model whose factory loads its own checkpoint (inputs_loaded.pt beside this file): a recipe
for it names no `weights`, so what is built is the model as this factory returns it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CHECKPOINT = Path(__file__).with_name("inputs_loaded.pt")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 64)
        self.mid = nn.Linear(64, 64)
        self.b = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.mid(torch.relu(self.a(x)))))


def loaded() -> nn.Module:
    model = Net()
    model.load_state_dict(torch.load(CHECKPOINT, weights_only=True))
    return model


def initialised() -> nn.Module:
    """Only torch's own init: reproducible because trtbuild seeds torch with 0 first."""
    return Net()
