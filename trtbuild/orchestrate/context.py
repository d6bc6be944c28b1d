"""The contexts a build hands down: one per run, one per target at one plan.

`Options` (trtbuild.orchestrate.options) is what the caller chose. What the run found when it started (the
lock, memory.json) and what it opened (the store, the digest memo, the executor) are in
`RunContext`; a target's graph, plan, memory model and the result its parts fill in are in
`TargetContext`. Both are frozen: a build passes them down and never writes into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trtbuild.cache.digests import DigestMemo
    from trtbuild.cache.store import Store
    from trtbuild.execution.executor import Executor
    from trtbuild.model.graph import OpGraph
    from trtbuild.orchestrate.disk import Ledger
    from trtbuild.orchestrate.graphjob import GraphResult
    from trtbuild.orchestrate.options import Options
    from trtbuild.orchestrate.results import TargetResult
    from trtbuild.planner import Plan
    from trtbuild.planner.memory import MemoryModel
    from trtbuild.planner.observations import Observation
    from trtbuild.recipe.load import Recipe, Target
    from trtbuild.release.lockfile import Lock


@dataclass(frozen=True)
class RunContext:
    """One run of a recipe: what every target of it shares."""

    recipe: Recipe
    opts: Options
    store: Store
    memo: DigestMemo
    executor: Executor
    previous_lock: Lock | None  # the lock file as the run found it ("why rebuilt", pinned models)
    # memory.json as the run found it: every target's first plan is made with it, as `plan`
    # would make it (a target built meanwhile, of the same graph, does not move another's plan).
    observed: list[Observation] | None
    ledger: Ledger  # the run's disk claims (trtbuild.orchestrate.disk)


@dataclass(frozen=True)
class TargetContext:
    """One target at one plan (a re-plan after an overrun makes a new one)."""

    run: RunContext
    target: Target
    backend: Any  # trtbuild.backends.base.Backend
    graph: OpGraph
    job: GraphResult  # its graph job (and the model's own state, trtbuild.orchestrate.statejob)
    plan: Plan
    memory: MemoryModel
    result: TargetResult  # filled in as its parts finish
