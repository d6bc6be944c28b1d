"""Versions of the tools that shape an engine, read from package metadata (no heavy import)."""

from __future__ import annotations

import platform

from trtbuild.distributions import version

TOOLCHAIN_PACKAGES = ("torch", "onnx", "onnxscript", "onnx-ir", "trtbuild")


def toolchain() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOLCHAIN_PACKAGES:
        out[name] = version(name)
    return out
