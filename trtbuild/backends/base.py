"""The backend interface: turn one part's ONNX into an engine file, and load it back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class TensorIO:
    """One input or output as the engine file declares it."""

    name: str
    dtype: str  # numpy/torch spelling: float32, float16, bfloat16, int64, int32, bool, ...
    shape: list[int | str]  # a str is a dynamic dimension: its symbol, or "?" when unnamed


@dataclass(frozen=True)
class EngineIO:
    inputs: list[TensorIO]
    outputs: list[TensorIO]


class Engine(Protocol):
    """A loaded engine: named inputs in, named outputs out (backend-native values)."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...


class Backend(Protocol):
    name: str
    engine_suffix: str

    def available(self) -> str | None:
        """None when usable here, else the reason it is not (and how to fix it)."""
        ...

    def fingerprint(self) -> dict[str, str]:
        """Versions and device facts that change what an engine is; part of every action key."""
        ...

    def build(self, onnx_path: Path, settings: Mapping[str, Any], out: Path) -> dict[str, Any]:
        """Write the engine for `onnx_path` to `out`; return facts for the build record."""
        ...

    def load(self, engine_path: Path, plugins: Sequence[str] = (), once: bool = False) -> Engine:
        """The engine at `engine_path`; `plugins`: custom-operator libraries it was built with;
        `once`: it runs a few times only (the check): skip what only speeds repeated runs and
        costs memory (ONNX Runtime's prepacked weights; TensorRT has no such copy)."""
        ...

    def describe(self, engine_path: Path) -> EngineIO:
        """The engine's inputs and outputs from its own metadata (what a server is told)."""
        ...

    def to_native(self, tensor: Any) -> Any:
        """A torch tensor as this backend's engines take it (OrtValue, CUDA tensor, ...)."""
        ...

    def to_torch(self, value: Any) -> Any: ...
