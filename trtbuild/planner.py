"""The planner: split an OpGraph into a chain of engines that each fit the host-memory budget.

Objective, in order: every part's predicted peak <= budget; fewest bytes crossing part boundaries
(each tensor counted once however many consumers it has); fewest parts. Parts are differences of
nested ideals (predecessor-closed sets), so engines run back to back.

    coarsen (fusion groups, view chains) -> exact DP over ideals while they are few
                                          -> else interval DP over several topological orders
                                          -> networkx min-cut refinement of neighbouring parts
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import networkx as nx

from trtbuild.errors import TrtbuildError
from trtbuild.graph import OpGraph, TensorInfo
from trtbuild.memory import MemoryModel
from trtbuild.sizes import format_size

EXACT_IDEALS_CAP = 800  # exact DP over ideals while a graph has at most this many
MINCUT_NODES_CAP = 20_000  # min-cut refinement of neighbouring parts up to this many nodes

ANCHORS = ("conv", "linear", "matmul", "mm.", "bmm", "addmm", "baddbmm", "einsum", "embedding",
           "scaled_dot_product_attention")  # fmt: skip
FOLLOWERS = ("batch_norm", "layer_norm", "group_norm", "relu", "gelu", "silu", "sigmoid", "tanh",
             "hardtanh", "clamp", "add", "mul", "hardswish", "leaky_relu", "_native_batch_norm",
             "dropout")  # fmt: skip
VIEWS = ("view", "reshape", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "expand",
         "contiguous", "clone", "aten.t.", "alias", "unflatten", "aten.to.", "_to_copy")  # fmt: skip


# ------------------------------------------------------------------------- the abstract problem


@dataclass
class Problem:
    """The planner's view of a graph: nodes in a topological order, tensors, weights.

    node i holds weights `node_weights[i]` (ids into `weight_bytes`); tensor j is produced by
    `tensor_producer[j]`, is `tensor_bytes[j]` bytes, and is read by nodes `tensor_consumers[j]`.
    """

    n: int
    edges: list[tuple[int, int]]
    node_weights: list[frozenset[int]]
    weight_bytes: list[int]
    tensor_producer: list[int]
    tensor_bytes: list[int]
    tensor_consumers: list[frozenset[int]]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.preds: list[set[int]] = [set() for _ in range(self.n)]
        self.succs: list[set[int]] = [set() for _ in range(self.n)]
        for u, v in self.edges:
            self.preds[v].add(u)
            self.succs[u].add(v)
        self.produced: list[list[int]] = [[] for _ in range(self.n)]
        for t, p in enumerate(self.tensor_producer):
            self.produced[p].append(t)

    def weight_of(self, nodes: Sequence[int] | set[int] | frozenset[int]) -> int:
        ids: set[int] = set()
        for v in nodes:
            ids.update(self.node_weights[v])
        return sum(self.weight_bytes[w] for w in ids)

    def cost(self, parts: Sequence[Sequence[int]]) -> int:
        """Boundary bytes: each tensor read by a part other than its producer's, once."""
        where = {v: k for k, part in enumerate(parts) for v in part}
        return sum(
            b
            for p, b, cons in zip(self.tensor_producer, self.tensor_bytes, self.tensor_consumers)
            if any(where[c] != where[p] for c in cons)
        )

    def is_chain_of_ideals(self, parts: Sequence[Sequence[int]]) -> bool:
        where = {v: k for k, part in enumerate(parts) for v in part}
        if sorted(where) != list(range(self.n)) or sum(len(p) for p in parts) != self.n:
            return False
        return all(where[u] <= where[v] for u, v in self.edges)


@dataclass
class Solution:
    parts: list[list[int]]
    cost: int
    method: str


def solve(problem: Problem, cap: int, orders: int = 3) -> Solution:
    """Optimal (exact DP) or near-optimal (interval DP + min-cut) chain of feasible parts."""
    if problem.n == 0:
        return Solution([], 0, "empty")
    for v in range(problem.n):
        if problem.weight_of([v]) > cap:
            raise _TooBig(v)
    ideals = _ideals(problem, EXACT_IDEALS_CAP if problem.n > 12 else 1 << 12)
    if ideals is not None:
        return _exact(problem, cap, ideals)
    best: Solution | None = None
    for order in _topological_orders(problem)[:orders]:
        parts = _interval_dp(problem, cap, order)
        candidate = Solution(parts, problem.cost(parts), "interval-dp")
        if best is None or (candidate.cost, len(candidate.parts)) < (best.cost, len(best.parts)):
            best = candidate
    assert best is not None
    return _refine(problem, cap, best)


