"""TensorRT backend (10.x and 11.x): ONNX -> trt.OnnxParser -> build_serialized_network.

TensorRT cannot be installed where trtbuild is developed (no GPU, PyPI has only download stubs).
This module is written against the documented Python API and checked, name by name, against
the API surface of TensorRT 10.13, 10.16 and 11.1 (tests/test_tensorrt_api.py). Every `trt.`
name used here must exist in all three, or sit behind a version guard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.backends.base import EngineIO, TensorIO
from trtbuild.distributions import ABSENT, version
from trtbuild.errors import TrtbuildError

if TYPE_CHECKING:
    from trtbuild.backends.trt_config import BuilderConfig

INSTALL_HINT = (
    "pip install 'trtbuild[tensorrt]' (or tensorrt-cu12) on a machine with an NVIDIA GPU and "
    "driver; --backend onnxruntime builds on the CPU"
)
TRT_PACKAGES = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def _trt() -> Any:
    import tensorrt as trt  # the real module; nothing here fakes it

    return trt


def trt_version() -> str | None:
    for name in TRT_PACKAGES:
        found = version(name)
        if found != ABSENT:
            return found
    return None


def gpu_facts() -> dict[str, str] | None:
    """Name, compute capability and driver of GPU 0 from nvidia-smi; None without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    name, capability, driver = (s.strip() for s in proc.stdout.splitlines()[0].split(","))
    return {"gpu": name, "compute_capability": capability, "driver": driver}


