"""Measured build processes (memory.json in the cache): what the memory model is fitted to.

Each record is one process: its stage, backend, the load it carried (memory.Load), the model's
base and its peak RSS in bytes. The newest MAX_OBSERVATIONS per stage and backend are kept."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from filelock import FileLock

from trtbuild.cache.atomic import write_text
from trtbuild.cache.layout import CacheLayout

MAX_OBSERVATIONS = 256  # per stage and backend, newest kept


# memory.json's format; 2: Loads and model (graph digest) recorded, ONNX Runtime's builder without
# prepacking.
OBSERVATIONS_VERSION = 2


@dataclass(frozen=True)
class Load:
    """What a part's weights ask of a process: their bytes; the largest single tensor (the
    exporter and the builder stream weights one tensor at a time); the bytes a builder folds (a
    convolution with a bias that a batch norm follows) and the largest of them; and the bytes it
    transposes (a Linear on a 3-D or larger input, exported as MatMul of a Transpose)."""

    weight_bytes: int
    largest_bytes: int = 0
    fused_bytes: int = 0
    largest_fused_bytes: int = 0
    transposed_bytes: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Load:
        """A Load as a process record in build.json carries it (asdict; older records: bytes
        only)."""
        return cls(**{f.name: record.get(f.name, 0) for f in fields(cls)})

    def scaled(self, weight_bytes: int) -> Load:
        """A part of `weight_bytes` shaped like this one: the same shares of rewritten bytes."""
        share = weight_bytes / self.weight_bytes if self.weight_bytes else 0.0
        return Load(
            weight_bytes,
            min(self.largest_bytes, weight_bytes),
            int(self.fused_bytes * share),
            min(self.largest_fused_bytes, int(self.fused_bytes * share)),
            int(self.transposed_bytes * share),
        )


@dataclass(frozen=True)
class Observation:
    """One measured build process: its part's weight bytes, the model's base, its peak."""

    stage: str  # "export" or "build"
    backend: str
    weight_bytes: int
    base_bytes: int  # the model's own process cost (export); 0 for the builder
    peak_bytes: int
    largest_bytes: int = 0  # the rest of its Load
    fused_bytes: int = 0
    largest_fused_bytes: int = 0
    transposed_bytes: int = 0
    graph: str = ""  # the op graph's digest: which model it was

    @classmethod
    def of(
        cls, stage: str, backend: str, load: Load, base: int, peak: int, graph: str
    ) -> Observation:
        return cls(stage, backend, base_bytes=base, peak_bytes=peak, graph=graph, **asdict(load))

    @property
    def load(self) -> Load:
        return Load(**{f.name: getattr(self, f.name) for f in fields(Load)})

    @property
    def key(self) -> str:
        """Exporters are the same whatever the backend; builders are the backend's own."""
        return "export" if self.stage == "export" else f"build:{self.backend}"


def load_observations(cache_dir: Path | None) -> list[Observation]:
    path = _path(cache_dir)
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        if data.get("version") != OBSERVATIONS_VERSION:
            return []  # measured before the builder's last change: they would mislead the fit
        return [Observation(**o) for o in data.get("observations", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return []  # an unreadable file is a missing one: the priors hold


def record(cache_dir: Path, observations: Iterable[Observation]) -> None:
    """Add measured processes to the cache's memory.json (newest MAX_OBSERVATIONS per stage)."""
    new = list(observations)
    path = _path(cache_dir)
    if not new or path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        seen = load_observations(cache_dir) + new
        kept: list[Observation] = []
        for key in dict.fromkeys(o.key for o in seen):
            kept += [o for o in seen if o.key == key][-MAX_OBSERVATIONS:]
        data = {"version": OBSERVATIONS_VERSION, "observations": [asdict(o) for o in kept]}
        write_text(path, json.dumps(data, indent=1))


def _path(cache_dir: Path | None) -> Path | None:
    return CacheLayout(cache_dir).memory if cache_dir is not None else None