class _TooBig(Exception):
    def __init__(self, node: int) -> None:
        super().__init__(node)
        self.node = node


# ------------------------------------------------------------------------- exact DP over ideals


def _ideals(problem: Problem, limit: int) -> list[int] | None:
    """Every ideal as a bitmask, by size; None when there are more than `limit`."""
    missing = [len(p) for p in problem.preds]
    start = frozenset(v for v in range(problem.n) if missing[v] == 0)
    seen = {0}
    stack: list[tuple[int, frozenset[int]]] = [(0, start)]
    while stack:
        ideal, ready = stack.pop()
        for v in ready:
            grown = ideal | 1 << v
            if grown in seen:
                continue
            seen.add(grown)
            if len(seen) > limit:
                return None
            unlocked = {
                s for s in problem.succs[v] if all(grown >> u & 1 for u in problem.preds[s])
            }
            stack.append((grown, (ready - {v}) | unlocked))
    return sorted(seen, key=lambda m: (m.bit_count(), m))


def _exact(problem: Problem, cap: int, ideals: list[int]) -> Solution:
    """best[I] = min over sub-ideals J with I \\ J feasible of best[J] + charge(J, I)."""
    n = problem.n
    consumers_mask = [sum(1 << c for c in cons) for cons in problem.tensor_consumers]
    node_wmask = [sum(1 << w for w in ws) for ws in problem.node_weights]
    weight_memo: dict[int, int] = {}

    def weight(mask: int) -> int:
        if mask not in weight_memo:
            wm = 0
            for v in _bits(mask):
                wm |= node_wmask[v]
            weight_memo[mask] = sum(problem.weight_bytes[w] for w in _bits(wm))
        return weight_memo[mask]

    INF = (1 << 62, 0)
    best: dict[int, tuple[int, int]] = {0: (0, 0)}
    back: dict[int, int] = {}
    for ideal in ideals[1:]:
        frontier = [
            (1 << p, b)
            for p, b, cm in zip(problem.tensor_producer, problem.tensor_bytes, consumers_mask)
            if ideal >> p & 1 and cm & ~ideal
        ]
        choice, value = -1, INF
        for sub in _sub_ideals(ideal, ideals, best):
            part = ideal & ~sub
            if weight(part) > cap:
                continue
            cost, count = best[sub]
            cost += sum(b for bit, b in frontier if not sub & bit)
            if (cost, count + 1) < value:
                choice, value = sub, (cost, count + 1)
        if choice >= 0:
            best[ideal], back[ideal] = value, choice
    full = (1 << n) - 1
    parts = []
    cur = full
    while cur:
        prev = back[cur]
        parts.append(sorted(_bits(cur & ~prev)))
        cur = prev
    parts.reverse()
    return Solution(parts, best[full][0], "exact")


def _sub_ideals(ideal: int, ideals: list[int], best: dict[int, tuple[int, int]]) -> list[int]:
    """Proper sub-ideals of `ideal` already solved: by submask walk or by scan, whichever is less."""
    if 1 << ideal.bit_count() <= len(ideals):
        subs, sub = [], (ideal - 1) & ideal
        while True:
            if sub in best:
                subs.append(sub)
            if sub == 0:
                return subs
            sub = (sub - 1) & ideal
    size = ideal.bit_count()
    return [s for s in ideals if s.bit_count() < size and not s & ~ideal and s in best]


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


# ------------------------------------------------------------------------- interval DP


def _topological_orders(problem: Problem) -> list[list[int]]:
    """A few topological orders: as exported, depth-first (finish a branch), breadth-first."""
    orders = [list(range(problem.n))]
    indeg = [len(p) for p in problem.preds]
    for pick in ("dfs", "bfs"):
        deg = list(indeg)
        heap = [(0, v) for v in range(problem.n) if deg[v] == 0]
        heapq.heapify(heap)
        order, counter = [], 0
        while heap:
            _, v = heapq.heappop(heap)
            order.append(v)
            for s in sorted(problem.succs[v]):
                deg[s] -= 1
                if deg[s] == 0:
                    counter += 1
                    heapq.heappush(heap, ((-counter if pick == "dfs" else counter), s))
        if order not in orders:
            orders.append(order)
    return orders


