"""A model whose factory reads a number through C (libc's open and read: Python's audit hook
never sees it), holding the file a moment as a slow C loader would, and closing it before the
factory returns: only the executor's sampling of the job's open files can see this read."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import torch
from torch import nn

VALUE = Path(__file__).with_name("inputs_creader.txt")


def c_read(path: Path, hold: float = 0.5) -> bytes:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(os.fsencode(path), os.O_RDONLY)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open failed", str(path))
    try:
        buffer = ctypes.create_string_buffer(64)
        size = libc.read(fd, buffer, 64)
        time.sleep(hold)  # the loader's work while it holds the file
        return buffer.raw[:size]
    finally:
        libc.close(fd)


class Offset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        value = float(c_read(VALUE).decode())
        self.register_buffer("offset", torch.full((4,), value), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.offset


def offset_model() -> nn.Module:
    return Offset()
