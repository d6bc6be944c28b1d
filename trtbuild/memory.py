"""The memory model: predicted peak RSS of the processes that build one part.

A part is built by two processes in turn: the exporter (torch + ONNX exporter) and the backend's
builder. Each is modelled as fixed cost + alpha x the part's weight bytes; a part's predicted peak
is the larger of the two. Defaults were measured on this machine (benchmarks/build_memory.py) or,
for TensorRT, come from NVIDIA's documentation; every build corrects them from measured peak RSS
(`corrected`), and the corrections persist in the cache directory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path


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

    def corrected(self, stage: str, weight_bytes: int, peak_rss: int) -> MemoryModel:
        """The model raised (never lowered) so that it would have predicted `peak_rss`."""
        current: Stage = getattr(self, stage)
        if current.predict(weight_bytes) >= peak_rss:
            return self
        if weight_bytes > 0:
            alpha = (peak_rss - current.fixed_bytes) / weight_bytes
            fixed = current.fixed_bytes if alpha > 0 else peak_rss
            new = Stage(fixed, max(alpha, current.alpha) * 1.05)
        else:
            new = Stage(int(peak_rss * 1.05), current.alpha)
        return replace(self, **{stage: new}, source="corrected from measured peak RSS")


MiB = 1 << 20
# Measured here with `python benchmarks/build_memory.py`. Each alpha is the largest
# (peak RSS - fixed) / weight bytes seen over the measured parts, so that the linear model is an
# upper envelope: the budget is a promise, a model that under-predicts a known part breaks it.
# The exporter streams weights one tensor at a time (partexport.py), so its alpha stays near 1;
# ONNX Runtime prepacks large convolutions at session creation, up to ~2.7x their weights.
ONNXRUNTIME = MemoryModel(
    export=Stage(fixed_bytes=420 * MiB, alpha=1.0),
    build=Stage(fixed_bytes=96 * MiB, alpha=2.7),
    source="measured on a 2-core x86_64 CPU machine, benchmarks/build_memory.py",
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


def memory_model(backend: str, cache_dir: Path | None) -> MemoryModel:
    """The default for `backend`, raised by corrections saved in the cache, if any."""
    model = DEFAULTS[backend]
    path = _corrections_path(cache_dir)
    if path is None or not path.is_file():
        return model
    try:
        saved = json.loads(path.read_text()).get(backend)
    except (OSError, ValueError):
        return model
    if not saved:
        return model
    export, build = Stage(**saved["export"]), Stage(**saved["build"])
    return MemoryModel(
        export=_max_stage(model.export, export), build=_max_stage(model.build, build),
        source=saved.get("source", model.source),
    )  # fmt: skip


def save_corrections(backend: str, model: MemoryModel, cache_dir: Path) -> None:
    path = _corrections_path(cache_dir)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        data = {}
    data[backend] = {
        "export": asdict(model.export),
        "build": asdict(model.build),
        "source": model.source,
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _corrections_path(cache_dir: Path | None) -> Path | None:
    return cache_dir / "memory.json" if cache_dir is not None else None


def _max_stage(a: Stage, b: Stage) -> Stage:
    return Stage(max(a.fixed_bytes, b.fixed_bytes), max(a.alpha, b.alpha))
