"""Coarsening: ops that stay in one engine (fusion groups, view chains) become one node."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from trtbuild.graph import OpGraph
from trtbuild.planner.problem import Problem

ANCHORS = (
    "conv",
    "linear",
    "matmul",
    "mm.",
    "bmm",
    "addmm",
    "baddbmm",
    "einsum",
    "embedding",
    "scaled_dot_product_attention",
)
FOLLOWERS = (
    "batch_norm",
    "layer_norm",
    "group_norm",
    "relu",
    "gelu",
    "silu",
    "sigmoid",
    "tanh",
    "hardtanh",
    "clamp",
    "add",
    "mul",
    "hardswish",
    "leaky_relu",
    "_native_batch_norm",
    "dropout",
)
VIEWS = (
    "view",
    "reshape",
    "flatten",
    "unsqueeze",
    "squeeze",
    "permute",
    "transpose",
    "expand",
    "contiguous",
    "clone",
    "aten.t.",
    "alias",
    "unflatten",
    "aten.to.",
    "_to_copy",
)


def coarsen(graph: OpGraph) -> list[list[str]]:
    """Groups of ops that stay in one engine (fusion groups, view chains), in topological order.

    A merge u -> v happens only when v is u's only reader or u is v's only producer, which can
    never close a cycle.
    """
    readers: dict[str, set[str]] = {}
    for op in graph.ops:
        for t in op.inputs:
            prod = graph.producer(t)
            if prod is not None:
                readers.setdefault(prod, set()).add(op.name)
    group_of: dict[str, int] = {}
    groups: list[list[str]] = []
    for op in graph.ops:
        producers = {graph.producer(t) for t in op.inputs} - {None}
        target = if_any(op.target)
        if len(producers) == 1:
            (prod,) = producers
            assert prod is not None
            head = graph.op(groups[group_of[prod]][0]).target
            sole_reader = readers.get(prod, set()) == {op.name}
            fusable = target(FOLLOWERS) and if_any(head)(ANCHORS) and sole_reader
            if fusable or (target(VIEWS) and not op.weights and sole_reader):
                group_of[op.name] = group_of[prod]
                groups[group_of[prod]].append(op.name)
                continue
        group_of[op.name] = len(groups)
        groups.append([op.name])
    return groups


def if_any(text: str) -> Callable[[Sequence[str]], bool]:
    return lambda needles: any(n in text for n in needles)


def problem_of(graph: OpGraph, groups: list[list[str]]) -> Problem:
    index = {name: i for i, group in enumerate(groups) for name in group}
    weight_ids = {name: i for i, name in enumerate(sorted(graph.weights))}
    edges: set[tuple[int, int]] = set()
    producers, sizes, consumers = [], [], []
    readers: dict[str, set[int]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t, set()).add(index[op.name])
    for op in graph.ops:
        u = index[op.name]
        for out in op.outputs:
            outside = frozenset(readers.get(out.name, set()) - {u})
            for v in outside:
                edges.add((u, v))
            if outside:
                producers.append(u)
                sizes.append(out.bytes)
                consumers.append(outside)
    node_weights = [
        frozenset(weight_ids[w] for name in g for w in graph.op(name).weights) for g in groups
    ]
    weight_bytes = [graph.weights[name].bytes for name in sorted(graph.weights)]
    labels = [g[0] if len(g) == 1 else f"{g[0]}..{g[-1]}" for g in groups]
    return Problem(
        len(groups), sorted(edges), node_weights, weight_bytes, producers, sizes, consumers, labels
    )
