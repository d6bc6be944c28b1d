"""The exporter's operator registry, built once per process (trtbuild.model.exporter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_every_spelling_of_one_opset_gets_the_registry_built_before_the_first_fork() -> None:
    """The fork server builds `ONNXRegistry.from_torchlib()`; torch.onnx.export asks for
    `from_torchlib(opset_version=18)`, the same registry by another spelling. Keyed by the
    spelling, every export built its own (0.4 s each). A fresh interpreter: the registry is
    process-wide."""
    script = textwrap.dedent(
        """
        from torch.onnx._internal.exporter import _constants, _registration
        from trtbuild.model.exporter import import_exporter

        import_exporter()
        cls = _registration.ONNXRegistry
        built = cls.from_torchlib()
        assert cls().from_torchlib(opset_version=_constants.TORCHLIB_OPSET) is built
        assert cls.from_torchlib(_constants.TORCHLIB_OPSET) is built
        other = cls.from_torchlib(opset_version=_constants.TORCHLIB_OPSET + 1)
        assert other is not built and other._opset_version == _constants.TORCHLIB_OPSET + 1
        assert cls.from_torchlib(opset_version=_constants.TORCHLIB_OPSET + 1) is other
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
