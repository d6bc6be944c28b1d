"""Min-cut refinement: re-split each pair of neighbouring parts along a networkx minimum cut."""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from trtbuild.planner.problem import Problem, Solution

MINCUT_NODES_CAP = 20_000  # min-cut refinement of neighbouring parts up to this many nodes


def refine(problem: Problem, cap: int, solution: Solution, passes: int = 3) -> Solution:
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
