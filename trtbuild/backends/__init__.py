"""Engine builders and runtimes (ONNX Runtime, TensorRT): the registry of names to backends, and
the choice behind backend = "auto".

May import: trtbuild.errors only; a backend imports its own library (onnxruntime, tensorrt)
lazily.
"""

from __future__ import annotations

from trtbuild.backends.base import Backend, Engine, EngineIO, TensorIO
from trtbuild.backends.onnxruntime import OnnxRuntimeBackend
from trtbuild.errors import TrtbuildError

__all__ = [
    "Backend",
    "Engine",
    "EngineIO",
    "TensorIO",
    "backend_class",
    "get_backend",
    "resolve_backend",
]


def _registry() -> dict[str, Backend]:
    from trtbuild.backends.tensorrt import TensorRTBackend

    return {"onnxruntime": OnnxRuntimeBackend(), "tensorrt": TensorRTBackend()}


def backend_class(name: str) -> Backend:
    """The backend called `name`, usable here or not (fingerprints need no working backend)."""
    backends = _registry()
    if name not in backends:
        raise TrtbuildError(f"unknown backend {name!r}: expected one of {sorted(backends)}")
    return backends[name]


def get_backend(name: str) -> Backend:
    backend = backend_class(name)
    reason = backend.available()
    if reason:
        raise TrtbuildError(f"backend '{name}' is not available: {reason}")
    return backend


def resolve_backend(name: str) -> str:
    """ "auto" -> "tensorrt" when it imports and sees a CUDA GPU, else "onnxruntime"."""
    if name != "auto":
        return name
    return "tensorrt" if _registry()["tensorrt"].available() is None else "onnxruntime"
