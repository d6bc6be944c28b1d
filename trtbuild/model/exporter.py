"""The ONNX exporter's machinery, imported and built once per process: torch.export's tracer, the
exporter's modules and its operator registry (one, shared by every torch.onnx.export call here).

torch.onnx.export builds the registry of ONNX functions for ATen ops anew on every call
(`ONNXRegistry().from_torchlib(...)` in torch/onnx/_internal/exporter/_compat.py): 0.55 s each
time here, so an export process writing two parts paid 1.1 s for two equal registries. Exporting
only reads it (torch/onnx/_internal/exporter/_core.py, _decomp.py), and trtbuild passes no
`custom_translation_table` (which would add to it), so this process builds one per opset version
and every export call takes that one. The fork server builds it before its first fork; its
children inherit it.
"""

from __future__ import annotations

import inspect
from typing import Any

_exporter_imported = {"modules": False, "registry": False}


def import_exporter(registry: bool = True) -> None:
    """Import the machinery graph and export jobs use: torch.export's tracer (dynamo), the ONNX
    exporter's modules and, with `registry`, its torchlib registry (0.6 s here, which imports
    the torchlib ops), kept for every later torch.onnx.export call of this process.

    A graph job calls this without the registry, inside its depfile recording, so the lock pins
    what it imports (onnx, onnxscript, ml_dtypes, protobuf, ...) whether the job runs in a fresh
    interpreter or forked from the fork server (zygote.py); the registry's build adds no
    distribution to those (measured: onnxscript and torch, already there). The fork server
    imports the modules and builds the registry before its first job.
    """
    if not _exporter_imported["modules"]:
        import torch._dynamo  # noqa: F401
        from torch.onnx._internal.exporter import _registration

        _exporter_imported["modules"] = True
    if registry and not _exporter_imported["registry"]:
        from torch.onnx._internal.exporter import _registration

        _share_registry(_registration.ONNXRegistry)
        _registration.ONNXRegistry.from_torchlib()
        _exporter_imported["registry"] = True


def _share_registry(cls: Any) -> None:
    """Make `cls.from_torchlib` build once per opset version, then return that registry.

    Keyed by the bound arguments, defaults applied: the fork server's `from_torchlib()` and
    torch.onnx.export's `from_torchlib(opset_version=18)` are one registry.
    """
    build = cls.__dict__.get("from_torchlib")
    if not isinstance(build, classmethod):  # another torch: leave it as it is
        return
    signature = inspect.signature(build.__func__)
    built: dict[tuple[Any, ...], Any] = {}

    def shared(klass: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(klass, *args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.items())
        if key not in built:
            built[key] = build.__func__(klass, *args, **kwargs)
        return built[key]

    cls.from_torchlib = classmethod(shared)
