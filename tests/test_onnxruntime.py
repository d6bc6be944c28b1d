"""The ONNX Runtime backend's engines as the check loads them (trtbuild.backends.onnxruntime)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MiB = 1 << 20


def _matmul_model(path: Path, rows: int = 2048, cols: int = 4096) -> int:
    """y = x @ W with W float32 [rows, cols] in an external-data file; W's bytes."""
    weight = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", cols])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data")
    return weight.nbytes


def _peak_after_load(path: Path, once: bool) -> int:
    """VmHWM of a fresh process that loads the engine and runs it once."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from trtbuild.backends.onnxruntime import OnnxRuntimeBackend
        engine = OnnxRuntimeBackend().load(Path({str(path)!r}), once={once})
        engine.run({{"x": __import__("onnxruntime").OrtValue.ortvalue_from_numpy(
            np.ones((4, 2048), np.float32))}})
        print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                   if l.startswith("VmHWM")))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_an_engine_loaded_to_run_once_holds_no_prepacked_copy_of_its_weights(
    tmp_path: Path,
) -> None:
    """The check runs each engine a few times. ONNX Runtime prepacks MatMul weights into a
    second copy for faster repeated runs: a GPT-2 fp16 engine's check process crossed its
    700 MiB budget at 703 MiB for it (its session alone: 563 MiB, 519 without prepacking)."""
    weight_bytes = _matmul_model(tmp_path / "mm.onnx")
    default = _peak_after_load(tmp_path / "mm.onnx", once=False)
    once = _peak_after_load(tmp_path / "mm.onnx", once=True)
    assert once < default - weight_bytes // 2, (once / MiB, default / MiB, weight_bytes / MiB)
