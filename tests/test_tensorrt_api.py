"""The TensorRT backend against the real API surface of TensorRT 10.13, 10.16 and 11.1.

TensorRT cannot be installed here, so this reads the backend's source: every `trt.<Name>` and
`trt.<Name>.<member>` it uses (also through `getattr(trt.X, "...")` tables and aliases of the
module) must exist in every supported release, or sit behind a version guard. The lists were
extracted from NVIDIA/TensorRT's pybind11 sources (copied from shared/tensorrt-api).
"""

from __future__ import annotations

import ast
from itertools import product
from pathlib import Path

import pytest

from trtbuild.backends import tensorrt as backend
from trtbuild.backends import trt_config
from trtbuild.errors import TrtbuildError

API = Path(__file__).parent / "data" / "tensorrt-api"
RELEASES = {"10.13.3": 10, "10.16": 10, "11.1": 11}  # the README's supported versions
SOURCE = Path(backend.__file__)


def surface(release: str) -> set[str]:
    return set((API / f"{release}.txt").read_text().split())


def used_names(source: Path) -> set[str]:
    """`trt.X` and `trt.X.Y` in the source, whatever local name the module is bound to."""
    tree = ast.parse(source.read_text())
    aliases = {"trt"}
    for node in ast.walk(tree):  # `trt = _trt()` or `import tensorrt as foo`
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
        call = node.value if isinstance(node, ast.Assign) else None
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "_trt"
        ):
            aliases |= {t.id for t in node.targets if isinstance(t, ast.Name)}  # type: ignore[attr-defined]
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            names.add(node.attr)
        nested = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
        if (
            nested
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id in aliases  # type: ignore[attr-defined]
            and node.value.attr != "__version__"
        ):  # a str: its methods are not TensorRT's API  # type: ignore[attr-defined]
            names.add(f"{node.value.attr}.{node.attr}")  # type: ignore[attr-defined]
    return names


# What TensorRT returns, for the backend's local variables: constructor or factory -> class.
FACTORIES = {
    "Builder": "Builder",
    "OnnxParser": "OnnxParser",
    "Runtime": "Runtime",
    "Logger": "Logger",
    "create_network": "INetworkDefinition",
    "create_builder_config": "IBuilderConfig",
    "create_optimization_profile": "IOptimizationProfile",
    "deserialize_cuda_engine": "ICudaEngine",
    "create_execution_context": "IExecutionContext",
    "create_engine_inspector": "EngineInspector",
    "create_timing_cache": "ITimingCache",
    "get_timing_cache": "ITimingCache",
}


def _var(target: ast.expr) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    ):
        return f"self.{target.attr}"
    return None


def member_calls(source: Path) -> set[str]:
    """`Class.member` for members used on objects TensorRT returned (builder.create_network, ...)."""
    tree = ast.parse(source.read_text())
    types: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else None
            if name in FACTORIES:
                for target in node.targets:
                    if _var(target):
                        types[_var(target)] = FACTORIES[name]  # type: ignore[index]
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = _var(node.value)
            if owner in types:
                used.add(f"{types[owner]}.{node.attr}")
    return used


def config_names() -> dict[str, set[int]]:
    """Names the pure mapping can hand to getattr(trt.<Enum>, name), with the majors using them."""
    out: dict[str, set[int]] = {}
    base = {"gpu_workspace": 1, "host_memory": 1}
    options = [
        "version_compatible",
        "exclude_lean_runtime",
        "refit",
        "strip_plan",
        "weight_streaming",
    ]
    for major, typing, precision, level, release, on in product(
        (10, 11),
        ("strong", "weak"),
        ("fp32", "fp16", "bf16", *trt_config.QUANTIZED),
        trt_config.HARDWARE_LEVELS,
        (False, True),
        (False, True),
    ):
        trt = {
            "optimization_level": 3,
            "typing": typing,
            "hardware_compatibility": level,
            "max_aux_streams": None,
            "timing_cache": "t.cache",
            "tactic_dram": True,
            **dict.fromkeys(options, on),
        }
        try:
            cfg = trt_config.builder_config(
                {**base, "tensorrt": trt}, precision, [], major, release
            )
        except TrtbuildError:
            continue
        names = [f"NetworkDefinitionCreationFlag.{f}" for f in cfg.network_flags]
        names += [f"BuilderFlag.{f}" for f in cfg.builder_flags]
        names += [f"MemoryPoolType.{p}" for p in cfg.memory_pools]
        names += [
            f"HardwareCompatibilityLevel.{cfg.hardware_compatibility}",
            f"ProfilingVerbosity.{cfg.profiling_verbosity}",
        ]
        for name in names:
            out.setdefault(name, set()).add(major)
    return out


