"""The memory model: predicted peak RSS of the processes that build one part.

A part is built by two processes in turn: the exporter (torch, the model's own imports, the ONNX
exporter) and the backend's builder. Each is modelled as fixed cost + alpha x the part's weight
bytes + terms for the tensors a builder rewrites or streams (a part's Load); a part's predicted
peak is the larger of the two.

The exporter's fixed cost is the model's own: its graph job imports and exports the same model
and records its resident size (`base_bytes`: `transformers` alone is hundreds of MiB, a ResNet
file is nothing), plus the exporter's overhead. Overheads and factors start from priors measured
on this machine (benchmarks/memory_model.py) or, for TensorRT, NVIDIA's documentation; every
process a build runs adds an observation to the cache (memory.json) and the priors are scaled to
them (fit()): an upper envelope, so that a fitted model predicts every process seen so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.planner.observations import Load, Observation, load_observations

if TYPE_CHECKING:
    from trtbuild.recipe.load import Target
    from trtbuild.release.lockfile import Lock

MiB = 1 << 20
SLACK = 8 * MiB  # sampling noise between a process and its next run


@dataclass(frozen=True)
class Stage:
    fixed_bytes: int
    alpha: float  # x every weight byte
    largest: float = 0.0  # x the largest tensor (streamed: one at a time)
    fused: float = 0.0  # x the folded bytes (their new copies, held to the end)
    fold_scratch: float = 0.0  # x the largest folded tensor (its old copy and a scratch one)
    transposed: float = 0.0  # x the transposed bytes (new copies, held to the end)

    def predict(self, load: Load) -> int:
        """Folding comes before streaming: the peak holds the folded copies, the transposed ones,
        and the larger of one fold's scratch and one streamed tensor."""
        return int(
            self.fixed_bytes
            + self.alpha * load.weight_bytes
            + self.fused * load.fused_bytes
            + self.transposed * load.transposed_bytes
            + max(self.fold_scratch * load.largest_fused_bytes, self.largest * load.largest_bytes)
        )

    def costliest(self, loads: Iterable[Load]) -> Load:
        """The load of the part that costs most in a process that handles parts one after
        another (one export process for a target's parts): not always the one with the most
        weights (a Llama part with 1.5 GiB of 64 MiB tensors costs less than the part with
        1.2 GiB and the 250 MiB embedding)."""
        return max(loads, key=self.predict)


