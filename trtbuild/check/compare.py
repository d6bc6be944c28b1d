"""The check's comparison (worker side, no torch): a target's part engines against the reference.

Each part engine is loaded once and run twice per sample: on the reference's own input tensors
(its figures say which part deviates) and on what the engines before it produced (the chain, end
to end: its model outputs decide whether the target passes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trtbuild.check import data as checkdata
from trtbuild.errors import TrtbuildError

BETWEEN = "*"  # the tolerance key of the tensors passed between parts


CHUNK = 1 << 18  # elements per step: float64 temporaries of 2 MiB each, whatever the tensor's size


def compare(engine: np.ndarray, ref: np.ndarray, tol: dict[str, Any]) -> dict[str, Any]:
    """Figures of one tensor: max_abs, rel_l2 = ||e - r|| / ||r|| over the reference's finite
    values, ref_max_abs = max |r|, `nonfinite` = engine values that are not finite where the
    reference is, `outside` = values beyond atol + rtol |r| (when either is set), and whether
    all of it is in `tol`.

    rel_l2 holds unless every difference is within `atol`: a reference that is zero up to
    rounding (a normalised tensor's mean) has a rel_l2 of noise over noise, and an atol says
    which differences are noise, as in numpy.allclose and Polygraphy's comparator.
    Computed at float64, CHUNK elements at a time: a model's logits are often the largest
    tensor of its check, and the check process has the target's budget.
    """
    if engine.shape != ref.shape:
        return {"passed": False, "error": f"shape {list(engine.shape)} != {list(ref.shape)}"}
    atol, rtol = tol.get("atol"), tol.get("rtol")
    engine_flat, ref_flat = engine.reshape(-1), ref.reshape(-1)
    nonfinite = outside = 0
    error2 = norm2 = max_abs = ref_max_abs = 0.0
    for start in range(0, ref_flat.size, CHUNK):
        a = engine_flat[start : start + CHUNK].astype(np.float64)
        r = ref_flat[start : start + CHUNK].astype(np.float64)
        finite = np.isfinite(r)
        nonfinite += int(np.count_nonzero(finite & ~np.isfinite(a)))
        both = finite & np.isfinite(a)
        diff = np.abs(a[both] - r[both])
        norm2 += float(np.dot(r[finite], r[finite]))
        error2 += float(np.dot(diff, diff))
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
        if finite.any():
            ref_max_abs = max(ref_max_abs, float(np.abs(r[finite]).max()))
        if atol is not None or rtol is not None:
            bound = (atol or 0.0) + (rtol or 0.0) * np.abs(r[both])
            outside += int(np.count_nonzero(diff > bound))
    norm, error = math.sqrt(norm2), math.sqrt(error2)
    rel_l2 = error / norm if norm > 0 else (0.0 if error == 0 else float("inf"))
    close = rel_l2 <= tol["rel_l2"] or (atol is not None and max_abs <= atol)
    return {
        "max_abs": max_abs,
        "rel_l2": rel_l2,
        "ref_max_abs": ref_max_abs,
        "nonfinite": nonfinite,
        "outside": outside,
        "passed": nonfinite == 0 and outside == 0 and close,
    }


class CheckRequest(Protocol):
    """What a check process is given (trtbuild.execution.jobs.CheckJob has these fields)."""

    @property
    def backend(self) -> str: ...
    @property
    def reference(self) -> str: ...  # the reference file (trtbuild.check.data)
    @property
    def parts(self) -> list[dict[str, Any]]: ...  # {"engine", "inputs", "outputs"}
    @property
    def outputs(self) -> list[str]: ...  # the model's outputs, in order
    @property
    def samples(self) -> int: ...
    @property
    def tolerances(self) -> dict[str, dict[str, Any]]: ...  # per output; "*": between parts
    @property
    def plugins(self) -> list[str]: ...  # custom-operator libraries


def run_check(job: CheckRequest) -> dict[str, Any]:
    """Per part (on the reference's inputs) and per model output (the chain) and sample: figures
    as `compare` gives them, with the sample's input shapes."""
    from trtbuild.backends import get_backend

    backend = get_backend(job.backend)
    ref = np.load(job.reference, allow_pickle=False)
    produced = {n for p in job.parts for n in p["outputs"]}
    model_inputs = sorted({n for p in job.parts for n in p["inputs"] if n not in produced})
    shapes = [
        {n: list(ref[checkdata.key(k, n)].shape) for n in model_inputs} for k in range(job.samples)
    ]
    chain = [{n: ref[checkdata.key(k, n)] for n in model_inputs} for k in range(job.samples)]
    later = checkdata.read_later([p["inputs"] for p in job.parts], job.outputs)
    parts = []
    for index, part in enumerate(job.parts):
        try:
            engine = backend.load(Path(part["engine"]), job.plugins, once=True)
        except Exception as exc:  # an engine that does not load does not compute the model
            raise TrtbuildError(f"part {index}: its engine does not load: {exc}") from None
        dtypes = {t.name: t.dtype for t in backend.describe(Path(part["engine"])).inputs}
        figures = []
        for k in range(job.samples):
            own = _run(
                backend, engine, part["inputs"], dtypes, lambda n, k=k: ref[checkdata.key(k, n)]
            )
            for name in part["outputs"]:
                tol = job.tolerances.get(name, job.tolerances[BETWEEN])
                figures.append(
                    {
                        "output": name,
                        "shape": shapes[k],
                        **compare(own[name], ref[checkdata.key(k, name)], tol),
                    }
                )
            outs = _run(backend, engine, part["inputs"], dtypes, chain[k].__getitem__)
            chain[k].update(outs)
            for name in [n for n in chain[k] if n not in later[index]]:
                del chain[k][name]
        del engine
        parts.append(
            {"index": index, "passed": all(f["passed"] for f in figures), "figures": figures}
        )
    outputs = [
        {
            "output": name,
            "shape": shapes[k],
            **compare(chain[k][name], ref[checkdata.key(k, name)], job.tolerances[name]),
        }
        for k in range(job.samples)
        for name in job.outputs
    ]
    return {
        "passed": all(o["passed"] for o in outputs),
        "outputs": outputs,
        "parts": parts,
    }


def _run(
    backend: Any, engine: Any, names: list[str], dtypes: dict[str, str], value: Any
) -> dict[str, np.ndarray]:
    feeds = {
        n: _native(backend, np.ascontiguousarray(value(n).astype(_np_dtype(dtypes[n]))))
        for n in names
        if n in dtypes
    }
    return {n: _numpy(backend, v) for n, v in engine.run(feeds).items()}


def _np_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _native(backend: Any, array: np.ndarray) -> Any:
    if backend.name == "onnxruntime":
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array)
    import torch  # a backend whose engines take torch tensors (TensorRT)

    return backend.to_native(torch.from_numpy(array))


def _numpy(backend: Any, value: Any) -> np.ndarray:
    if backend.name == "onnxruntime":
        return np.asarray(value.numpy())
    return backend.to_torch(value).float().cpu().numpy()
