"""A model whose engine depends on more than its own file: a helper module, a data file and an
environment variable. It lives outside the recipe's folder (source = "../shared/probe.py:make")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from helpers import Block, activation  # a sibling module, found next to this file
from torch import nn

CONFIG = json.loads((Path(__file__).parent / "config.json").read_text())


class Probe(nn.Module):
    def __init__(self, width: int = 16, out: int = 4) -> None:
        super().__init__()
        self.block = Block(width, CONFIG["hidden"])
        self.head = nn.Linear(CONFIG["hidden"], out)
        self.scale = float(os.environ.get("PROBE_SCALE", "1.0"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(activation(self.block(x))) * self.scale


def make(width: int = 16, out: int = 4) -> Probe:
    return Probe(width, out)
