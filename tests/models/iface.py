"""Small models for the interface tests (tests/test_binding.py): how inputs bind, outputs come back,
and export errors read. Each factory returns a fresh nn.Module; weights come from the recipe."""

from __future__ import annotations

import torch
from torch import nn


class Gated(nn.Module):
    """forward(feats, gate): a recipe listing gate first must still feed gate to gate."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, feats: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.lin(feats) * torch.sigmoid(gate)


class KeywordOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, feats: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        return self.lin(feats) * mask


class Unread(nn.Module):
    """Declares `mask` in its signature and never reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lin(x)


class Repeated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.lin(x)
        return y, y


class PassThrough(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lin(x), x


class Named(nn.Module):
    """A plain model returning a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.a(x), "hidden": torch.relu(self.b(x)), "x2": x * 2}


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.lin(x)
        return -self.lin(x)


class Flatten(nn.Module):
    """nn.Linear over H*W: a dynamic H is fixed to the constant the Linear wants."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4 * 4, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.lin(image.flatten(1))


class Counter(nn.Module):
    """Counts its calls in a buffer: state an engine does not keep."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.lin(x)


class Special(nn.Module):
    """torch.export takes bessel_j0; the ONNX exporter has no translation for it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(self.lin(x))


def special() -> nn.Module:
    return Special()


def gated() -> nn.Module:
    return Gated()


def keyword_only() -> nn.Module:
    return KeywordOnly()


def unread() -> nn.Module:
    return Unread()


def repeated() -> nn.Module:
    return Repeated()


def pass_through() -> nn.Module:
    return PassThrough()


def named() -> nn.Module:
    return Named()


def data_dependent() -> nn.Module:
    return DataDependent()


def flatten() -> nn.Module:
    return Flatten()


def counter() -> nn.Module:
    return Counter()
