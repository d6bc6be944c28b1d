"""From an OpGraph to a Plan: coarsen, solve under the memory model's weight cap, describe parts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from trtbuild.errors import TrtbuildError
from trtbuild.graph import OpGraph, TensorInfo
from trtbuild.memory import MemoryModel
from trtbuild.planner.bound import lower_bound
from trtbuild.planner.coarsen import coarsen, problem_of
from trtbuild.planner.problem import Solution, TooBig
from trtbuild.planner.solve import solve
from trtbuild.sizes import format_size

PROVE_SECONDS = 2.0  # default time to prove a heuristic plan's lower bound


@dataclass(frozen=True)
class PartTensor(TensorInfo):
    from_part: int | None  # producing part, None for a model input


@dataclass(frozen=True)
class Part:
    index: int
    ops: list[str]
    weights: list[str]
    weight_bytes: int
    predicted_peak_bytes: int
    inputs: list[PartTensor]
    outputs: list[PartTensor]


@dataclass(frozen=True)
class Plan:
    parts: list[Part]
    budget_bytes: int
    boundary_bytes: int
    min_feasible_budget_bytes: int
    method: str
    memory_source: str
    model_inputs: list[str] = field(default_factory=list)
    model_outputs: list[str] = field(default_factory=list)
    lower_bound_bytes: int = 0  # no feasible plan moves fewer bytes (bound.py)
    bound_method: str = "exact"  # how the bound was proven

    @property
    def optimality_gap(self) -> float:
        """(plan - lower bound) / plan: 0 when the plan is proven optimal."""
        if self.boundary_bytes == 0:
            return 0.0
        return (self.boundary_bytes - self.lower_bound_bytes) / self.boundary_bytes


def plan(
    graph: OpGraph, budget: int, memory: MemoryModel, prove_seconds: float = PROVE_SECONDS
) -> Plan:
    """Partition `graph` for `budget` bytes of host memory under `memory`.

    The plan comes from solve(); then up to `prove_seconds` go to proving a lower bound on the
    bytes any feasible plan moves (the plan never depends on that proof, or on time).
    """
    groups = coarsen(graph)
    problem = problem_of(graph, groups)
    cap = memory.max_weight_bytes(budget)
    heaviest = max(range(problem.n), key=lambda v: problem.weight_of([v]), default=None)
    min_budget = memory.predict(problem.weight_of([heaviest]) if heaviest is not None else 0)
    try:
        solution = solve(problem, cap)
    except TooBig:  # name the heaviest group, not the first one found over the cap
        assert heaviest is not None
        held = problem.weight_of([heaviest])
        raise TrtbuildError(
            f"budget {format_size(budget)} is too small: op group '{problem.labels[heaviest]}' "
            f"alone holds {format_size(held)} of weights and needs a predicted "
            f"{format_size(memory.predict(held))}; the smallest budget "
            f"that works is {min_budget} bytes ({format_size(min_budget)})"
        ) from None
    made = _make_plan(graph, groups, solution, budget, min_budget, memory)
    if solution.method == "exact" or made.boundary_bytes == 0:
        return replace(made, lower_bound_bytes=made.boundary_bytes)
    bound = lower_bound(problem, cap, prove_seconds)
    return replace(
        made,
        lower_bound_bytes=min(bound.lower_bytes, made.boundary_bytes),
        bound_method=bound.method,
    )


def _make_plan(
    graph: OpGraph,
    groups: list[list[str]],
    solution: Solution,
    budget: int,
    min_budget: int,
    memory: MemoryModel,
) -> Plan:
    order = {op.name: i for i, op in enumerate(graph.ops)}
    part_ops = [
        sorted((name for v in part for name in groups[v]), key=order.__getitem__)
        for part in solution.parts
    ]
    part_of = {name: k for k, ops in enumerate(part_ops) for name in ops}
    read_by: dict[str, set[int]] = {}
    for op in graph.ops:
        for t in op.inputs:
            read_by.setdefault(t, set()).add(part_of[op.name])
    model_outputs = set(graph.outputs)
    parts, boundary = [], 0
    for k, ops in enumerate(part_ops):
        ins: dict[str, PartTensor] = {}
        outs: list[PartTensor] = []
        weights: dict[str, None] = {}
        for name in ops:
            op = graph.op(name)
            weights.update(dict.fromkeys(op.weights))
            for t in op.inputs:
                src = graph.producer(t)
                if src is None or part_of[src] != k:
                    ins.setdefault(t, _part_tensor(graph, t, None if src is None else part_of[src]))
            for out in op.outputs:
                crosses = bool(read_by.get(out.name, set()) - {k})
                boundary += out.bytes if crosses else 0
                if crosses or out.name in model_outputs:
                    outs.append(_part_tensor(graph, out.name, k))
        wbytes = sum(graph.weights[w].bytes for w in weights)
        parts.append(
            Part(k, ops, list(weights), wbytes, memory.predict(wbytes), list(ins.values()), outs)
        )
    return Plan(
        parts,
        budget,
        boundary,
        min_budget,
        solution.method,
        memory.source,
        [t.name for t in graph.inputs],
        list(graph.outputs),
    )


def _part_tensor(graph: OpGraph, name: str, from_part: int | None) -> PartTensor:
    t = graph.tensor(name)
    return PartTensor(t.name, t.shape, t.dtype, t.bytes, from_part)
