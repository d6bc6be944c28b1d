"""The planner against a MILP oracle, the greedy baseline and brute facts, on random DAGs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from benchmarks.greedy import greedy_cost, greedy_parts
from benchmarks.oracle import optimum
from trtbuild.planner import Problem, solve
from trtbuild.planner.bound import lower_bound
from trtbuild.planner.exact import exact, ideals
from trtbuild.planner.interval import interval_dp, topological_orders
from trtbuild.planner.solve import heuristic


@st.composite
def problems(draw: st.DrawFn, max_nodes: int = 12) -> tuple[Problem, int]:
    n = draw(st.integers(1, max_nodes))
    pool = draw(st.integers(1, n + 2))  # fewer weights than nodes: some are tied
    weight_bytes = draw(st.lists(st.integers(1, 50), min_size=pool, max_size=pool))
    node_weights = [
        frozenset(draw(st.lists(st.integers(0, pool - 1), max_size=2))) for _ in range(n)
    ]
    producers, sizes, consumers = [], [], []
    for v in range(n - 1):
        for _ in range(draw(st.integers(0, 2))):
            readers = draw(st.sets(st.integers(v + 1, n - 1), min_size=1, max_size=3))
            producers.append(v)
            sizes.append(draw(st.integers(1, 100)))
            consumers.append(frozenset(readers))
    edges = sorted({(p, c) for p, cs in zip(producers, consumers) for c in cs})
    problem = Problem(n, edges, node_weights, weight_bytes, producers, sizes, consumers)
    heaviest = max(problem.weight_of([v]) for v in range(n))
    cap = draw(st.integers(heaviest, max(heaviest, problem.weight_of(range(n)))))
    return problem, cap


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_plan_is_feasible_and_optimal(case: tuple[Problem, int]) -> None:
    problem, cap = case
    solution = solve(problem, cap)
    assert problem.is_chain_of_ideals(solution.parts)
    assert all(problem.weight_of(p) <= cap for p in solution.parts)
    assert problem.cost(solution.parts) == solution.cost  # reported bytes recompute
    assert solution.cost <= greedy_cost(problem, cap, overshoot=False)
    assert solution.cost == optimum(problem, cap)


@settings(max_examples=60, deadline=None)
@given(problems(max_nodes=40))
def test_interval_dp_and_refinement_on_larger_graphs(case: tuple[Problem, int]) -> None:
    problem, cap = case
    greedy = greedy_cost(problem, cap, overshoot=False)
    for order in topological_orders(problem):
        parts = interval_dp(problem, cap, order)
        assert problem.is_chain_of_ideals(parts)
        assert all(problem.weight_of(p) <= cap for p in parts)
        if order == list(range(problem.n)):
            assert problem.cost(parts) <= greedy  # optimal over the cuts greedy chooses from
    solution = solve(problem, cap)
    assert problem.is_chain_of_ideals(solution.parts)
    assert solution.cost <= greedy


def test_greedy_overshoots_where_trtbuild_does_not() -> None:
    chain = Problem(
        3,
        [(0, 1), (1, 2)],
        [frozenset([0]), frozenset([1]), frozenset([2])],
        [10, 10, 10],
        [0, 1],
        [5, 5],
        [frozenset([1]), frozenset([2])],
    )
    parts = greedy_parts(chain, 15)
    assert max(chain.weight_of(p) for p in parts) > 15
    assert all(chain.weight_of(p) <= 15 for p in solve(chain, 15).parts)


def test_tensor_with_many_readers_is_paid_once() -> None:
    # 0 feeds 1, 2 and 3; each node is too heavy to share a part with another.
    fan = Problem(
        4,
        [(0, 1), (0, 2), (0, 3)],
        [frozenset([i]) for i in range(4)],
        [10] * 4,
        [0],
        [7],
        [frozenset([1, 2, 3])],
    )
    solution = solve(fan, 10)
    assert len(solution.parts) == 4
    assert solution.cost == 7


def test_fewest_parts_among_cheapest() -> None:
    chain = Problem(
        4,
        [(0, 1), (1, 2), (2, 3)],
        [frozenset([i]) for i in range(4)],
        [1] * 4,
        [0, 1, 2],
        [5, 0, 5],
        [frozenset([1]), frozenset([2]), frozenset([3])],
    )
    solution = solve(chain, 2)
    assert solution.cost == 0
    assert [len(p) for p in solution.parts] == [2, 2]


# ---------------------------------------------------------------- the range where the heuristic runs


@st.composite
def narrow_problems(draw: st.DrawFn) -> tuple[Problem, int]:
    """13-60 nodes whose tensors reach at most 4 nodes ahead: few ideals, so the exact DP can
    serve as the oracle for the heuristic that graphs of this size get in practice."""
    n = draw(st.integers(13, 60))
    pool = draw(st.integers(1, n))
    weight_bytes = draw(st.lists(st.integers(1, 50), min_size=pool, max_size=pool))
    node_weights = [
        frozenset(draw(st.lists(st.integers(0, pool - 1), max_size=2))) for _ in range(n)
    ]
    producers, sizes, consumers = [], [], []
    for v in range(n - 1):
        for _ in range(draw(st.integers(1, 2))):
            ahead = st.integers(v + 1, min(v + 4, n - 1))
            producers.append(v)
            sizes.append(draw(st.integers(1, 100)))
            consumers.append(frozenset(draw(st.sets(ahead, min_size=1, max_size=2))))
    edges = sorted({(p, c) for p, cs in zip(producers, consumers) for c in cs})
    problem = Problem(n, edges, node_weights, weight_bytes, producers, sizes, consumers)
    heaviest = max(problem.weight_of([v]) for v in range(n))
    cap = draw(st.integers(heaviest, max(heaviest, problem.weight_of(range(n)) // 2)))
    return problem, cap


def check_gap_is_honest(case: tuple[Problem, int]) -> None:
    """The heuristic's plan, its proven lower bound and an independent optimum agree."""
    problem, cap = case
    found = ideals(problem, 20_000)
    assume(found is not None)
    assert found is not None
    best = exact(problem, cap, found).cost  # DP over every ideal: no MILP, no heuristic
    plan = heuristic(problem, cap)
    assert problem.is_chain_of_ideals(plan.parts)
    assert all(problem.weight_of(p) <= cap for p in plan.parts)
    bound = lower_bound(problem, cap, seconds=1.0)
    assert bound.lower_bytes <= best <= plan.cost  # an honest gap
    if bound.proven:
        assert bound.lower_bytes == best
    if plan.cost == bound.lower_bytes:  # reported as proven optimal: it must be
        assert plan.cost == best


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(narrow_problems())
def test_reported_gap_is_honest(case: tuple[Problem, int]) -> None:
    check_gap_is_honest(case)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~9 min alone on a 2-core machine: the oracle DP is the cost
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(narrow_problems())
def test_reported_gap_is_honest_many(case: tuple[Problem, int]) -> None:
    check_gap_is_honest(case)
