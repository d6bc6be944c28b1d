"""ONNX Runtime (CPU): the embedded default backend; runs everywhere, carries the tests.

"Building" an engine = letting ONNX Runtime optimise the graph and serialise the result
(ORT_ENABLE_EXTENDED: fusions that hold on any CPU of the same ISA); loading applies the rest.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtbuild.backends.base import EngineIO, TensorIO
from trtbuild.distributions import ABSENT, version
from trtbuild.errors import TrtbuildError


class OnnxRuntimeEngine:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Feeds and results are OrtValues, so tensors pass from engine to engine untouched."""
        values = self.session.run_with_ort_values(self.output_names, dict(feeds))
        return dict(zip(self.output_names, values))


class OnnxRuntimeBackend:
    name = "onnxruntime"
    engine_suffix = ".ort.onnx"

    def available(self) -> str | None:
        if version("onnxruntime") == ABSENT:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    def fingerprint(self) -> dict[str, str]:
        return {
            "backend": self.name,
            "onnxruntime": version("onnxruntime"),
            "device": f"cpu-{platform.machine()}-{_cpu_isa()}",
        }

    def build(self, onnx_path: Path, settings: Mapping[str, Any], out: Path) -> dict[str, Any]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out)
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        # Kernels are created after the optimised model is saved: their prepacked weight copies
        # (MatMul/Gemm B) change nothing in the output, yet held 1x the weights on top (BERT's
        # build 2.2x its weights, measured; see README "Memory model").
        options.add_session_config_entry("session.disable_prepacking", "1")
        sidecar = out.name + ".data"  # weights stay outside the graph: no 2 GB protobuf limit
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", sidecar
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        for library in settings.get("plugin_paths", []):
            options.register_custom_ops_library(library)
        try:
            ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT reports unsupported ops and types as generic failures
            if _no_room(str(exc), onnx_path, out):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out)) from exc
            reason = ort_reason(str(exc), str(settings.get("precision", "")))
            raise TrtbuildError(
                f"onnxruntime cannot build this part on the CPU: {reason}"
            ) from None
        sidecars = [sidecar] if (out.parent / sidecar).is_file() else []
        return {
            "optimization_level": "extended",
            "provider": "CPUExecutionProvider",
            "sidecars": sidecars,
        }

    def to_native(self, tensor: Any) -> Any:
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(tensor.detach().cpu().contiguous().numpy())

    def to_torch(self, value: Any) -> Any:
        import torch

        return torch.from_numpy(value.numpy())

    def load(
        self, engine_path: Path, plugins: Sequence[str] = (), once: bool = False
    ) -> OnnxRuntimeEngine:
        import onnxruntime as ort

        options = ort.SessionOptions()
        for library in plugins:
            options.register_custom_ops_library(library)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Engines of a chain run one after another: an idle pool spinning for work would steal
        # the cores of the engine that runs next (measured: benchmarks/runtime.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if once:  # prepacking copies MatMul/Conv weights into a faster layout: a second copy
            options.add_session_config_entry("session.disable_prepacking", "1")
        session = ort.InferenceSession(
            str(engine_path), options, providers=["CPUExecutionProvider"]
        )
        return OnnxRuntimeEngine(session)

    def describe(self, engine_path: Path) -> EngineIO:
        """Read from the ONNX graph alone: the weights file beside it is never opened."""
        import onnx

        graph = onnx.load(str(engine_path), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        return EngineIO(
            [_tensor_io(v) for v in graph.input if v.name not in weights],
            [_tensor_io(v) for v in graph.output],
        )


def _tensor_io(value: Any) -> TensorIO:
    import onnx

    tensor = value.type.tensor_type
    shape: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
    return TensorIO(value.name, str(dtype), shape)


def _cpu_isa() -> str:
    """The vector extensions ONNX Runtime's kernels pick from (x86 flags, or the machine)."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("flags", "Features"))
        )
    except (OSError, StopIteration):
        return "unknown"
    wanted = (
        "avx",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "fma",
        "f16c",
        "asimd",
        "sve",
        "bf16",
    )
    return "+".join(f for f in wanted if f in flags) or "baseline"


def ort_reason(message: str, precision: str = "") -> str:
    """ONNX Runtime's reason without the scratch path it names (gone once the job ends), and
    what a user can do about a type the CPU kernels lack."""
    detail = message.split(" : ")[-1].strip().splitlines()[0]
    detail = re.sub(r"Load model from \S+ failed:\s*", "", detail)
    if "bfloat16" in detail or (precision == "bf16" and "NOT_IMPLEMENTED" in message):
        detail += " (the CPU backend has no bfloat16 kernel for this op: use fp32 or fp16 here)"
    if "is not a registered function/op" in detail:
        detail += " (a custom operator: name its library in the model's `plugins`)"
    return detail


def _no_room(message: str, onnx_path: Path, out: Path) -> bool:
    """ORT's "Failed to write ..." carries no errno: a failed write where less room is left than
    the part's ONNX and weights (what its engine holds) is a full disk."""
    if "write" not in message.lower():
        return False
    need = sum(f.stat().st_size for f in onnx_path.parent.iterdir() if f.is_file())
    return shutil.disk_usage(out.parent).free < need
