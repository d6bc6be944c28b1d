"""`trtbuild explain`: what changed since the last build, and per part up to date or why not."""

from __future__ import annotations

from pathlib import Path

from trtbuild.cache.digests import DigestMemo
from trtbuild.cache.store import Store
from trtbuild.execution.executor import LocalExecutor
from trtbuild.orchestrate import actions, quantize
from trtbuild.orchestrate.build import Options, invocation
from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.orchestrate.partspec import backend_settings, old_fields, part_fields
from trtbuild.orchestrate.planning import PlannedTarget, open_store, plan_targets
from trtbuild.orchestrate.statejob import own_weights
from trtbuild.recipe.load import Recipe, load_recipe
from trtbuild.release import lockfile


def explain(recipe_path: str | Path, opts: Options | None = None) -> list[str]:
    """Lines "changed: <input>" for every changed input or machine fact, then one line per part:
    "up to date", "would build: ..." or "would rebuild: <field> changed".

    Like `plan`, it runs the jobs that decide the parts' keys and caches them for `run`: graph
    jobs, and the state job of a model without `weights` (its factory's own weights). It never
    exports, calibrates or builds. TrtbuildError when the budget cannot hold those jobs.
    """
    opts = opts or Options()
    recipe = load_recipe(recipe_path)
    lock = lockfile.read_lock(lockfile.lock_path(recipe.path))
    store = open_store(opts, recipe)
    memo = DigestMemo(store.layout.digests)
    lines = [
        f"changed: {reason}"
        for reason in lockfile.staleness(lock, invocation(opts), memo, recipe.root, limit=None)
    ]
    for planned in plan_targets(recipe_path, opts):
        target = planned.target
        old = lock.target(target.model.name, target.precision, target.kind) if lock else None
        old_parts = {p.index: p for p in old.parts} if old else {}
        old_keys = {p.key for p in old_parts.values()}
        if old and len(old_parts) != len(planned.plan.parts):
            lines.append(
                f"{target.name}: plan changed ({len(old_parts)} -> {len(planned.plan.parts)} parts)"
            )
        job = planned.job
        if target.model.weights is None and not target.model.onnx:  # known once computed
            job = _own_weights(recipe, planned, store)  # from the cache when it holds them
        settings = backend_settings(recipe, target, planned.backend, opts.release)
        quantized = quantize.cached_key_settings(recipe, target, job, store)
        if quantized is None:
            lines += [
                f"{target.name} part {p.index}: would build: its calibration is not in the cache"
                for p in planned.plan.parts
            ]
            continue
        settings.update(quantized)
        fields_list = part_fields(
            target, planned.graph, job, planned.plan, planned.backend, settings
        )
        for part, fields in zip(planned.plan.parts, fields_list):
            key = actions.action_key(fields)
            where = None if key in old_keys else store.where(key)
            if key in old_keys or where is not None:
                reason = {None: "up to date", "local": "up to date (in the cache)"}.get(
                    where, "up to date (remote)"
                )
            else:
                previous = old_fields(lock, target, store).get(part.index)
                now = {**actions.field_digests(fields), **actions.weight_digests(fields)}
                reason = actions.explain(previous, now)
            lines.append(f"{target.name} part {part.index}: {reason}")
    return lines


def _own_weights(recipe: Recipe, planned: PlannedTarget, store: Store) -> GraphResult:
    """The graph job's result with the weight digests of the model's own state: its state job
    run here, in a plain process (as `run` would, and cached for it)."""
    executor = LocalExecutor(1)
    try:
        weights = list(planned.graph.weights)
        return own_weights(recipe, planned.target, weights, planned.job, store, executor)
    finally:
        executor.close(failed=False)
