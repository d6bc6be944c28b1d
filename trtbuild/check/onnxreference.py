"""The check's reference for an `onnx:<file>` source (worker side, no torch): ONNX Runtime on the
original graph, as Polygraphy compares (`polygraphy run --onnxrt`), part by part.

Each part of the plan is written again at fp32 exactly as the source has it
(onnxparts.write_part), run on every sample in ONNX Runtime, and removed: the process holds one part's weights at a time, the budget the plan gives a part.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from trtbuild.backends.onnxruntime import ort_reason
from trtbuild.check import data as checkdata
from trtbuild.errors import TrtbuildError
from trtbuild.model.onnxparts import Source, write_part


def session(path: Path, plugins: list[str]) -> Any:
    """An ONNX Runtime CPU session of `path` with the custom-operator libraries `plugins`.

    Optimized as the ONNX Runtime backend builds (ORT_ENABLE_EXTENDED: a Q/DQ graph runs as the
    fused int8 kernels an engine runs, as Polygraphy's default session does), not to the CPU
    layouts of ORT_ENABLE_ALL (their weight copies cost 30 MiB on a 20 MB detector); weights not
    prepacked and activations not pooled in an arena, so the process holds about one part."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_prepacking", "1")
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    )  # activations freed when done, not pooled
    options.log_severity_level = 3
    for library in plugins:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compute(
    source: Source, request: dict[str, Any], root: Path, plugins: list[str]
) -> dict[str, Any]:
    """Write the reference file `request["path"]` (trtbuild.check.data's format) for
    `request["parts"]` (every part of the plan, in order)."""
    samples = checkdata.make_samples(request["samples"], root)
    writer = checkdata.Writer(Path(request["path"]))
    live: list[dict[str, np.ndarray]] = []
    for k, sample in enumerate(samples):
        for name, array in sample.items():
            writer.add(checkdata.key(k, name), array)
        live.append(dict(sample))
    parts = request["parts"]
    later = checkdata.read_later(
        [[t["name"] for t in p["inputs"]] for p in parts], request["outputs"]
    )
    loaded = 0
    scratch = Path(tempfile.mkdtemp(prefix="reference-", dir=Path(request["path"]).parent))
    try:
        for index, part in enumerate(parts):
            path = scratch / f"part{index}.onnx"
            loaded += len(write_part(source, part, path)["weights_loaded"])
            try:
                run = session(path, plugins)
            except Exception as exc:  # ORT reports unknown ops and types as generic failures
                raise TrtbuildError(
                    f"the check's reference: ONNX Runtime cannot run part {index} of the "
                    f"original graph: {ort_reason(str(exc))}"
                ) from None
            names = [t["name"] for t in part["outputs"]]
            for k, env in enumerate(live):
                feeds = {t["name"]: env[t["name"]] for t in part["inputs"]}
                for name, value in zip(names, run.run(names, feeds)):
                    env[name] = value
                    writer.add(checkdata.key(k, name), _float32(value))
                for name in [n for n in env if n not in later[index]]:
                    del env[name]
            del run
            for file in scratch.iterdir():
                file.unlink()
    finally:
        writer.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"samples": len(samples), "weights_loaded": loaded}


def _float32(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.kind == "f" else value
