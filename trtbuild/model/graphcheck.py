"""Mistakes a graph shows before anything is exported: an integer tensor into a float layer.

Such a model traces (fake tensors do not check it) and fails only when a backend loads the part,
late and far from its cause; here it is one error that names the op and the tensors, at plan time.
"""

from __future__ import annotations

from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import SYMINT, OpGraph

# Ops that multiply their input by weights: every tensor operand must have one dtype.
WEIGHTED = ("aten.linear", "aten.conv", "aten.mm", "aten.addmm", "aten.bmm", "aten.matmul")
FLOATS = ("float", "bfloat")


def check_dtypes(graph: OpGraph, model: str) -> None:
    """Raise TrtbuildError for the first weighted op that mixes integer and float operands."""
    for op in graph.ops:
        if not op.target.startswith(WEIGHTED):
            continue
        operands = [(t, graph.tensor(t).dtype) for t in op.inputs]
        operands += [(w, graph.weights[w].dtype) for w in op.weights]
        operands = [(name, dtype) for name, dtype in operands if dtype != SYMINT]
        floats = [o for o in operands if o[1].startswith(FLOATS)]
        others = [o for o in operands if not o[1].startswith(FLOATS)]
        if floats and others:
            (bad, bad_dtype), (good, good_dtype) = others[0], floats[0]
            origin = "input" if bad in {t.name for t in graph.inputs} else "tensor"
            raise TrtbuildError(
                f"model '{model}': op '{op.name}' ({op.target}) multiplies {origin} '{bad}' "
                f"({bad_dtype}) with '{good}' ({good_dtype}); declare the input as a float dtype "
                "in the recipe, or convert it in forward() (an embedding takes integer ids)"
            )
