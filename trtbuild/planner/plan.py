"""From an OpGraph to a Plan: coarsen, solve under the memory model's weight cap, describe parts."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from trtbuild.errors import BudgetTooSmall, TrtbuildError
from trtbuild.model.graph import SYMINT, OpGraph, TensorInfo
from trtbuild.planner.coarsen import coarsen, problem_of
from trtbuild.planner.memory import SLACK, MemoryModel
from trtbuild.planner.observations import Load
from trtbuild.planner.problem import Solution, TooBig
from trtbuild.planner.proofs import Actions, proven
from trtbuild.planner.solve import solve
from trtbuild.recipe.sizes import format_size

PROVE_SECONDS = 2.0  # default time to prove a heuristic plan's lower bound
MAX_SHRINKS = 50  # re-solves with a smaller weight cap when a part's own prediction is over


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
    load: Load  # what its weights ask of a build process (memory.Load)


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
    bound_method: str = "exact"  # how the bound was proven; "pending" while it runs (proofs.py)
    bound_key: str | None = None  # the pending proof's cache key

    @property
    def optimality_gap(self) -> float:
        """(plan - lower bound) / plan: 0 when the plan is proven optimal."""
        if self.boundary_bytes == 0:
            return 0.0
        return (self.boundary_bytes - self.lower_bound_bytes) / self.boundary_bytes


def plan(
    graph: OpGraph,
    budget: int,
    memory: MemoryModel,
    prove_seconds: float = PROVE_SECONDS,
    graph_peak: int = 0,
    proofs: Actions | None = None,
    background: bool = False,
) -> Plan:
    """Partition `graph` for `budget` bytes of host memory under `memory`.

    The plan comes from solve() under a cap on each part's weight bytes, from the memory model
    and the model's shape (memory.MemoryModel.max_weight_bytes); a part whose own predicted peak
    is still over the budget lowers the cap and the plan is solved again. Then up to
    `prove_seconds` go to proving a lower bound on the bytes any plan under that cap moves (the
    plan never depends on that proof, or on time). `graph_peak`: the peak of the model's graph
    job, which `run` runs within the budget too (again, when its code changed): no budget below
    it and the noise between one run of a process and the next (memory.SLACK) is feasible.
    `proofs`: where proofs are cached (the store); `background`: prove on a thread (proofs.py).
    """
    graph_peak = graph_peak + SLACK if graph_peak else 0
    groups = coarsen(graph)
    problem = problem_of(graph, groups)
    kinds = rewrites(graph)
    cap = memory.max_weight_bytes(budget, load_of(graph, graph.weights, kinds))
    # The group whose own part is predicted highest (not always the heaviest: a transposed
    # Linear costs more than an embedding of its size) sets the smallest budget that works.
    loads = [load_of(graph, _group_weights(graph, groups, v), kinds) for v in range(problem.n)]
    hungriest = max(range(problem.n), key=lambda v: memory.predict(loads[v]), default=None)
    hungriest_load = loads[hungriest] if hungriest is not None else load_of(graph, [], kinds)
    min_budget = max(memory.predict(hungriest_load), graph_peak)
    if problem.n and min_budget <= budget:
        # The cap comes from the model's average shape: a group that fits alone by its own
        # load (an embedding: no transposes) must not be refused by it; each part's own
        # predicted peak is checked below.
        cap = max(cap, max(problem.weight_of([v]) for v in range(problem.n)))
    if budget < graph_peak:
        raise BudgetTooSmall(
            f"budget {format_size(budget)} is too small: exporting the model's graph on the meta "
            f"device (no weights) alone reaches {format_size(graph_peak)}",
            min_budget,
        )
    for attempt in range(MAX_SHRINKS):
        try:
            solution = solve(problem, cap)
        except TooBig:  # name the group that needs the most, not the first one over the cap
            assert hungriest is not None
            raise BudgetTooSmall(
                f"budget {format_size(budget)} is too small: op group "
                f"'{problem.labels[hungriest]}' alone holds "
                f"{format_size(hungriest_load.weight_bytes)} of weights and needs a predicted "
                f"{format_size(min_budget)}",
                min_budget,
            ) from None
        made = _make_plan(graph, groups, solution, budget, min_budget, memory, kinds)
        over = [p for p in made.parts if p.predicted_peak_bytes > budget]
        if not over:
            break
        # The cap came from the model's average shape; this part is hungrier than that (more
        # rewritten bytes, say): exclude it and solve again (later: shrink in proportion).
        worst = max(over, key=lambda p: p.predicted_peak_bytes)
        shrink = worst.weight_bytes * budget // worst.predicted_peak_bytes
        cap = min(cap, worst.weight_bytes) - 1 if attempt < 8 else min(cap - 1, shrink)
    else:
        raise TrtbuildError(f"no plan fits {format_size(budget)} after {MAX_SHRINKS} tries")
    if solution.method == "exact" or made.boundary_bytes == 0:
        return replace(made, lower_bound_bytes=made.boundary_bytes)
    return proven(made, problem, cap, prove_seconds, proofs, background)


CONVOLUTIONS = ("aten.conv", "aten.convolution", "aten._convolution")
LINEAR = "aten.linear"


@dataclass(frozen=True)
class Rewrites:
    """Weights ONNX Runtime's builder rewrites rather than streams (memory.Load)."""

    folded: frozenset[str]  # convolutions with a bias that only a batch norm reads
    transposed: frozenset[str]  # Linears on inputs of 3 or more dimensions


