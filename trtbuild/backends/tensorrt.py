"""TensorRT backend (10.x and 11.x). TensorRT cannot be installed where trtbuild is developed."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'trtbuild[tensorrt]' on a machine with an NVIDIA GPU and driver"


class TensorRTBackend:
    name = "tensorrt"
    engine_suffix = ".engine"

    def available(self) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return f"the tensorrt Python package is not installed ({INSTALL_HINT})"
        if shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists():
            return "no NVIDIA GPU or driver found on this machine"
        return None

    def fingerprint(self) -> dict[str, str]:
        raise NotImplementedError("the TensorRT backend is not implemented yet")

    def build(self, onnx_path: Path, settings: Mapping[str, Any], out: Path) -> dict[str, Any]:
        raise NotImplementedError("the TensorRT backend is not implemented yet")

    def load(self, engine_path: Path) -> Any:
        raise NotImplementedError("the TensorRT backend is not implemented yet")
