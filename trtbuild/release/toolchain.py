"""Versions of the tools that shape an engine, read from package metadata (no heavy import)."""

from __future__ import annotations

import importlib.metadata
import platform

TOOLCHAIN_PACKAGES = ("torch", "onnx", "onnxscript", "onnx-ir", "trtbuild")


def toolchain() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOLCHAIN_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
