"""Dynamic dimensions of a part: the recipe's ranges and opt sizes carried into each part's
export (worker side; imports torch).

The whole model is exported once with the recipe's ranges (frontend.dynamic_shapes); its graph
names every dynamic size by a symbolic expression of the model inputs' sizes, each named after
its recipe input and axis ("x.0", "((x.2 - 1)//2) + 1", "x.2*x.3"; graph.symbol_names). A part is exported on its own, so each expression on its inputs
becomes a dynamic dimension of that part with the value range the expression takes over the
declared ranges (torch's bound_sympy over program.range_constraints) and, as its example size,
its value at the recipe's opt shapes. The part is then valid for every size in that range, which
includes every size the whole model can hand it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sympy
import torch
import torch.fx as fx

from trtbuild.errors import TrtbuildError
from trtbuild.model.symbols import size_text, symbol_names


class SymbolicSizes:
    """The whole model's symbolic sizes: expression text -> sympy expression, ranges, opt values."""

    def __init__(self, program: Any, input_names: list[str], opt_shapes: list[list[int]]) -> None:
        users = [n for n in program.graph.nodes if n.op == "placeholder"][-len(input_names) :]
        self.symbols = symbol_names(users, input_names)
        self.exprs: dict[str, sympy.Expr] = {}  # OpGraph text ("x.0 - 1") -> program's expr
        for node in program.graph.nodes:
            val = node.meta.get("val")
            for value in val if isinstance(val, (tuple, list)) else [val]:
                dims = getattr(value, "shape", None)
                for dim in [value] if isinstance(value, torch.SymInt) else (dims or []):
                    if isinstance(dim, torch.SymInt):
                        self.exprs.setdefault(size_text(dim, self.symbols), dim.node.expr)
        self.ranges = dict(program.range_constraints)
        self.opt: dict[
            sympy.Symbol, int
        ] = {}  # each root symbol at the shapes traced (examples.py)
        for node, shape in zip(users, opt_shapes):
            for dim, size in zip(node.meta["val"].shape, shape):
                if isinstance(dim, torch.SymInt) and isinstance(dim.node.expr, sympy.Symbol):
                    self.opt[dim.node.expr] = size

    def expr(self, text: str) -> sympy.Expr:
        found = self.exprs.get(text)
        if found is None:
            raise TrtbuildError(f"dynamic size {text!r} is not a size of the model's graph")
        return found

    def value_range(self, text: str) -> tuple[int, int]:
        """(min, max) of the expression over the declared ranges."""
        from torch.utils._sympy.value_ranges import bound_sympy

        bounds = bound_sympy(self.expr(text), self.ranges)
        return int(bounds.lower), int(bounds.upper)

    def example(self, text: str) -> int:
        """The expression's value at the recipe's opt shapes."""
        return int(self.expr(text).xreplace({s: sympy.Integer(v) for s, v in self.opt.items()}))

    def example_tensor(self, shape: list[int | str], dtype: torch.dtype) -> torch.Tensor:
        sizes = [d if isinstance(d, int) else self.example(d) for d in shape]
        return torch.empty(sizes, dtype=dtype, device="meta")

    def dynamic_shapes(self, shapes: list[list[int | str]]) -> tuple[dict[int, Any], ...] | None:
        """One Dim.DYNAMIC per symbolic dimension, with its range. DYNAMIC, not named Dims: two
        inputs with one expression may be found equal (or related) by the part's ops."""
        if not any(isinstance(d, str) for shape in shapes for d in shape):
            return None
        out = []
        for shape in shapes:
            dims = {}
            for axis, dim in enumerate(shape):
                if isinstance(dim, str):
                    lo, hi = self.value_range(dim)
                    if lo != hi:
                        dims[axis] = torch.export.Dim.DYNAMIC(min=lo, max=hi)
            out.append(dims)
        return tuple(out)

    def small_sizes(self) -> bool:
        """A declared range reaches 0 or 1 (see `oblivious_sizes`)."""
        return any(int(r.lower) < 2 for r in self.ranges.values())


@contextlib.contextmanager
def oblivious_sizes(needed: bool) -> Iterator[None]:
    """torch.export specialises a size whose example is 0 or 1 (and any dynamic size whose range
    ends at 2, since it assumes dynamic sizes >= 2). A recipe's dynamic batch with min = 1,
    opt = 1 must still give a graph for every batch in range: with torch's backed-size-oblivious
    mode the tracer reasons about sizes without that special case (the mode torch recommends for
    export). Only turned on when a declared range reaches below 2, so models whose ranges don't
    trace exactly as before."""
    if not needed:
        yield
        return
    import torch.fx.experimental._config as config

    with config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        yield


def size_node(
    graph: fx.Graph,
    env: dict[str, fx.Node],
    dims: dict[str, list[int | str]],
    expr: str,
    sizes: SymbolicSizes | None,
) -> fx.Node | None:
    """A node computing the symbolic size `expr` from the part's tensor inputs' shapes: a
    dimension that is `expr` itself, else the expression over dimensions that are its symbols.
    None when the inputs do not carry it."""
    for tensor, shape in dims.items():
        if expr in shape and tensor in env:
            return graph.call_function(
                torch.ops.aten.sym_size.int, (env[tensor], shape.index(expr))
            )
    if sizes is None or expr not in sizes.exprs:
        return None
    roots: dict[sympy.Symbol, fx.Node] = {}
    for symbol in sizes.expr(expr).free_symbols:
        found = size_node(graph, env, dims, str(sizes.symbols.get(symbol, symbol)), None)
        if found is None:
            return None
        roots[symbol] = found
    return _emit(graph, sizes.expr(expr), roots)


def _emit(graph: fx.Graph, expr: sympy.Expr, roots: dict[sympy.Symbol, fx.Node]) -> Any:
    """fx nodes (operator.add, mul, floordiv on SymInts) computing a size expression."""
    import operator

    from torch.utils._sympy.functions import FloorDiv

    if expr in roots:
        return roots[expr]
    if expr.is_Integer:
        return int(expr)
    args = [_emit(graph, a, roots) for a in expr.args]
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        op = operator.add if isinstance(expr, sympy.Add) else operator.mul
        node = args[0]
        for arg in args[1:]:
            node = graph.call_function(op, (node, arg))
        return node
    if isinstance(expr, FloorDiv):
        return graph.call_function(operator.floordiv, tuple(args))
    raise TrtbuildError(f"cannot compute the dynamic size {expr} inside a part")
