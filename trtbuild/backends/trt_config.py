"""Recipe settings -> TensorRT builder configuration, as plain data (no tensorrt import).

A pure function with its own tests; `backends/tensorrt.py` applies the result to TensorRT
objects, and `trtbuild plan --trtexec` prints it as a trtexec command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trtbuild.errors import TrtbuildError

SUPPORTED_MAJORS = (10, 11)
WEAK_TYPING_FLAGS = {
    "fp16": "FP16",
    "bf16": "BF16",
}  # 10.x only: gone in 11 (always strongly typed)
# Explicit quantization: Q/DQ (int8, fp8) or blocked DequantizeLinear (int4) in the ONNX, which
# a strongly typed network follows; never the implicit INT8/FP8/INT4 builder flags (gone in 11).
QUANTIZED = ("int8", "int4", "fp8")
HARDWARE_LEVELS = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: per input name, its (min, opt, max) shapes."""

    shapes: dict[str, tuple[list[int], list[int], list[int]]]


@dataclass(frozen=True)
class BuilderConfig:
    network_flags: list[str]
    builder_flags: list[str]
    memory_pools: dict[str, int]
    optimization_level: int
    hardware_compatibility: str
    profiling_verbosity: str
    max_aux_streams: int | None
    profiles: list[Profile] = field(default_factory=list)
    timing_cache: str | None = None  # path of the pinned timing cache, if any


def builder_config(
    settings: dict[str, Any],
    precision: str,
    inputs: list[dict[str, Any]],
    trt_major: int,
    release: bool,
) -> BuilderConfig:
    """The builder configuration for one part.

    settings: the target's backend settings (see build._settings): "gpu_workspace",
    "host_memory" and "tensorrt" (recipe [defaults.tensorrt]). inputs: the part's inputs with
    "name" and "shape", plus "min"/"opt"/"max" for dynamic dimensions.
    """
    if trt_major not in SUPPORTED_MAJORS:
        raise TrtbuildError(f"TensorRT {trt_major}.x is not supported: expected 10.x or 11.x")
    trt = settings["tensorrt"]
    network_flags = ["STRONGLY_TYPED"]
    builder_flags = []
    if trt["typing"] == "weak":
        if precision in QUANTIZED:
            raise TrtbuildError(
                f'tensorrt.typing = "weak" cannot build precision {precision!r}: quantized '
                "targets are strongly typed networks that follow the Q/DQ of their ONNX"
            )
        if "mixed" in settings:
            raise TrtbuildError(
                'tensorrt.typing = "weak" cannot keep modules at fp32 (keep, precision_search): '
                "the FP16 flag lets TensorRT run them at fp16; a strongly typed network follows "
                "the Casts of their ONNX"
            )
        if trt_major >= 11:
            raise TrtbuildError(
                'tensorrt.typing = "weak" needs TensorRT 10.x: TensorRT 11 networks are always '
                "strongly typed (precision comes from the ONNX graph)"
            )
        network_flags = []
        if precision in WEAK_TYPING_FLAGS:
            builder_flags.append(WEAK_TYPING_FLAGS[precision])
    for option, flag in (
        ("version_compatible", "VERSION_COMPATIBLE"),
        ("exclude_lean_runtime", "EXCLUDE_LEAN_RUNTIME"),
        ("refit", "REFIT"),
        ("strip_plan", "STRIP_PLAN"),
        ("weight_streaming", "WEIGHT_STREAMING"),
    ):
        if trt[option]:
            builder_flags.append(flag)
    if trt["exclude_lean_runtime"] and not trt["version_compatible"]:
        raise TrtbuildError(
            "tensorrt.exclude_lean_runtime needs tensorrt.version_compatible = true"
        )
    if trt["strip_plan"] and not trt["refit"]:
        builder_flags.append("REFIT")  # a stripped plan is useless unless it can be refitted
    if release and trt["timing_cache"]:
        builder_flags.append("ERROR_ON_TIMING_CACHE_MISS")
    pools = {"WORKSPACE": int(settings["gpu_workspace"])}
    if trt["tactic_dram"]:
        pools["TACTIC_DRAM"] = int(settings["host_memory"])
    return BuilderConfig(
        network_flags=network_flags,
        builder_flags=builder_flags,
        memory_pools=pools,
        optimization_level=trt["optimization_level"],
        hardware_compatibility=HARDWARE_LEVELS[trt["hardware_compatibility"]],
        profiling_verbosity="DETAILED",  # the engine inspector's layer JSON, for verify
        max_aux_streams=trt["max_aux_streams"],
        profiles=_profiles(inputs),
        timing_cache=trt["timing_cache"],
    )


def _profiles(inputs: list[dict[str, Any]]) -> list[Profile]:
    """One profile covering every dynamic input; none when all shapes are static."""
    shapes = {}
    for t in inputs:
        if "min" in t:
            shapes[t["name"]] = (list(t["min"]), list(t["opt"]), list(t["max"]))
    return [Profile(shapes)] if shapes else []


def trtexec_command(config: BuilderConfig, onnx: str, engine: str) -> str:
    """The equivalent trtexec command line, for users who debug with it."""
    hw = {
        "NONE": None,
        "AMPERE_PLUS": "ampere+",
        "SAME_COMPUTE_CAPABILITY": "sameComputeCapability",
    }
    pools = ",".join(  # trtexec has no flag for TACTIC_DRAM
        f"{_TRTEXEC_POOLS[k]}:{v / 2**20:g}M"
        for k, v in config.memory_pools.items()
        if k in _TRTEXEC_POOLS
    )
    args = [
        f"trtexec --onnx={onnx} --saveEngine={engine}",
        f"--memPoolSize={pools}",
        f"--builderOptimizationLevel={config.optimization_level}",
        f"--profilingVerbosity={config.profiling_verbosity.lower()}",
    ]
    if "STRONGLY_TYPED" in config.network_flags:
        args.append("--stronglyTyped")
    args += [f"--{_TRTEXEC_FLAGS[f]}" for f in config.builder_flags]
    if hw[config.hardware_compatibility]:
        args.append(f"--hardwareCompatibilityLevel={hw[config.hardware_compatibility]}")
    if config.max_aux_streams is not None:
        args.append(f"--maxAuxStreams={config.max_aux_streams}")
    if config.timing_cache:
        args.append(f"--timingCacheFile={config.timing_cache}")
    for profile in config.profiles:
        for key, index in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
            spec = ",".join(
                f"{n}:{'x'.join(map(str, s[index]))}" for n, s in profile.shapes.items()
            )
            args.append(f"--{key}={spec}")
    return " ".join(args)


_TRTEXEC_POOLS = {"WORKSPACE": "workspace"}
_TRTEXEC_FLAGS = {
    "FP16": "fp16",
    "BF16": "bf16",
    "VERSION_COMPATIBLE": "versionCompatible",
    "EXCLUDE_LEAN_RUNTIME": "excludeLeanRuntime",
    "REFIT": "refit",
    "STRIP_PLAN": "stripWeights",
    "WEIGHT_STREAMING": "weightStreaming",
    "ERROR_ON_TIMING_CACHE_MISS": "errorOnTimingCacheMiss",
}
