"""Only worker processes import torch: the orchestrator (CLI, planner, store, executor) never does.

The modules that import torch are listed here, and the test keeps the list honest both ways.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import trtbuild

# Worker side: model import and export, weights, part export, transformers support.
TORCH_MODULES = {
    "trtbuild.frontend",
    "trtbuild.weights",
    "trtbuild.partexport",
    "trtbuild.hf",
}
HEAVY = ("torch", "onnx", "onnxscript", "transformers")


def imported_after(module: str) -> list[str]:
    code = (
        f"import sys, json, importlib; importlib.import_module({module!r}); "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_only_worker_modules_import_torch() -> None:
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(trtbuild.__path__, "trtbuild.")
        if "__main__" not in m.name
    )
    assert set(modules) >= TORCH_MODULES
    # One interpreter imports every orchestrator-side module: none of them may pull torch in.
    others = [m for m in modules if m not in TORCH_MODULES]
    code = (
        "import sys, json, importlib\n"
        f"for name in {others!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], "an orchestrator-side module imports torch or onnx"
    for module in sorted(TORCH_MODULES):
        assert "torch" in imported_after(module), f"{module} is listed but does not import torch"
