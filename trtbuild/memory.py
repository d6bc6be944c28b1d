"""The memory model: predicted peak RSS of the processes that build one part.

A part is built by two processes in turn: the exporter (torch, the model's own imports, the ONNX
exporter) and the backend's builder. Each is modelled as fixed cost + alpha x the part's weight
bytes; a part's predicted peak is the larger of the two.

The exporter's fixed cost is the model's own: its graph job imports and exports the same model
and records its resident size (`base_bytes`: `transformers` alone is hundreds of MiB, a ResNet
file is nothing), plus the exporter's overhead. Overheads and alphas start from priors measured
on this machine (benchmarks/build_memory.py) or, for TensorRT, NVIDIA's documentation; every
process a build runs adds an observation to the cache (memory.json) and both are fitted to them:
an upper envelope, so that a fitted model predicts every process seen so far.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from trtbuild.atomic import write_text
from trtbuild.layout import CacheLayout

if TYPE_CHECKING:
    from trtbuild.lockfile import Lock

MiB = 1 << 20
MAX_OBSERVATIONS = 256  # per stage and backend, newest kept
SLACK = 8 * MiB  # sampling noise between a process and its next run
MIN_SPREAD = 32 * MiB  # weight bytes that must separate observations before alpha is fitted


@dataclass(frozen=True)
class Stage:
    fixed_bytes: int
    alpha: float

    def predict(self, weight_bytes: int) -> int:
        return int(self.fixed_bytes + self.alpha * weight_bytes)


@dataclass(frozen=True)
class MemoryModel:
    export: Stage
    build: Stage
    source: str

    def predict(self, weight_bytes: int) -> int:
        """Predicted peak RSS of the hungriest process building a part with these weights."""
        return max(self.export.predict(weight_bytes), self.build.predict(weight_bytes))

    def max_weight_bytes(self, budget: int) -> int:
        """Largest weight bytes one part may hold under `budget` (negative: nothing fits)."""
        return min(
            math.floor((budget - s.fixed_bytes) / s.alpha) for s in (self.export, self.build)
        )

    def stage(self, name: str) -> Stage:
        return self.export if name == "export" else self.build

    def to_json(self) -> dict[str, Any]:
        """As the lock pins it (flat: TOML inline)."""
        return {
            "export_fixed_bytes": self.export.fixed_bytes,
            "export_alpha": self.export.alpha,
            "build_fixed_bytes": self.build.fixed_bytes,
            "build_alpha": self.build.alpha,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemoryModel:
        return cls(
            Stage(int(data["export_fixed_bytes"]), float(data["export_alpha"])),
            Stage(int(data["build_fixed_bytes"]), float(data["build_alpha"])),
            f"pinned by the lock ({data.get('source', 'unknown')})",
        )


@dataclass(frozen=True)
class Observation:
    """One measured build process: its part's weight bytes, the model's base, its peak."""

    stage: str  # "export" or "build"
    backend: str
    weight_bytes: int
    base_bytes: int  # the model's own process cost (export); 0 for the builder
    peak_bytes: int

    @property
    def key(self) -> str:
        """Exporters are the same whatever the backend; builders are the backend's own."""
        return "export" if self.stage == "export" else f"build:{self.backend}"