def rewrites(graph: OpGraph) -> Rewrites:
    readers: dict[str, list[str]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op.target)
    folded: set[str] = set()
    transposed: set[str] = set()
    for op in graph.ops:
        if (
            op.target.startswith(LINEAR)
            and op.inputs
            and len(graph.tensor(op.inputs[0]).shape) >= 3
        ):
            transposed.update(op.weights)
        if op.target.startswith(CONVOLUTIONS) and len(op.weights) >= 2 and len(op.outputs) == 1:
            reads = readers.get(op.outputs[0].name, [])
            if reads and all("batch_norm" in target for target in reads):
                folded.update(op.weights)
    return Rewrites(frozenset(folded), frozenset(transposed))


def load_of(graph: OpGraph, weights: Iterable[str], kinds: Rewrites) -> Load:
    sizes = {w: graph.weights[w].bytes for w in weights}
    folded = [size for w, size in sizes.items() if w in kinds.folded]
    return Load(
        sum(sizes.values()),
        max(sizes.values(), default=0),
        sum(folded),
        max(folded, default=0),
        sum(size for w, size in sizes.items() if w in kinds.transposed and w not in kinds.folded),
    )


def _group_weights(graph: OpGraph, groups: list[list[str]], v: int | None) -> list[str]:
    if v is None:
        return []
    return list(dict.fromkeys(w for name in groups[v] for w in graph.op(name).weights))


def _make_plan(
    graph: OpGraph,
    groups: list[list[str]],
    solution: Solution,
    budget: int,
    min_budget: int,
    memory: MemoryModel,
    kinds: Rewrites,
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
        for t in _shape_sources(graph, list(ins.values())):
            ins.setdefault(t, _part_tensor(graph, t, None))
        load = load_of(graph, weights, kinds)
        parts.append(
            Part(
                k,
                ops,
                list(weights),
                load.weight_bytes,
                memory.predict(load),
                list(ins.values()),
                outs,
                load,
            )
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


def _shape_sources(graph: OpGraph, inputs: list[PartTensor]) -> list[str]:
    """Model inputs a part needs for their shape alone: a symbolic size it reads (a reshape to
    (h, w) after a Linear over h*w tokens) that no dimension of its tensor inputs is. The size is
    then computed from the model inputs' symbols (partdims.size_node)."""
    dims = {d for t in inputs if t.dtype != SYMINT for d in t.shape}
    needed = {
        symbol
        for t in inputs
        if t.dtype == SYMINT and t.shape[0] not in dims
        for symbol in re.findall(r"[A-Za-z_][A-Za-z0-9_]*\.\d+", str(t.shape[0]))
    }
    return [
        t.name for t in graph.inputs if any(isinstance(d, str) and d in needed for d in t.shape)
    ]


def _part_tensor(graph: OpGraph, name: str, from_part: int | None) -> PartTensor:
    t = graph.tensor(name)
    return PartTensor(t.name, t.shape, t.dtype, t.bytes, from_part)
