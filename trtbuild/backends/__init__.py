"""Engine builders and runtimes (ONNX Runtime, TensorRT): the registry of names to backends, and
the choice behind backend = "auto".

May import: trtbuild.errors only; a backend imports its own library (onnxruntime, tensorrt)
lazily.
"""

from __future__ import annotations

from trtbuild.backends.base import Backend, Engine, EngineIO, TensorIO
from trtbuild.errors import TrtbuildError

NAMES = ("onnxruntime", "tensorrt")

__all__ = [
    "Backend",
    "Engine",
    "EngineIO",
    "TensorIO",
    "backend_class",
    "get_backend",
    "resolve_backend",
]


def backend_class(name: str) -> Backend:
    """The backend called `name`, usable here or not (fingerprints need no working backend);
    only its own module is imported (the no-op run asks one backend for its fingerprint)."""
    if name == "onnxruntime":
        from trtbuild.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tensorrt":
        from trtbuild.backends.tensorrt import TensorRTBackend

        return TensorRTBackend()
    raise TrtbuildError(f"unknown backend {name!r}: expected one of {sorted(NAMES)}")


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
    return "tensorrt" if backend_class("tensorrt").available() is None else "onnxruntime"
