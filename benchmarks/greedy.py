"""Torch-TensorRT's resource partitioner rule, re-implemented as a baseline.

pytorch/TensorRT py/torch_tensorrt/dynamo/partitioning/_resource_partitioner.py walks the nodes in
graph order, moving them into a left subgraph until its weight bytes exceed the per-engine size
budget ((cpu_memory_budget - used RSS) / 4), then cuts and repeats on the rest. The node that
crosses the budget stays on the left, so a part may overshoot; tensors crossing a cut are not
looked at. `overshoot=False` is the same walk cutting just before the crossing node, so its parts
fit the same memory model as trtbuild's (the fair comparison for "never above greedy").
"""

from __future__ import annotations

from trtbuild.planner import Problem


def greedy_parts(problem: Problem, cap: int, overshoot: bool = True) -> list[list[int]]:
    parts: list[list[int]] = []
    current: list[int] = []
    held: set[int] = set()
    size = 0
    for v in range(problem.n):  # node ids are the graph order
        new = problem.node_weights[v] - held
        grown = size + sum(problem.weight_bytes[w] for w in new)
        if current and grown > cap and not overshoot:
            parts.append(current)
            current, held = [], set()
            new, grown = problem.node_weights[v], problem.weight_of([v])
        current.append(v)
        held |= new
        size = grown
        if overshoot and size > cap:
            parts.append(current)
            current, held, size = [], set(), 0
    if current:
        parts.append(current)
    return parts


def greedy_cost(problem: Problem, cap: int, overshoot: bool = True) -> int:
    return problem.cost(greedy_parts(problem, cap, overshoot))