@dataclass(frozen=True)
class MemoryModel:
    export: Stage
    build: Stage
    source: str

    def predict(self, load: Load) -> int:
        """Predicted peak RSS of the hungriest process building a part with these weights."""
        return max(self.export.predict(load), self.build.predict(load))

    def max_weight_bytes(self, budget: int, whole: Load) -> int:
        """Largest weight bytes one part of a model shaped like `whole` (Load.scaled) may hold
        under `budget`: negative when nothing fits, all of them when the whole model fits."""
        if self.predict(whole) <= budget:
            return whole.weight_bytes
        if self.predict(whole.scaled(0)) > budget:
            return -1
        low, high = 0, whole.weight_bytes  # predict(low) fits, predict(high) does not
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if self.predict(whole.scaled(mid)) <= budget else (low, mid)
        return low

    def stage(self, name: str) -> Stage:
        return self.export if name == "export" else self.build

    def to_json(self) -> dict[str, Any]:
        """As the lock pins it (flat: TOML inline)."""
        return {
            **{f"export_{k}": v for k, v in _fields(self.export).items()},
            **{f"build_{k}": v for k, v in _fields(self.build).items()},
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemoryModel:
        def stage(prefix: str) -> Stage:
            return Stage(
                int(data[f"{prefix}_fixed_bytes"]),
                float(data[f"{prefix}_alpha"]),
                float(data.get(f"{prefix}_largest", 0.0)),  # locks before these terms
                float(data.get(f"{prefix}_fused", 0.0)),
                float(data.get(f"{prefix}_fold_scratch", 0.0)),
                float(data.get(f"{prefix}_transposed", 0.0)),
            )

        return cls(
            stage("export"),
            stage("build"),
            PINNED.format(_unpinned(str(data.get("source", "unknown")))),
        )


def _fields(stage: Stage) -> dict[str, Any]:
    return {
        "fixed_bytes": stage.fixed_bytes,
        "alpha": stage.alpha,
        "largest": stage.largest,
        "fused": stage.fused,
        "fold_scratch": stage.fold_scratch,
        "transposed": stage.transposed,
    }


# Priors, measured here with `python benchmarks/memory_model.py` and single-op models.
# The exporter's overhead is what an export adds to its model's base (the ONNX exporter, the
# parts' graphs); it streams weights one tensor at a time (partexport.py), so beyond a small
# alpha it holds about the largest tensor: the seed network (411 MiB, largest 144) 469 MiB on a
# base of 316; Llama 1.1B's one export process for its three parts (the largest tensor 250 MiB,
# in the first) 792 MiB on a base of 419.
# ONNX Runtime's builder (prepacking off: backends/onnxruntime.py) reads the weights it keeps one
# tensor at a time while it writes the optimised model, so it holds about the largest of them;
# it folds batch norms into convolutions that have a bias, one at a time (the new copies held:
# 1x, and the one being folded twice more: old and scratch copy), and folds the Transpose the
# exporter puts before a Linear's weight on a 3-D input into a transposed copy (1.1x). Measured here, on a process of ~61 MiB: a 128 MiB Linear on a 2-D input 183 MiB, 32
# of 4 MiB 64 MiB, ResNet-50 (convolutions without bias) 68-77 MiB, the seed network in one
# engine 635 MiB and its conv1 alone (144 MiB folded) 491 MiB, BERT-base 592 MiB, GPT-2 parts of 312 and 310 MiB 401 and 551 MiB
# and Llama 1.1B parts of 1200-1352 MiB 1426-1540 MiB (tests/test_memory.py;
# benchmarks/memory_model.py).
ONNXRUNTIME = MemoryModel(
    export=Stage(fixed_bytes=40 * MiB, alpha=0.05, largest=1.0),
    build=Stage(
        fixed_bytes=64 * MiB,
        alpha=0.05,
        largest=1.0,
        fused=1.0,
        fold_scratch=2.0,
        transposed=1.1,
    ),
    source="priors measured on a 2-core x86_64 CPU machine, benchmarks/memory_model.py",
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
# The export process of an `onnx:` source (trtbuild.model.onnxparts) copies weights a chunk at a
# time, but holds a whole part to run it in ONNX Runtime for the check's reference (the
# initializers ONNX Runtime loads, and the protobuf it parses): 2x its weights; and to convert it
# to fp16 (onnxruntime.transformers.float16: the protobuf, numpy copies, the fp16 copy): 3.7x
# measured on a 20 MB detector, so 4x. Upper bounds the fit only raises.
ONNX_SOURCE_EXPORT = Stage(fixed_bytes=40 * MiB, alpha=2.0)
ONNX_SOURCE_EXPORT_FP16 = Stage(fixed_bytes=40 * MiB, alpha=4.0)


def source_export(target: Target) -> Stage | None:
    """The export stage's prior for the target's kind of source; None: the backend's (torch)."""
    if not target.model.onnx:
        return None
    return ONNX_SOURCE_EXPORT_FP16 if target.precision == "fp16" else ONNX_SOURCE_EXPORT


# A model's base before its first graph job has run (torch + a small model, measured here).
DEFAULT_BASE = 420 * MiB


def memory_model(
    backend: str,
    cache_dir: Path | None,
    base_bytes: int | None = None,
    prior: MemoryModel | None = None,
    graph: str | None = None,
    observed: list[Observation] | None = None,
    export_prior: Stage | None = None,
) -> MemoryModel:
    """The memory model of one target: its model's base plus the fitted exporter overhead for
    the export stage, the fitted builder for the build stage.

    Fitted to the processes of the same model (op graph digest `graph`) only: the priors hold
    across models, and one model's shortfall (Llama's export, 22% over its prediction) must not
    raise every other model's predictions (the seed network at 640 MiB could not be planned
    after it). None: every process seen. `prior` replaces the default priors (and then no base is
    added: it is the whole model). `observed`: the cache's observations as read earlier (a run
    plans every target with those it started with, as `plan` would), else read now.
    `export_prior`: the export stage's prior when not the backend's (source_export).
    """
    start = prior or DEFAULTS[backend]
    if export_prior is not None and prior is None:
        start = replace(start, export=export_prior)
    recorded = load_observations(cache_dir) if observed is None else observed
    seen = [o for o in recorded if graph is None or o.graph == graph]
    per_model = prior is None  # a given prior is the whole process cost: bases stay in the fit
    export = fit(start.export, [o for o in seen if o.key == "export"], per_model)
    build = fit(start.build, [o for o in seen if o.key == f"build:{backend}"], per_model)
    if per_model:
        base = DEFAULT_BASE if base_bytes is None else base_bytes
        export = replace(export, fixed_bytes=export.fixed_bytes + base)
    fitted = (export, build) != (start.export, start.build)
    source = f"fitted to {len(seen)} measured processes" if fitted and seen else start.source
    return MemoryModel(export, build, source)


PINNED = "pinned by the lock ({})"


def _unpinned(source: str) -> str:
    """The source a pinned model was fitted from: a lock written from a pinned model must not
    wrap it again ("pinned by the lock (pinned by the lock (...))" grew by one run after run)."""
    prefix, suffix = PINNED.split("{}")
    while source.startswith(prefix) and source.endswith(suffix):
        source = source[len(prefix) : -len(suffix)]
    return source


def pinned(lock: Lock | None, target: Target, backend: str) -> MemoryModel | None:
    """The memory model the lock recorded for a target built with `backend`, if any.

    Plans follow from it: reusing it makes an incremental build plan exactly as the build that
    wrote the lock (and a clean build with that lock too), whatever the cache has learnt since.
    """
    locked = lock.target(target.model.name, target.precision, target.kind) if lock else None
    if locked is None or locked.backend != backend or locked.memory is None:
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return MemoryModel.from_json(locked.memory)
    return None


def fit(prior: Stage, observations: list[Observation], less_base: bool = True) -> Stage:
    """The prior scaled by the largest ratio of a measured peak (less its model's base: unless
    `less_base` is False) to the prior's prediction for the same Load, never scaled down.

    One factor for every term: an upper envelope that keeps the shape of the prior (what each
    kind of weight costs), so a model the prior under-predicts raises every prediction by the
    same share instead of adding its shortfall to every process (an added fixed cost made
    ResNet's 77 MiB builds +55% after BERT's was 39 MiB over), and a model lighter than the prior
    says never lowers the next one's prediction.
    """
    ratios = [
        (o.peak_bytes - (o.base_bytes if less_base else 0) + SLACK) / prior.predict(o.load)
        for o in observations
        if prior.predict(o.load) > 0
    ]
    scale = max([1.0, *ratios])
    if scale == 1.0:
        return prior
    factors = {f.name: getattr(prior, f.name) * scale for f in fields(Stage)}
    return Stage(**{**factors, "fixed_bytes": int(factors["fixed_bytes"])})
