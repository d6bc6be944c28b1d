"""Coarsening: chains that no optimal plan needs to cut become one node of the planning problem.

Op v joins the group of op u when all of these hold (structure and sizes only, no op names):
  1. u is v's only producing op (v's other inputs, if any, are model inputs);
  2. v is the only reader of every output of u;
  3. v holds no weights (no parameter, buffer or constant);
  4. v's outputs hold no more bytes than u's.
Views, casts to a narrower type, activations, dropout, softmax and reductions after a single
producer qualify; a normalisation with weights does not.

Why no optimal cut is lost: take any feasible plan with v in a later part than u. Move v into
u's part. v's only predecessor is u, so every part is still predecessor-closed; no weight moves,
so every part's predicted peak is unchanged (a part left empty is dropped: fewer parts); u's
outputs stop crossing (v read them alone) and at most v's outputs start crossing, so the boundary
bytes do not grow (4). Each merge keeps the optimum of the graph before it, hence of the original
(tests/test_planner.py checks this against the uncoarsened optimum on random graphs).
"""

from __future__ import annotations

from trtbuild.model.graph import OpGraph, TensorInfo
from trtbuild.planner.problem import Problem


def coarsen(graph: OpGraph) -> list[list[str]]:
    """Groups of ops, in topological order of their first op (see the module docstring)."""
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
        if len(producers) == 1 and not op.weights:
            (prod,) = producers
            assert prod is not None
            sole_reader = readers.get(prod, set()) == {op.name}
            if sole_reader and _bytes(op.outputs) <= _bytes(graph.op(prod).outputs):
                group_of[op.name] = group_of[prod]
                groups[group_of[prod]].append(op.name)
                continue
        group_of[op.name] = len(groups)
        groups.append([op.name])
    return groups


def _bytes(tensors: list[TensorInfo]) -> int:
    return sum(t.bytes for t in tensors)


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
