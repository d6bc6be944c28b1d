"""A model that reads a table with a native (Rust) reader: safetensors.torch.load_file of
inputs_table.safetensors beside this file, which Python's `open` audit hook never sees."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

TABLE = Path(__file__).with_name("inputs_table.safetensors")


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("table", load_file(str(TABLE))["table"], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.table


def table_model() -> nn.Module:
    return Scaled()