def test_every_static_name_exists_in_every_supported_release() -> None:
    names = used_names(SOURCE)
    assert {"Builder", "OnnxParser", "Runtime", "MemoryPoolType", "TensorIOMode.INPUT"} <= names
    for release in RELEASES:
        missing = sorted(n for n in names if n not in surface(release))
        assert not missing, f"TensorRT {release} has no {missing}"


def test_every_member_of_a_tensorrt_object_exists_in_every_release() -> None:
    members = member_calls(SOURCE)
    expected = {
        "Builder.build_serialized_network",
        "IBuilderConfig.set_memory_pool_limit",
        "OnnxParser.parse_from_file",
        "IExecutionContext.execute_async_v3",
        "ICudaEngine.num_io_tensors",
        "IOptimizationProfile.set_shape",
        "EngineInspector.get_engine_information",
        "ITimingCache.serialize",
    }
    assert expected <= members, expected - members
    for release in RELEASES:
        missing = sorted(m for m in members if m not in surface(release))
        assert not missing, f"TensorRT {release} has no {missing}"


def test_names_from_the_config_tables_exist_where_they_are_used() -> None:
    names = config_names()
    assert "BuilderFlag.FP16" in names and names["BuilderFlag.FP16"] == {10}  # guarded: 10.x only
    for name, majors in names.items():
        for release, major in RELEASES.items():
            if major in majors:
                assert name in surface(release), (
                    f"{name} used with TensorRT {major} but absent in {release}"
                )


def test_the_checker_catches_a_missing_name(tmp_path: Path) -> None:
    fake = tmp_path / "b.py"
    fake.write_text("def f():\n    trt = _trt()\n    return trt.BuilderFlag.FP16, trt.Builder\n")
    assert used_names(fake) == {"BuilderFlag", "BuilderFlag.FP16", "Builder"}
    assert "BuilderFlag.FP16" not in surface("11.1")


def test_run_without_tensorrt_is_one_line_error(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trtbuild.cli import main

    assert main(["run", str(recipes / "resnet.toml"), "--backend", "tensorrt"]) == 1
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("trtbuild: error:")]
    assert len(errors) == 1
    assert "backend 'tensorrt' is not available" in errors[0] and "pip install" in errors[0]


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_quantized_configs_exist_in_every_release(release: str) -> None:
    """int8/int4/fp8 targets use only names each release has, and never BuilderFlag.INT8 (gone
    in 11.1, and the implicit calibration it meant with it)."""
    base = {"gpu_workspace": 1, "host_memory": 1}
    trt = {
        "optimization_level": 3,
        "typing": "strong",
        "hardware_compatibility": "none",
        "max_aux_streams": None,
        "timing_cache": None,
        "tactic_dram": True,
        **dict.fromkeys(
            [
                "version_compatible",
                "exclude_lean_runtime",
                "refit",
                "strip_plan",
                "weight_streaming",
            ],
            False,
        ),
    }
    assert "BuilderFlag.INT8" not in surface("11.1")  # what the test guards against
    for precision in trt_config.QUANTIZED:
        cfg = trt_config.builder_config(
            {**base, "tensorrt": trt}, precision, [], RELEASES[release], False
        )
        names = [f"NetworkDefinitionCreationFlag.{f}" for f in cfg.network_flags]
        names += [f"BuilderFlag.{f}" for f in cfg.builder_flags]
        assert "NetworkDefinitionCreationFlag.STRONGLY_TYPED" in names
        assert not {"BuilderFlag.INT8", "BuilderFlag.INT4", "BuilderFlag.FP8"} & set(names)
        assert set(names) <= surface(release), release
