"""The pure settings -> TensorRT builder configuration mapping, and its trtexec rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trtbuild.backends.trt_config import Profile, builder_config, trtexec_command
from trtbuild.errors import TrtbuildError
from trtbuild.recipe.schema import TensorRTSettings

GiB = 1 << 30


def settings(**trt: Any) -> dict[str, Any]:
    return {
        "gpu_workspace": GiB,
        "host_memory": 2 * GiB,
        "tensorrt": TensorRTSettings(**trt).model_dump(mode="json"),
    }


@pytest.mark.parametrize("major", [10, 11])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_strong_typing_encodes_precision_in_the_graph(major: int, precision: str) -> None:
    cfg = builder_config(settings(), precision, [], major, release=False)
    assert cfg.network_flags == ["STRONGLY_TYPED"]
    assert not {"FP16", "BF16"} & set(cfg.builder_flags)


@pytest.mark.parametrize(
    ("precision", "flag"), [("fp16", ["FP16"]), ("bf16", ["BF16"]), ("fp32", [])]
)
def test_weak_typing_on_10x_uses_builder_flags(precision: str, flag: list[str]) -> None:
    cfg = builder_config(settings(typing="weak"), precision, [], 10, release=False)
    assert cfg.network_flags == []
    assert cfg.builder_flags == flag


def test_weak_typing_cannot_keep_modules_at_fp32() -> None:
    mixed = {**settings(typing="weak"), "mixed": {"scheme": 1, "keep": ["norm"]}}
    with pytest.raises(TrtbuildError, match=r"weak.*cannot keep modules at fp32"):
        builder_config(mixed, "fp16", [], 10, release=False)
    assert builder_config({**mixed, **settings()}, "fp16", [], 11, release=False).network_flags == [
        "STRONGLY_TYPED"
    ]


def test_weak_typing_on_11x_is_an_error() -> None:
    with pytest.raises(TrtbuildError, match="TensorRT 11 networks are always strongly typed"):
        builder_config(settings(typing="weak"), "fp16", [], 11, release=False)


def test_pools() -> None:
    cfg = builder_config(settings(), "fp32", [], 10, release=False)
    assert cfg.memory_pools == {"WORKSPACE": GiB, "TACTIC_DRAM": 2 * GiB}
    assert builder_config(settings(tactic_dram=False), "fp32", [], 10, False).memory_pools == {
        "WORKSPACE": GiB
    }


def test_dynamic_shapes_become_one_profile() -> None:
    inputs = [
        {"name": "ids", "shape": [1, "s0"], "min": [1, 1], "opt": [1, 64], "max": [1, 256]},
        {"name": "mask", "shape": [1, 8]},
    ]
    cfg = builder_config(settings(), "fp32", inputs, 10, release=False)
    assert cfg.profiles == [Profile({"ids": ([1, 1], [1, 64], [1, 256])})]
    assert builder_config(settings(), "fp32", [inputs[1]], 10, False).profiles == []


def test_release_with_pinned_timing_cache_refuses_misses() -> None:
    pinned = settings(timing_cache="caches/a100.cache")
    assert (
        "ERROR_ON_TIMING_CACHE_MISS"
        in builder_config(pinned, "fp16", [], 10, release=True).builder_flags
    )
    assert (
        "ERROR_ON_TIMING_CACHE_MISS"
        not in builder_config(pinned, "fp16", [], 10, release=False).builder_flags
    )
    assert (
        "ERROR_ON_TIMING_CACHE_MISS"
        not in builder_config(settings(), "fp16", [], 11, release=True).builder_flags
    )


def test_options_and_levels() -> None:
    cfg = builder_config(
        settings(
            optimization_level=5,
            hardware_compatibility="ampere_plus",
            refit=True,
            strip_plan=True,
            version_compatible=True,
            exclude_lean_runtime=True,
            weight_streaming=True,
            max_aux_streams=2,
        ),
        "fp32",
        [],
        11,
        False,
    )
    assert cfg.optimization_level == 5 and cfg.hardware_compatibility == "AMPERE_PLUS"
    assert cfg.max_aux_streams == 2 and cfg.profiling_verbosity == "DETAILED"
    assert set(cfg.builder_flags) == {
        "VERSION_COMPATIBLE",
        "EXCLUDE_LEAN_RUNTIME",
        "REFIT",
        "STRIP_PLAN",
        "WEIGHT_STREAMING",
    }
    with pytest.raises(TrtbuildError, match="exclude_lean_runtime needs"):
        builder_config(settings(exclude_lean_runtime=True), "fp32", [], 10, False)
    with pytest.raises(TrtbuildError, match=r"TensorRT 9\.x is not supported"):
        builder_config(settings(), "fp32", [], 9, False)


def test_trtexec_command() -> None:
    inputs = [{"name": "x", "shape": ["s0", 3], "min": [1, 3], "opt": [4, 3], "max": [8, 3]}]
    cfg = builder_config(
        settings(typing="weak", timing_cache="t.cache", hardware_compatibility="ampere_plus"),
        "fp16",
        inputs,
        10,
        release=True,
    )
    assert trtexec_command(cfg, "part0.onnx", "part0.engine") == (
        "trtexec --onnx=part0.onnx --saveEngine=part0.engine --memPoolSize=workspace:1024M "
        "--builderOptimizationLevel=3 --profilingVerbosity=detailed --fp16 --errorOnTimingCacheMiss "
        "--hardwareCompatibilityLevel=ampere+ --timingCacheFile=t.cache --minShapes=x:1x3 "
        "--optShapes=x:4x3 --maxShapes=x:8x3"
    )


def test_plan_prints_trtexec_lines(recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trtbuild.cli import main

    assert main(["plan", str(recipes / "seed_net.toml"), "--backend", "tensorrt", "--trtexec"]) == 0
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith("trtexec ")]
    assert len(commands) == 2
    onnx = commands[1].split("--onnx=")[1].split()[0]
    assert onnx.endswith("build/seed_net/trtexec/seed_net/fp32/part1.onnx")
    assert Path(onnx).is_file()  # the file the command names exists
    assert "--stronglyTyped" in commands[0] and "--memPoolSize=workspace:1024M" in commands[0]


@pytest.mark.parametrize("major", [10, 11])
@pytest.mark.parametrize("precision", ["int8", "int4", "fp8"])
def test_quantized_targets_are_strongly_typed_without_precision_flags(
    major: int, precision: str
) -> None:
    """Explicit quantization: the Q/DQ ONNX sets each layer's type; no INT8/INT4/FP8 flag (and
    no calibrator) on any version."""
    cfg = builder_config(settings(), precision, [], major, release=False)
    assert cfg.network_flags == ["STRONGLY_TYPED"]
    assert not {"INT8", "INT4", "FP8", "FP16", "BF16"} & set(cfg.builder_flags)
    assert "--stronglyTyped" in trtexec_command(cfg, "p.onnx", "p.engine")
    with pytest.raises(TrtbuildError, match=r"cannot build precision .* quantized"):
        builder_config(settings(typing="weak"), precision, [], major, release=False)
