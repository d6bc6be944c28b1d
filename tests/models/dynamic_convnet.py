"""A convnet over a dynamic H x W: a stride-2 convolution, a Linear over the flattened spatial
tokens (over channels, after flatten(2).transpose(1, 2)), nearest upsampling, a convolution.
Every size after the first convolution is derived from H and W ((H - 1) // 2 + 1, ...)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DynamicConvnet(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.mix = nn.Linear(channels, channels)
        self.mix2 = nn.Linear(channels, channels)
        self.up = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.down(x))  # [B, C, h, w], h = (H - 1) // 2 + 1
        b, c, h, w = y.shape
        tokens = y.flatten(2).transpose(1, 2)  # [B, h * w, C]
        tokens = F.relu(self.mix(tokens))
        tokens = self.mix2(tokens) + tokens
        y = tokens.transpose(1, 2).reshape(b, c, h, w)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")  # [B, C, 2h, 2w]
        return self.up(y)


def dynamic_convnet(channels: int = 8) -> nn.Module:
    return DynamicConvnet(channels)


class DerivedLength(nn.Module):
    """emb(ids)[:, 1:]: a sequence one shorter than the input's, sliced positions, a reshape."""

    def __init__(self, vocab: int = 50, width: int = 16, max_len: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)[:, 1:]  # [B, S - 1, W]
        x = x + self.pos[: x.shape[1]]
        x = F.relu(self.first(x))
        b, n, w = x.shape
        x = x.reshape(b, n, 4, w // 4).transpose(1, 2).reshape(b, n, w)
        return self.second(x)


def derived_length(width: int = 16) -> nn.Module:
    return DerivedLength(width=width)


class BatchMlp(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.first(x))
        # A shortcut at batch 1 (as transformers' packed-sequence check takes): the same values,
        # but traced at batch 1 it makes a graph that returns one row at every batch.
        rows = torch.zeros(1, dtype=torch.long) if x.shape[0] == 1 else torch.arange(x.shape[0])
        return self.second(h[rows])


def batch_mlp(width: int = 16) -> nn.Module:
    return BatchMlp(width)


class FixedLength(nn.Module):
    """nn.Linear(C * H * W) after flatten: H cannot vary, whatever the recipe declares."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4 * 6 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def fixed_length() -> nn.Module:
    return FixedLength()
