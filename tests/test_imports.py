"""Only worker processes import torch: the orchestrator (CLI, planner, store, executor) never does.
Packages import one way, down the pipeline (LAYERS).

The modules that import torch are listed here, and the test keeps the list honest both ways.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import networkx as nx

import trtbuild

# Worker side: model import and export, weights, part export, transformers support.
TORCH_MODULES = {
    "trtbuild.model.frontend",
    "trtbuild.model.examples",
    "trtbuild.model.lazyweights",
    "trtbuild.model.weights",
    "trtbuild.model.partexport",
    "trtbuild.model.partdims",
    "trtbuild.model.hf",
    "trtbuild.model.binding",
    "trtbuild.model.ownstate",
    "trtbuild.check.reference",
    "trtbuild.check.calibrate",
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


def module_imports(path: Path, package: Path) -> set[str]:
    """trtbuild modules that `path` imports when it is imported (not in functions, not for types)."""

    def is_module(name: str) -> bool:
        where = package.parent / name.replace(".", "/")
        return where.with_suffix(".py").exists() or where.is_dir()

    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            found.update(n for n in names if is_module(n))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("trtbuild")}


def test_module_imports_point_one_way() -> None:
    package = Path(trtbuild.__file__).parent
    graph = nx.DiGraph()
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        graph.add_node(name)
        for target in module_imports(path, package):
            if target != name and not name.startswith(target + "."):  # a package's own init
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:3]}"


# The pipeline, bottom up: a module may import its own package and those before it, never after
# (each package's __init__ docstring says the same). Every import counts: at module level, in a
# function, or for type checking only.
LAYERS = [
    "errors",
    "distributions",
    "recipe",
    "cache",
    "model",
    "backends",
    "check",
    "release",
    "planner",
    "execution",
    "orchestrate",
    "runtime",
    "deploy",
    "cli",
    "__init__",
    "__main__",
]
TOP_LEVEL_MODULES = 7  # at most, besides the packages


def upward_imports(package: Path) -> list[str]:
    """Every import of a later layer by an earlier one, as "module -> imported"."""
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = (
                    [node.module]
                    if "." in node.module
                    else [f"trtbuild.{a.name}" for a in node.names]
                )
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if not name.startswith("trtbuild."):
                    continue
                target = name.split(".")[1]
                if target in LAYERS and LAYERS.index(target) > LAYERS.index(source):
                    found.append(f"{'.'.join(parts)} -> {name}")
    return found


def test_packages_import_down_the_pipeline_only() -> None:
    package = Path(trtbuild.__file__).parent
    top = sorted(p.name for p in package.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES, top
    packages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    assert {p.removesuffix(".py") for p in [*top, *packages]} <= set(LAYERS)
    for name in packages:  # each says what it owns and what it may import
        doc = ast.get_docstring(ast.parse((package / name / "__init__.py").read_text()))
        assert doc and "May import" in doc, name
    assert upward_imports(package) == []


def test_an_upward_import_is_caught(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "trtbuild"
    shutil.copytree(
        Path(trtbuild.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    sizes = copy / "recipe" / "sizes.py"
    sizes.write_text(
        sizes.read_text() + "\n\ndef f() -> None:\n    from trtbuild.orchestrate import build\n"
    )
    assert upward_imports(copy) == ["recipe.sizes -> trtbuild.orchestrate"]
