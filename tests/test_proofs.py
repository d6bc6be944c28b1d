"""A plan's lower-bound proof is cached (same problem and cap: never proven twice) and, for
`run`, proven on a thread while the build goes on (trtbuild.planner.proofs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trtbuild.cache.store import Store
from trtbuild.planner import Problem, proofs
from trtbuild.planner.plan import Plan
from trtbuild.planner.solve import heuristic


def _chain() -> tuple[Problem, int]:
    """A 16-node chain with skip tensors, weights forcing several parts."""
    n = 16
    producers, sizes, consumers = [], [], []
    for v in range(n - 1):
        producers.append(v)
        sizes.append(10 + v)
        consumers.append(frozenset({v + 1} | ({v + 3} if v + 3 < n else set())))
    edges = sorted({(p, c) for p, cs in zip(producers, consumers) for c in cs})
    weights = [frozenset({v}) for v in range(n)]
    problem = Problem(n, edges, weights, [5 + v % 4 for v in range(n)], producers, sizes, consumers)
    return problem, 30


def _made(problem: Problem, cap: int) -> Plan:
    solution = heuristic(problem, cap)
    return Plan([], 0, solution.cost, 0, solution.method, "test")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of the real lower_bound (HiGHS), counted."""
    calls: list[int] = []
    real = proofs.lower_bound

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(proofs, "lower_bound", counting)
    return calls


def test_a_proof_runs_once_per_problem_and_cap_and_off_the_critical_path(
    tmp_path: Path, counted: list[int]
) -> None:
    store = Store(tmp_path / "cache")
    problem, cap = _chain()
    made = _made(problem, cap)
    assert made.boundary_bytes > 0
    started = proofs.proven(made, problem, cap, 2.0, store, background=True)
    assert started.bound_method == proofs.PENDING  # returned before the proof finished
    settled = proofs.settle(started, store)
    assert settled.bound_method.startswith("milp") and settled.bound_key is None
    assert 0 < settled.lower_bound_bytes <= made.boundary_bytes
    for background in (True, False):  # the same graph and budget: read, never proven again
        again = proofs.proven(made, problem, cap, 2.0, store, background=background)
        assert (again.lower_bound_bytes, again.bound_method) == (
            settled.lower_bound_bytes,
            settled.bound_method,
        )
    assert len(counted) == 1
    proofs.proven(made, problem, cap + 5, 2.0, store)  # another cap: another proof
    assert len(counted) == 2
