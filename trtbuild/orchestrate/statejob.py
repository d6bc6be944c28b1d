"""The state job: the weights of a model whose recipe names no `weights` are its own state.

A factory may load a checkpoint itself (`load_state_dict(torch.load(...))`) or only initialise;
either way what gets built is the model as its factory returns it. Planning stays weight-free
(the graph job runs on the meta device; `trtbuild plan` never runs this); before its parts are
built, one measured process per model runs the factory with real parameters (torch seeded with
0) and writes its state dict as a safetensors blob in the cache (trtbuild.model.ownstate), with a
sha256 per tensor. Parts stream their slices from that blob as from a checkpoint, and those
digests go into their action keys.

Cached by the graph job's discovered inputs: the files the factory read (also a checkpoint it
loads itself, and native reads), the distributions and variables it used, with the model's
recipe fields and the toolchain. Memory: about the process cost plus twice the weights (the
factory's loaded copy and the model's); a budget that cannot hold that is one error line.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from trtbuild.cache.digests import digest_json
from trtbuild.cache.store import Store
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.execution.executor import Executor
from trtbuild.execution.jobs import StateJob
from trtbuild.orchestrate.graphjob import NOT_GRAPH, GraphResult
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.sizes import format_size
from trtbuild.release.toolchain import toolchain

STATE_SCHEMA = 1
FALLBACK_FIXED_BYTES = 512 << 20  # the process cost when the graph job measured none
COPIES = 2  # the factory's loaded copy and the model's own


def predicted_bytes(job: GraphResult) -> int:
    """What the state job is expected to peak at: process cost + 2 x the model's weight bytes."""
    return (job.base_bytes or FALLBACK_FIXED_BYTES) + COPIES * (job.state_bytes or 0)


def state_key(target: Target, job: GraphResult) -> str:
    """The action key of a model's own state: its recipe fields, the graph job's discovered
    inputs (the files its factory read), the toolchain."""
    spec = target.model.model_dump(mode="json", exclude=NOT_GRAPH)
    return "state-" + digest_json([STATE_SCHEMA, spec, job.inputs.digest(), toolchain()])


def cached_weights(target: Target, job: GraphResult, store: Store) -> GraphResult | None:
    """`job` with the weight digests of the model's own state if the cache holds it (explain
    runs no job), else None."""
    entry = store.get_action(state_key(target, job))
    if entry is None:
        return None
    state: dict[str, str] = entry["digests"]
    merged = {n: state.get(n) or job.weight_digests.get(n) for n in job.graph["weights"]}
    if any(d is None for d in merged.values()):
        return None
    return dataclasses.replace(job, weight_digests=merged)  # type: ignore[arg-type]


def own_weights(
    recipe: Recipe,
    target: Target,
    weights: list[str],
    job: GraphResult,
    store: Store,
    executor: Executor,
) -> GraphResult:
    """`job` with the model's own state: its weight digests, and `state` (file, process record).

    `weights`: the graph's weight names (each must be in the state or made by code).
    TrtbuildError when the budget cannot hold the job, or the state lacks a weight.
    """
    spec = target.model
    key = state_key(target, job)
    entry, cached = store.get_or_run(key, lambda: _run(recipe, target, job, store, executor))
    state: dict[str, str] = entry["digests"]
    digests = {}
    for name in weights:
        digest = state.get(name) or job.weight_digests.get(name)  # else: a constant of code
        if digest is None:
            raise TrtbuildError(
                f"{recipe.model_loc(spec.name, 'source')}: model '{spec.name}': its state after "
                f"its factory ran has no tensor {name!r}, which its graph reads"
            )
        digests[name] = digest
    process = {k: v for k, v in entry.items() if k not in ("digests", "blobs")}
    record = {
        "file": str(store.blob_path(entry["blobs"]["state"])),
        "process": {**process, "cached": cached},
    }
    return dataclasses.replace(job, weight_digests=digests, state=record)


def _run(
    recipe: Recipe, target: Target, job: GraphResult, store: Store, executor: Executor
) -> dict[str, Any]:
    spec, budget = target.model, target.budget.host_memory
    predicted = predicted_bytes(job)
    hint = (
        f"name the checkpoint in the recipe's 'weights' (at {recipe.model_loc(spec.name, 'name')}) "
        "and the build streams weights within less"
    )
    if predicted > budget:
        raise TrtbuildError(
            f"model '{spec.name}': its own weights (no 'weights' in the recipe) need about "
            f"{format_size(predicted)} to build ({COPIES} x {format_size(job.state_bytes or 0)} of "
            f"weights + {format_size(job.base_bytes or FALLBACK_FIXED_BYTES)} of process), over "
            f"its budget {format_size(budget)}: {hint}"
        )
    scratch = store.scratch()
    out = scratch / "state.safetensors"
    try:
        with executor.admit(predicted, budget, forked=True) as share:
            try:
                outcome = executor.run(
                    StateJob(str(recipe.path), spec.name, str(out)), scratch, share, predicted, None
                )
            except BudgetExceeded as exc:
                raise TrtbuildError(
                    f"model '{spec.name}': running its factory for its own weights (no 'weights' "
                    f"in the recipe) reached {format_size(exc.peak_rss_bytes)}, over its share "
                    f"{format_size(share)} of the budget {format_size(budget)}: {hint}"
                ) from None
        blob = store.put_file(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "blobs": {"state": blob},
        "digests": outcome.result["digests"],
        "kind": "state",
        "weight_bytes": outcome.result["bytes"],
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "predicted_peak_bytes": predicted,
        "memory_limit_bytes": share,
        "private_peak_bytes": outcome.private_peak_bytes,
        "seconds": round(outcome.seconds, 3),
        "rss_samples": [list(point) for point in outcome.samples],
    }