def _interval_dp(problem: Problem, cap: int, order: list[int]) -> list[list[int]]:
    """Optimal split of `order` into contiguous feasible intervals, O(n log n).

    f(q') = min over feasible q of f(q) + sum of bytes of tensors made in [q, q') and read at or
    after q'. A lazy segment tree holds A[q] = f(q) + that sum while q' sweeps right.
    """
    n = problem.n
    pos = [0] * n
    for i, v in enumerate(order):
        pos[v] = i
    last = [-1] * n  # last reader position of each tensor made at position p (-1: none)
    closing: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
    made_at: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for t, p in enumerate(problem.tensor_producer):
        if not problem.tensor_consumers[t]:
            continue
        lp = max(pos[c] for c in problem.tensor_consumers[t])
        made_at[pos[p]].append((lp, problem.tensor_bytes[t]))
        last[pos[p]] = max(last[pos[p]], lp)
    scale = (n + 2) * (n + 2)
    tree = _MinAddTree(n + 1)
    tree.assign(0, 0)
    count: dict[int, int] = {}
    window, lo = 0, 0
    choice = [0] * (n + 1)
    for q in range(1, n + 1):
        p = q - 1  # position entering the last part
        for w in problem.node_weights[order[p]]:
            count[w] = count.get(w, 0) + 1
            if count[w] == 1:
                window += problem.weight_bytes[w]
        while window > cap:
            for w in problem.node_weights[order[lo]]:
                count[w] -= 1
                if count[w] == 0:
                    window -= problem.weight_bytes[w]
            lo += 1
        for lp, b in made_at[p]:
            if lp >= q:  # read after this cut: charged for every start q0 <= p
                tree.add(0, p, b * scale)
                closing[lp].append((p, b))
        for p0, b in closing[q - 1] if q - 1 >= 0 else ():
            tree.add(0, p0, -b * scale)  # its last reader is now inside the part
        key = tree.query(lo, q - 1)
        start = key % (n + 2)
        choice[q] = start
        base = key - start
        tree.assign(q, base + (n + 2) + q)  # one more part; position q encoded for argmin
    parts = []
    q = n
    while q > 0:
        parts.append([order[i] for i in range(choice[q], q)])
        q = choice[q]
    parts.reverse()
    return parts


class _MinAddTree:
    """Range add, range min over positions 0..size-1 (lazy, iterative)."""

    INF = 1 << 200

    def __init__(self, size: int) -> None:
        self.h = max(1, (size - 1).bit_length())
        self.size = 1 << self.h
        self.t = [self.INF] * (2 * self.size)
        self.d = [0] * self.size

    def _apply(self, i: int, v: int) -> None:
        self.t[i] += v
        if i < self.size:
            self.d[i] += v

    def _build(self, i: int) -> None:
        t, d = self.t, self.d
        while i > 1:
            i >>= 1
            t[i] = min(t[2 * i], t[2 * i + 1]) + d[i]

    def _push(self, i: int) -> None:
        for s in range(self.h, 0, -1):
            j = i >> s
            if self.d[j]:
                self._apply(2 * j, self.d[j])
                self._apply(2 * j + 1, self.d[j])
                self.d[j] = 0

    def add(self, lo: int, hi: int, v: int) -> None:
        """Add v on [lo, hi] inclusive."""
        lo_, hi_ = lo + self.size, hi + 1 + self.size
        lo0, hi0 = lo_, hi_
        while lo_ < hi_:
            if lo_ & 1:
                self._apply(lo_, v)
                lo_ += 1
            if hi_ & 1:
                hi_ -= 1
                self._apply(hi_, v)
            lo_ >>= 1
            hi_ >>= 1
        self._build(lo0)
        self._build(hi0 - 1)

    def assign(self, i: int, v: int) -> None:
        i += self.size
        self._push(i)
        self.t[i] = v
        self._build(i)

    def query(self, lo: int, hi: int) -> int:
        lo_, hi_ = lo + self.size, hi + 1 + self.size
        self._push(lo_)
        self._push(hi_ - 1)
        res = self.INF
        while lo_ < hi_:
            if lo_ & 1:
                res = min(res, self.t[lo_])
                lo_ += 1
            if hi_ & 1:
                hi_ -= 1
                res = min(res, self.t[hi_])
            lo_ >>= 1
            hi_ >>= 1
        return res


# ------------------------------------------------------------------------- min-cut refinement


def _refine(problem: Problem, cap: int, solution: Solution, passes: int = 3) -> Solution:
    """Re-split each pair of neighbouring parts along a minimum cut, while that lowers the cost."""
    parts = [list(p) for p in solution.parts]
    cost = solution.cost
    improved_any = False
    for _ in range(passes):
        improved = False
        for k in range(len(parts) - 1):
            union = parts[k] + parts[k + 1]
            if len(union) > MINCUT_NODES_CAP:
                continue
            split = _min_cut_split(problem, cap, union, parts[k + 2 :])
            if split is None:
                continue
            trial = [*parts[:k], *split, *parts[k + 2 :]]
            trial = [p for p in trial if p]
            trial_cost = problem.cost(trial)
            if (trial_cost, len(trial)) < (cost, len(parts)):
                parts, cost, improved = trial, trial_cost, True
        improved_any |= improved
        if not improved:
            break
    return Solution(parts, cost, solution.method + ("+min-cut" if improved_any else ""))


