"""Dynamic sizes by name: each symbol of a model input's size is named after the recipe's input and
axis ("x.0"), and a size's text is its expression in those names ("(x.2 - 1)//2 + 1")."""

from __future__ import annotations

from typing import Any

Symbols = dict[Any, Any]  # sympy.Symbol of the exported program -> the one named for users


def symbol_names(users: list[Any], input_names: list[str]) -> Symbols:
    """Each symbol of a dynamic model input's size -> a symbol named after the recipe's input and
    axis: "x.0" is the size of input x along axis 0. Two inputs that share a size (input_ids and
    attention_mask: one sequence length) share the first one's name. `users`: the exported
    program's placeholders of the model's inputs, in order."""
    import sympy
    import torch

    names: Symbols = {}
    for node, input_name in zip(users, input_names):
        for axis, dim in enumerate(getattr(node.meta.get("val"), "shape", [])):
            expr = dim.node.expr if isinstance(dim, torch.SymInt) else None
            if isinstance(expr, sympy.Symbol) and expr not in names:
                names[expr] = sympy.Symbol(f"{input_name}.{axis}", **expr.assumptions0)
    return names


def size_text(dim: Any, symbols: Symbols) -> str:
    """The symbolic expression of a dynamic size ("x.0", "(x.2 - 1)//2 + 1"), not its example
    value; `symbols` from symbol_names."""
    node = getattr(dim, "node", None)
    return str(node.expr.xreplace(symbols)) if node is not None else str(dim)
