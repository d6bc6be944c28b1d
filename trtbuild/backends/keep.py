"""Which ONNX nodes a recipe's `keep` leaves at fp32 (build process side, no torch): every node
a kept module made, by the name scopes torch.onnx records, and every node that reads its weights.
"""

from __future__ import annotations

import fnmatch
from typing import Any


def kept_nodes(model: Any, globs: list[str]) -> list[str]:
    """Nodes of the modules the recipe keeps at fp32 (`keep`: globs matched against a module's
    name, "blocks.0.norm", or a weight's, "blocks.0.norm.weight"): every node the module made,
    by the name scopes torch.onnx records on each node ("pkg.torch.onnx.name_scopes": an RMS
    norm's Pow and ReduceMean, which read no weight), and every node that reads its weights."""
    if not globs:
        return []

    def kept(name: str) -> bool:
        name = name.removeprefix(WRAPPED)
        return any(fnmatch.fnmatchcase(name, g) for g in globs)

    weights = {i.name for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
        modules = [m for m in _scopes(scopes) if m.startswith(WRAPPED)]
        read = [_weight(n) for n in node.input if n in weights]
        if any(kept(m) for m in modules) or any(kept(w) or kept(_module(w)) for w in read):
            found.append(node.name)
    return found


NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # ['', 'model', 'model.norm', 'pow'] (torch.onnx)


WRAPPED = "model."  # trtbuild.model.graph.WRAPPED: the user's model inside PrecisionWrapper


def _scopes(text: str | None) -> list[str]:
    import ast

    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _weight(name: str) -> str:
    """A weight's module path: lazyweights.attr_name ("w__norm__weight") and a folded
    transpose's mark undone; other names (an ONNX file's) as they are."""
    if name.startswith("w__"):
        return name.removesuffix("__T").removeprefix("w__").replace("__", ".")
    return name


def _module(weight: str) -> str:
    return weight.rpartition(".")[0]