def _min_cut_split(
    problem: Problem, cap: int, union: list[int], later: list[list[int]]
) -> list[list[int]] | None:
    """Best split of `union` into (S, T), S predecessor-closed, both sides fitting `cap`.

    Anchors make any cut feasible: the shortest prefix A whose complement fits goes to S, the
    shortest suffix B whose complement fits goes to T. Each tensor read inside the union gets a
    split node (capacity = its bytes) so it is paid once however many readers cross.
    """
    order = sorted(union)  # node ids are a topological order
    inside = set(order)
    a_len = len(order) - _longest_fitting(problem, reversed(order), cap)
    b_len = len(order) - _longest_fitting(problem, order, cap)
    if a_len + b_len > len(order):
        return None
    g = nx.DiGraph()
    source, sink = "s", "t"
    for v in order[:a_len]:
        g.add_edge(source, v)
    for v in order[len(order) - b_len :]:
        g.add_edge(v, sink)
    for v in order:
        g.add_node(v)
        for u in problem.preds[v]:
            if u in inside:
                g.add_edge(v, u)  # v in S forces u in S: infinite reverse edge
    for t, p in enumerate(problem.tensor_producer):
        if p not in inside:
            continue
        readers = problem.tensor_consumers[t] & inside
        if not readers or problem.tensor_consumers[t] - inside:
            continue  # read later anyway: paid whatever the split
        g.add_edge(p, ("t", t), capacity=problem.tensor_bytes[t])
        for c in readers:
            g.add_edge(("t", t), c)
    if a_len == 0 and b_len == 0:
        return None
    if a_len == 0:
        g.add_edge(source, order[0], capacity=0)
    if b_len == 0:
        g.add_edge(order[-1], sink, capacity=0)
    _, (s_side, _) = nx.minimum_cut(g, source, sink)
    first = [v for v in order if v in s_side]
    second = [v for v in order if v not in s_side]
    if problem.weight_of(first) > cap or problem.weight_of(second) > cap:
        return None
    return [first, second]


def _longest_fitting(problem: Problem, nodes: Iterable[int], cap: int) -> int:
    """How many of `nodes`, taken in order, fit together under `cap`."""
    held: set[int] = set()
    total = count = 0
    for v in nodes:
        new = problem.node_weights[v] - held
        total += sum(problem.weight_bytes[w] for w in new)
        if total > cap:
            break
        held |= new
        count += 1
    return count


# ------------------------------------------------------------------------- from OpGraph to Plan


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


def plan(graph: OpGraph, budget: int, memory: MemoryModel) -> Plan:
    """Partition `graph` for `budget` bytes of host memory under `memory`."""
    groups = coarsen(graph)
    problem = problem_of(graph, groups)
    cap = memory.max_weight_bytes(budget)
    heaviest = max(range(problem.n), key=lambda v: problem.weight_of([v]), default=None)
    min_budget = memory.predict(problem.weight_of([heaviest]) if heaviest is not None else 0)
    try:
        solution = solve(problem, cap)
    except _TooBig as exc:
        label = problem.labels[exc.node]
        raise TrtbuildError(
            f"budget {format_size(budget)} is too small: op group '{label}' alone holds "
            f"{format_size(problem.weight_of([exc.node]))} of weights and needs a predicted "
            f"{format_size(memory.predict(problem.weight_of([exc.node])))}; the smallest budget "
            f"that works is {min_budget} bytes ({format_size(min_budget)})"
        ) from None
    return _make_plan(graph, groups, solution, budget, min_budget, memory)


def _make_plan(
    graph: OpGraph, groups: list[list[str]], solution: Solution, budget: int, min_budget: int,
    memory: MemoryModel,
) -> Plan:  # fmt: skip
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
    return Plan(parts, budget, boundary, min_budget, solution.method, memory.source,
                [t.name for t in graph.inputs], list(graph.outputs))  # fmt: skip


def _part_tensor(graph: OpGraph, name: str, from_part: int | None) -> PartTensor:
    t = graph.tensor(name)
    return PartTensor(t.name, t.shape, t.dtype, t.bytes, from_part)