# Priors, measured here with `python benchmarks/build_memory.py` and benchmarks/memory_model.py.
# The exporter's overhead is what an export adds to its model's base (the ONNX exporter, the
# parts' graphs); it streams weights one tensor at a time (partexport.py), so its alpha is well
# under 1 (0.41 for the heaviest part of llama 1.1B, 0.14 for the seed network). ONNX Runtime
# prepacks large convolutions at session creation, up to ~2.7x their weights.
ONNXRUNTIME = MemoryModel(
    export=Stage(fixed_bytes=80 * MiB, alpha=0.5),
    build=Stage(fixed_bytes=96 * MiB, alpha=2.7),
    source="priors measured on a 2-core x86_64 CPU machine, benchmarks/build_memory.py",
)
# NVIDIA documents builder host memory at 2x to 5x the weights (TensorRT developer guide,
# "Memory usage of the builder"); Torch-TensorRT's resource partitioner assumes 4x.
TENSORRT = MemoryModel(
    export=ONNXRUNTIME.export,
    build=Stage(fixed_bytes=512 * MiB, alpha=4.0),
    source="TensorRT developer guide (builder holds 2x-5x the weights; 4x as Torch-TensorRT "
    "assumes) plus ~0.5 GiB resident for the CUDA context and TensorRT libraries",
)
DEFAULTS = {"onnxruntime": ONNXRUNTIME, "tensorrt": TENSORRT}
# A model's base before its first graph job has run (torch + a small model, measured here).
DEFAULT_BASE = 420 * MiB


def memory_model(
    backend: str,
    cache_dir: Path | None,
    base_bytes: int | None = None,
    prior: MemoryModel | None = None,
) -> MemoryModel:
    """The memory model of one target: its model's base plus the fitted exporter overhead for
    the export stage, the fitted builder for the build stage.

    `prior` replaces the default priors (and then no base is added: it is the whole model).
    """
    start = prior or DEFAULTS[backend]
    seen = load_observations(cache_dir)
    per_model = prior is None  # a given prior is the whole process cost: bases stay in the fit
    export = fit(start.export, [o for o in seen if o.key == "export"], per_model)
    build = fit(start.build, [o for o in seen if o.key == f"build:{backend}"], per_model)
    if per_model:
        base = DEFAULT_BASE if base_bytes is None else base_bytes
        export = Stage(export.fixed_bytes + base, export.alpha)
    fitted = (export, build) != (start.export, start.build)
    source = f"fitted to {len(seen)} measured processes" if fitted and seen else start.source
    return MemoryModel(export, build, source)


def pinned(lock: Lock | None, model: str, precision: str, backend: str) -> MemoryModel | None:
    """The memory model the lock recorded for a target built with `backend`, if any.

    Plans follow from it: reusing it makes an incremental build plan exactly as the build that
    wrote the lock (and a clean build with that lock too), whatever the cache has learnt since.
    """
    locked = lock.target(model, precision) if lock else None
    if locked is None or locked.backend != backend or locked.memory is None:
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return MemoryModel.from_json(locked.memory)
    return None


def fit(prior: Stage, observations: list[Observation], less_base: bool = True) -> Stage:
    """An upper envelope of (peak - base) over weight bytes (of the peak: `less_base` False).

    alpha: the least-squares slope when the observations' weights are far enough apart to say
    anything about it, but never below the prior's: one model's light builder says nothing about
    another's (ONNX Runtime held 0.9x the weights of ResNet-50 and 2.2x those of BERT; a slope
    fitted to the first under-predicted the second by 81%). fixed: the largest residual, at least
    the prior's or the lightest process seen (whichever is less), plus slack for noise.
    """
    if not observations:
        return prior
    xs = [o.weight_bytes for o in observations]
    ys = [o.peak_bytes - (o.base_bytes if less_base else 0) for o in observations]
    alpha = prior.alpha
    if max(xs) - min(xs) >= MIN_SPREAD:
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var
        alpha = max(slope, prior.alpha)
    floor = min(prior.fixed_bytes, min(ys))  # the lesser of the prior and the lightest seen
    fixed = max(max(y - alpha * x for x, y in zip(xs, ys)), floor) + SLACK
    return Stage(int(fixed), alpha)


def load_observations(cache_dir: Path | None) -> list[Observation]:
    path = _path(cache_dir)
    if path is None or not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text()).get("observations", [])
        return [Observation(**o) for o in raw]
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
        write_text(path, json.dumps({"observations": [asdict(o) for o in kept]}, indent=1))


def _path(cache_dir: Path | None) -> Path | None:
    return CacheLayout(cache_dir).memory if cache_dir is not None else None
