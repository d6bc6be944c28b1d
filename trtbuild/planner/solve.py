"""Choose the solver: exact while ideals are few, else interval DP + min-cut refinement."""

from __future__ import annotations

from trtbuild.planner.exact import EXACT_IDEALS_CAP, exact, ideals
from trtbuild.planner.interval import interval_dp, topological_orders
from trtbuild.planner.mincut import refine
from trtbuild.planner.problem import Problem, Solution, TooBig


def solve(problem: Problem, cap: int, orders: int = 3) -> Solution:
    """Optimal (exact DP) or near-optimal (interval DP + min-cut) chain of feasible parts."""
    if problem.n == 0:
        return Solution([], 0, "empty")
    for v in range(problem.n):
        if problem.weight_of([v]) > cap:
            raise TooBig(v)
    found = ideals(problem, EXACT_IDEALS_CAP if problem.n > 12 else 1 << 12)
    if found is not None:
        return exact(problem, cap, found)
    return heuristic(problem, cap, orders)


def heuristic(problem: Problem, cap: int, orders: int = 3) -> Solution:
    """Interval DP over a few topological orders, then min-cut refinement: O(n log n) each."""
    best: Solution | None = None
    for order in topological_orders(problem)[:orders]:
        parts = interval_dp(problem, cap, order)
        candidate = Solution(parts, problem.cost(parts), "interval-dp")
        if best is None or (candidate.cost, len(candidate.parts)) < (best.cost, len(best.parts)):
            best = candidate
    assert best is not None
    return refine(problem, cap, best)
