"""Plans without a build (`trtbuild plan`, `explain`, trtbuild.plan()): each target's graph job, memory
model and partition plan; the budget errors that name the smallest budget that works."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trtbuild.backends import resolve_backend
from trtbuild.cache.digests import DigestMemo
from trtbuild.cache.layout import default_cache_dir
from trtbuild.cache.remote import RemoteCache
from trtbuild.cache.store import Store
from trtbuild.errors import BudgetTooSmall, TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.model.graphcheck import check_dtypes
from trtbuild.orchestrate import calibration, quantize
from trtbuild.orchestrate.checkmemory import reference_peak
from trtbuild.orchestrate.graphjob import GraphResult, graph_job
from trtbuild.orchestrate.options import Options
from trtbuild.orchestrate.search import check_keep
from trtbuild.orchestrate.statejob import cached_weights
from trtbuild.orchestrate.statejob import predicted_bytes as state_predicted
from trtbuild.planner import Plan, plan
from trtbuild.planner.memory import MemoryModel, memory_model, pinned, source_export
from trtbuild.planner.proofs import Actions
from trtbuild.recipe.load import Recipe, Target, load_recipe
from trtbuild.recipe.sizes import format_size
from trtbuild.release import lockfile


def open_store(opts: Options, recipe: Recipe | None = None) -> Store:
    """The run's cache: the local folder, with the remote cache behind it if one is named."""
    url = opts.remote_cache or (recipe.schema.cache.remote if recipe else None)
    remote = RemoteCache(url) if url else None
    if remote is not None:
        remote.check()
    return Store((opts.cache or default_cache_dir()).resolve(), remote)


@dataclass
class PlannedTarget:
    target: Target
    backend: str
    graph: OpGraph
    plan: Plan
    job: GraphResult
    check_peak_bytes: int | None = None  # the export process with the check's reference
    state_peak_bytes: int | None = None  # the state job, when it is to run (no `weights`)


def plan_targets(
    recipe_path: str | Path,
    opts: Options | None = None,
    model: str | None = None,
    precision: str | None = None,
) -> list[PlannedTarget]:
    """Plans of the recipe's targets (optionally one model / precision); builds nothing.

    Planning needs only the memory model, so `--backend tensorrt` plans work without TensorRT.
    """
    opts = opts or Options()
    recipe = load_recipe(recipe_path)
    recipe.check_files()
    store = open_store(opts, recipe)
    memo = DigestMemo(store.layout.digests)
    targets = select(
        recipe,
        recipe.targets(opts.backend, opts.budget),
        [model] if model else None,
        [precision] if precision else None,
    )
    lock = lockfile.read_lock(lockfile.lock_path(recipe.path))  # plan as `run` would
    out = []
    for target in targets:
        backend = resolve_backend(target.backend)
        job = graph_job(recipe, target, store, memo, None)  # planning only: measured, not capped
        graph = OpGraph.from_json(job.graph)
        locked = None if opts.memory_override else pinned(lock, target, backend)
        memory = locked or quantize.memory_for(  # a quantized build holds the quantizer too
            target,
            memory_model(
                backend,
                store.root,
                job.base_bytes,
                opts.memory_override,
                job.digest,
                export_prior=source_export(target),
            ),
        )
        the_plan = plan_target(
            target,
            graph,
            job,
            memory,
            opts.prove_seconds,
            opts.memory_override is not None,
            store,
        )
        if calibration.cached(recipe, target, job, store) is None:  # run would calibrate
            calibration.check_need(target, memory, the_plan, graph)
        checked = reference_peak(recipe, target, the_plan, graph, memory) if opts.check else None
        state = None
        if target.model.weights is None and not target.model.onnx:  # run refuses over budget
            state = None if cached_weights(target, job, store) else state_predicted(job)
        out.append(PlannedTarget(target, backend, graph, the_plan, job, checked, state))
    memo.save()
    return out


def plan_target(
    target: Target,
    graph: OpGraph,
    job: GraphResult,
    memory: MemoryModel,
    prove_seconds: float,
    override: bool,
    proofs: Actions | None = None,
    background: bool = False,
) -> Plan:
    """The target's plan. Its graph job runs within the budget too, so its measured peak is a
    floor of the smallest feasible budget (not under a memory_override: that is the whole cost).
    Its lower-bound proof is cached in `proofs` (the store), and runs on a thread with
    `background` (trtbuild.planner.proofs).

    Raises TrtbuildError naming the target and the smallest budget that works when none fits.
    """
    check_dtypes(graph, target.model.name)
    check_keep(target, graph)
    floor = 0 if override else job.peak_rss_bytes
    try:
        return plan(
            graph, target.budget.host_memory, memory, prove_seconds, floor, proofs, background
        )
    except BudgetTooSmall as exc:
        raise TrtbuildError(
            f"{target.name}: {exc}; the smallest budget that works is {exc.smallest} bytes "
            f"({format_size(exc.smallest)})"
        ) from None


def select(
    recipe: Recipe, targets: list[Target], models: list[str] | None, precisions: list[str] | None
) -> list[Target]:
    """The targets of the given models and precisions (None: all); none is one error naming
    what the recipe has."""
    chosen = [
        t
        for t in targets
        if (models is None or t.model.name in models)
        and (precisions is None or t.precision in precisions)
    ]
    if not chosen:
        asked = " ".join(
            [
                *(f"--model {m}" for m in models or []),
                *(f"--precision {p}" for p in precisions or []),
            ]
        )
        have_models = ", ".join(dict.fromkeys(t.model.name for t in targets))
        have_precisions = ", ".join(dict.fromkeys(t.precision for t in targets))
        raise TrtbuildError(
            f"{recipe.path}: no target matches {asked} (models: {have_models}; precisions: "
            f"{have_precisions})"
        )
    return chosen
