"""What a quantized target (int8, int4, fp8) adds to its parts: the quantization scheme and the
calibration table's digest in every part's key (a new table rebuilds the engines), and the
table's path in each build job (trtbuild.backends.quantize applies both). A mixed fp16 target
(modules kept at fp32, recipe.quantspec.mixed) adds its conversion the same way."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from trtbuild.cache.digests import DigestMemo
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.calibration import cached, calibrate, request
from trtbuild.recipe.quantspec import QUANTIZED

if TYPE_CHECKING:
    from trtbuild.cache.store import Store
    from trtbuild.orchestrate.context import TargetContext
    from trtbuild.orchestrate.graphjob import GraphResult
    from trtbuild.planner.memory import MemoryModel
    from trtbuild.planner.observations import Observation
    from trtbuild.recipe.load import Recipe, Target

# bump when what the quantizer writes changes (2: weight transposes folded, 3: bias sums,
# 4: values computed from constants folded, as a convolution's zero bias)
SCHEME = 4
INT4_BLOCK = 128  # weights per scale of int4 (MatMulNBits' block_size)
# A quantized part's build process also runs the quantizer, which holds the fp32 model, its
# folded copy and the quantized one: measured +2.1x the weights over the fp32 build's peak (an
# MLP of 96 MiB: 390 MiB against 188 MiB, int8 and int4 alike). A mixed fp16 part's converter
# holds the fp32 model and its fp16 copy: counted the same, not measured apart.
QUANTIZER_ALPHA = 2.2
MIXED_SCHEME = 1  # bump when what the fp16 conversion of a mixed target writes changes


def _converted(target: Target) -> bool:
    """Whether its build processes convert the part first (quantizer or fp16 converter)."""
    return target.precision in QUANTIZED or target.mixed


def memory_for(target: Target, memory: MemoryModel) -> MemoryModel:
    """The memory model a quantized target is planned with: its build processes count the
    quantizer's copies too (the planner splits it sooner); others' unchanged."""
    if not _converted(target):
        return memory
    build = dataclasses.replace(memory.build, alpha=memory.build.alpha + QUANTIZER_ALPHA)
    what = "fp16 converter" if target.mixed else "quantizer"
    source = f"{memory.source}; {target.precision}: + {QUANTIZER_ALPHA} x weights ({what})"
    return dataclasses.replace(memory, build=build, source=source)


def fitted(target: Target, observed: list[Observation]) -> list[Observation]:
    """What the shared memory fit learns from a target's processes: not a quantized target's
    builds (memory_for adds their quantizer on top of the fit)."""
    if not _converted(target):
        return observed
    return [o for o in observed if o.stage != "build"]


def check_backend(target: Target, backend: str) -> None:
    """fp8 is TensorRT's: one clear error for any other backend, before anything is built."""
    if target.precision == "fp8" and backend != "tensorrt":
        raise TrtbuildError(
            f"{target.name}: precision 'fp8' (Q/DQ in E4M3) needs the tensorrt backend; "
            f'{backend} has no fp8 kernels: set backend = "tensorrt" or use int8'
        )


def calibration(ctx: TargetContext) -> dict[str, Any] | None:
    """The target's calibration (its summary), computed or from the cache; None if it has none."""
    found = calibrate(ctx)
    return found.summary() if found else None


def warning(target: Target, table: dict[str, Any] | None) -> str | None:
    """The note a target calibrated on data = "random" gets (printed with the run's notes)."""
    if table is None or not table["random"]:
        return None
    return (
        f'warning: {target.name}: calibrated on random inputs (data = "random"): its ranges '
        'will not represent real data (set calibration.data to sample files, e.g. "calib/*.npz")'
    )


def key_settings(target: Target, table: dict[str, Any] | None) -> dict[str, Any]:
    """Settings a quantized or mixed target's parts add to their key; {} for the others."""
    kept = target.model.keep.get("fp32", [])
    if target.mixed:
        return {"mixed": {"scheme": MIXED_SCHEME, "fp16": "keep_io_types", "keep": kept}}
    if target.precision not in QUANTIZED:
        return {}
    if target.precision == "int4":
        scheme = {"scheme": SCHEME, "weights": "int4 blocked symmetric", "block": INT4_BLOCK}
    else:
        scheme = {
            "scheme": SCHEME,
            "format": "qdq",
            "weights": "per-channel symmetric",
            "activations": "per-tensor symmetric",
        }
    scheme = {**scheme, "keep": kept} if kept else scheme
    return {"quantize": scheme, **({"calibration": table["sha256"]} if table else {})}


def cached_key_settings(
    recipe: Recipe, target: Target, job: GraphResult, store: Store
) -> dict[str, Any] | None:
    """key_settings with the calibration the cache holds (plan, explain: nothing runs); None
    when the target needs a calibration the cache does not have."""
    table = cached(recipe, target, job, store)
    if table is None and request(recipe, target, job, DigestMemo(store.layout.digests)):
        return None
    return key_settings(target, table.summary() if table else None)


def job_inputs(store: Store, table: dict[str, Any] | None) -> dict[str, Any]:
    """What a build job needs beyond its key: where the calibration table is."""
    if table is None:
        return {}
    return {"calibration_table": str(store.blob_path(table["sha256"]))}