class TensorRTEngine:
    """One deserialised engine; runs on torch CUDA tensors, which stay on the GPU between parts."""

    def __init__(self, path: Path) -> None:
        self.logger, self.runtime, self.engine = _deserialize(path)
        self.context = self.engine.create_execution_context()
        self.input_names, self.output_names = _io_names(self.engine)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        stream = torch.cuda.current_stream()
        keep = []
        for name in self.input_names:
            tensor = feeds[name].contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(self.engine.get_tensor_dtype(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise TrtbuildError("TensorRT execute_async_v3 failed")
        return outputs


def _deserialize(path: Path) -> tuple[Any, Any, Any]:
    """(logger, runtime, engine): the runtime must outlive the engine it made."""
    trt = _trt()
    logger = trt.Logger()
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise TrtbuildError(
            f"{path}: TensorRT could not deserialise this engine (built for another GPU or version?)"
        )
    return logger, runtime, engine


def load_plugins(paths: Sequence[str]) -> None:
    """Register custom-layer plugin libraries with TensorRT's plugin registry (the parser and
    the runtime find their creators there): IPluginRegistry.load_library, once per path."""
    if not paths:
        return
    registry = _trt().get_plugin_registry()
    for path in paths:
        if path not in _loaded_plugins:
            if registry.load_library(path) is None:
                raise TrtbuildError(f"{path}: TensorRT could not load this plugin library")
            _loaded_plugins.add(path)


_loaded_plugins: set[str] = set()


def _io_names(engine: Any) -> tuple[list[str], list[str]]:
    trt = _trt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
    return [n for n in names if is_input[n]], [n for n in names if not is_input[n]]


def _dtype_name(dtype: Any) -> str:
    """A trt.DataType by its numpy/torch name."""
    trt = _trt()
    table = {
        trt.DataType.FLOAT: "float32",
        trt.DataType.HALF: "float16",
        trt.DataType.BF16: "bfloat16",
        trt.DataType.INT32: "int32",
        trt.DataType.INT64: "int64",
        trt.DataType.BOOL: "bool",
        trt.DataType.INT8: "int8",
        trt.DataType.UINT8: "uint8",
    }
    return table[dtype]


def _torch_dtype(dtype: Any) -> Any:
    import torch

    return getattr(torch, _dtype_name(dtype))


class TensorRTBackend:
    name = "tensorrt"
    engine_suffix = ".engine"

    def available(self) -> str | None:
        if trt_version() is None:  # installed distributions, no import machinery
            return f"the tensorrt Python package is not installed ({INSTALL_HINT})"
        if gpu_facts() is None:
            return f"no NVIDIA GPU or driver answered nvidia-smi ({INSTALL_HINT})"
        return None

    def fingerprint(self) -> dict[str, str]:
        facts = gpu_facts() or {}
        return {"backend": self.name, "tensorrt": trt_version() or "unknown", **facts}

    def build(self, onnx_path: Path, settings: Mapping[str, Any], out: Path) -> dict[str, Any]:
        trt = _trt()
        major = int(trt.__version__.split(".")[0])
        from trtbuild.backends.trt_config import builder_config

        config_plan = builder_config(
            dict(settings), settings["precision"], settings["inputs"], major, settings["release"]
        )
        load_plugins(settings.get("plugin_paths", []))
        logger = trt.Logger()
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(trt, config_plan))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):  # reads external weight data beside it
            errors = [parser.get_error(i) for i in range(parser.num_errors)]
            detail = "; ".join(f"node {e.node_name() or e.node()}: {e.desc()}" for e in errors[:3])
            raise TrtbuildError(f"TensorRT's ONNX parser rejected this part: {detail}")
        config = builder.create_builder_config()
        cache_path = (
            Path(settings["timing_cache_path"]) if settings.get("timing_cache_path") else None
        )
        apply_config(trt, builder, config, config_plan, cache_path)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise TrtbuildError("TensorRT could not build this part (see the builder log above)")
        out.write_bytes(memoryview(serialized))
        sidecars = [self._layers(trt, logger, bytes(memoryview(serialized)), out)]
        timing = config.get_timing_cache()
        if timing is not None:
            cache_out = out.with_name(out.name + ".timing.cache")
            cache_out.write_bytes(memoryview(timing.serialize()))
            sidecars.append(cache_out.name)
        return {"tensorrt": trt.__version__, "sidecars": sidecars}

    def _layers(self, trt: Any, logger: Any, plan: bytes, out: Path) -> str:
        """The engine inspector's layer JSON: what `trtbuild verify` compares when bytes differ."""
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        inspector = engine.create_engine_inspector()
        info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        path = out.with_name(out.name + ".layers.json")
        path.write_text(json.dumps(json.loads(info), indent=1, sort_keys=True))
        return path.name

    def load(
        self, engine_path: Path, plugins: Sequence[str] = (), once: bool = False
    ) -> TensorRTEngine:
        load_plugins(plugins)
        return TensorRTEngine(engine_path)

    def describe(self, engine_path: Path) -> EngineIO:
        """From the deserialised engine: -1 dimensions (optimisation profiles) become "?"."""
        _, _, engine = _deserialize(engine_path)
        inputs, outputs = _io_names(engine)

        def io(name: str) -> TensorIO:
            shape = [int(d) if d >= 0 else "?" for d in engine.get_tensor_shape(name)]
            return TensorIO(name, _dtype_name(engine.get_tensor_dtype(name)), shape)

        return EngineIO([io(n) for n in inputs], [io(n) for n in outputs])

    def to_native(self, tensor: Any) -> Any:
        return tensor.cuda()

    def to_torch(self, value: Any) -> Any:
        return value.cpu()


def _network_flags(trt: Any, plan: BuilderConfig) -> int:
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def apply_config(
    trt: Any, builder: Any, config: Any, plan: BuilderConfig, timing_cache: Path | None
) -> None:
    """The thin part: the plain description onto a TensorRT IBuilderConfig."""
    for pool, size in plan.memory_pools.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), size)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    config.builder_optimization_level = plan.optimization_level
    config.hardware_compatibility_level = getattr(
        trt.HardwareCompatibilityLevel, plan.hardware_compatibility
    )
    config.profiling_verbosity = getattr(trt.ProfilingVerbosity, plan.profiling_verbosity)
    if plan.max_aux_streams is not None:
        config.max_aux_streams = plan.max_aux_streams
    for profile_plan in plan.profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_plan.shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache else b"")
    config.set_timing_cache(cache, False)
