"""A plan's lower-bound proof (bound.py), cached and off the critical path.

A proof depends only on the planning problem (nodes, edges, weights, tensor bytes) and the cap
on a part's weights, plus the time it was given: the same graph at the same budget never proves
twice (`plan`, `run`, `explain` and the next build read the cache). The plan never depends on the
proof, so `run` starts it on a thread and goes on building; the proof is read back (waiting for
what is left of it, at most its time limit) when the target's results are written.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from trtbuild.cache.digests import digest_json
from trtbuild.planner.bound import Bound, lower_bound
from trtbuild.planner.problem import Problem

if TYPE_CHECKING:
    from trtbuild.planner.plan import Plan

BOUND_SCHEMA = 1
PENDING = "pending"  # bound_method of a plan whose proof still runs
_running: dict[str, threading.Thread] = {}
_lock = threading.Lock()


class Actions(Protocol):
    """Where proofs are kept: the store's action cache (trtbuild.cache.store.Store)."""

    def get_action(self, key: str) -> dict[str, Any] | None: ...

    def put_action(self, key: str, result: dict[str, Any], replace: bool = False) -> None: ...


def bound_key(problem: Problem, cap: int, seconds: float) -> str:
    return "bound-" + digest_json(
        [
            BOUND_SCHEMA,
            problem.edges,
            [sorted(ws) for ws in problem.node_weights],
            problem.weight_bytes,
            problem.tensor_producer,
            problem.tensor_bytes,
            [sorted(c) for c in problem.tensor_consumers],
            cap,
            seconds,
        ]
    )


def proven(
    made: Plan,
    problem: Problem,
    cap: int,
    seconds: float,
    actions: Actions | None = None,
    background: bool = False,
) -> Plan:
    """`made` with its lower bound: from `actions` when proven before, else proven now (or, with
    `background`, on a thread: bound_method PENDING until `settle`)."""
    key = bound_key(problem, cap, seconds)
    hit = actions.get_action(key) if actions is not None else None
    if hit is not None:
        return _with(made, hit)
    if actions is None or not background:
        bound = lower_bound(problem, cap, seconds)
        if actions is not None:
            _keep(actions, key, bound)
        return _with(made, _json(bound))
    with _lock:
        if key not in _running:
            thread = threading.Thread(
                target=lambda: _keep(actions, key, lower_bound(problem, cap, seconds)),
                name=f"proof-{key[6:14]}",
                daemon=True,
            )
            _running[key] = thread
            thread.start()
    return replace(made, bound_method=PENDING, bound_key=key)


def settle(plan: Plan, actions: Actions) -> Plan:
    """The plan with its proof's result, waiting for a proof `proven` started."""
    if plan.bound_method != PENDING or plan.bound_key is None:
        return plan
    with _lock:
        thread = _running.get(plan.bound_key)
    if thread is not None:
        thread.join()
        with _lock:
            _running.pop(plan.bound_key, None)
    hit = actions.get_action(plan.bound_key)
    return _with(plan, hit) if hit else replace(plan, bound_method="failed")


def _keep(actions: Actions, key: str, bound: Bound) -> None:
    actions.put_action(key, {**_json(bound), "blobs": {}})


def _json(bound: Bound) -> dict[str, Any]:
    return {"lower_bytes": bound.lower_bytes, "method": bound.method, "seconds": bound.seconds}


def _with(made: Plan, found: dict[str, Any]) -> Plan:
    return replace(
        made,
        lower_bound_bytes=min(int(found["lower_bytes"]), made.boundary_bytes),
        bound_method=str(found["method"]),
        bound_key=None,
    )
