"""trtbuild.orchestrate.build(): recipe -> graphs -> plans -> cached part actions -> published engines.

The orchestrating process never imports torch: graphs, exports and engine builds run in worker
processes (trtbuild.execution.worker), one job each, measured and watched by the executor.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trtbuild.backends import get_backend, resolve_backend
from trtbuild.cache.digests import DigestMemo
from trtbuild.cache.layout import CacheLayout, default_cache_dir
from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.model.interface import interface_notes
from trtbuild.orchestrate import check, disk, quantize
from trtbuild.orchestrate.context import RunContext, TargetContext
from trtbuild.orchestrate.executors import make_executor
from trtbuild.orchestrate.graphjob import GraphResult, graph_job
from trtbuild.orchestrate.options import Options, auto_jobs
from trtbuild.orchestrate.owner import check_owner
from trtbuild.orchestrate.parts import Overrun, build_parts
from trtbuild.orchestrate.planning import open_store, plan_target, plan_targets, select
from trtbuild.orchestrate.publish import now, publish, write_outputs
from trtbuild.orchestrate.records import observations
from trtbuild.orchestrate.results import BuildResult, TargetResult
from trtbuild.orchestrate.search import search
from trtbuild.orchestrate.statejob import own_weights
from trtbuild.planner.memory import memory_model, pinned, source_export
from trtbuild.planner.observations import load_observations, record
from trtbuild.planner.proofs import settle
from trtbuild.recipe.load import Recipe, Target, load_recipe
from trtbuild.recipe.sizes import format_size
from trtbuild.release import fastpath, lockfile, signing
from trtbuild.release.toolchain import toolchain

__all__ = ["BuildResult", "Options", "auto_jobs", "build", "plan_targets"]

MAX_REPLANS = 4


def invocation(opts: Options) -> dict[str, Any]:
    return fastpath.invocation(opts.backend, opts.budget, opts.out, opts.release, opts.check)


def _locked_outputs(recipe_path: str | Path) -> list[Path]:
    """The target folders the lock of an up-to-date recipe names."""
    lock = lockfile.read_lock(lockfile.lock_path(Path(recipe_path)))
    return [Path(t.dir) for t in lock.targets] if lock else []


def build(recipe_path: str | Path, opts: Options | None = None) -> BuildResult:
    """Build every target of the recipe; "up to date" without importing torch when nothing changed."""
    opts = opts or Options()
    start = time.perf_counter()
    signing.check_key(opts.sign, opts.release)  # a bad key fails before the build, not after
    cache_dir = (opts.cache or default_cache_dir()).resolve()
    # A release build trusts no stat memo: every input is hashed again.
    if opts.subset and opts.release:
        raise TrtbuildError("--release builds every target: drop --model/--precision")
    stale = (
        "a subset of the targets was asked for"
        if opts.subset
        else fastpath.stale(Path(recipe_path), invocation(opts), cache_dir, not opts.release)
    )
    if stale is None and not opts.release:
        return BuildResult(
            True, [], time.perf_counter() - start, ["up to date"], _locked_outputs(recipe_path)
        )
    recipe = load_recipe(recipe_path)
    if opts.release:
        _check_release(recipe, opts)
    if opts.locked and stale is not None:
        raise TrtbuildError(
            f"{lockfile.lock_path(recipe.path)}: --locked, but the inputs no longer match the "
            f"lock ({stale})"
        )
    if stale is None:
        _sign(recipe, opts)
        return BuildResult(
            True, [], time.perf_counter() - start, ["up to date"], _locked_outputs(recipe_path)
        )
    recipe.check_files()
    check_owner(recipe, opts.out)
    store = open_store(opts, recipe)
    store.clean_orphans()
    memo = DigestMemo(CacheLayout(cache_dir).digests, trust_stat=not opts.release)
    tools = toolchain()
    lock_file = lockfile.lock_path(recipe.path)
    opts.report(f"building: {stale}")
    started = now()
    targets = select(
        recipe, recipe.targets(opts.backend, opts.budget), opts.models, opts.precisions
    )
    executor = make_executor(opts, recipe, targets, store)
    run = RunContext(
        recipe,
        opts,
        store,
        memo,
        executor,
        lockfile.read_lock(lock_file),
        load_observations(store.root),
        disk.Ledger(opts.disk_check),
    )
    # A cluster runs the targets side by side; here the memory gate admits what fits.
    workers = len(targets) if executor.name == "ray" else opts.jobs
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(lambda t: _build_target(run, t), targets))
    except BaseException:
        executor.close(failed=True)
        raise
    executor.close(failed=False)
    if opts.subset:
        memo.save()
        note = "a subset of the targets was built: the lock and provenance are left as they were"
        published = [r.dir for r in results if not r.failed]
        return BuildResult(False, results, time.perf_counter() - start, [note], published)
    dropped = write_outputs(
        recipe,
        results,
        invocation(opts),
        opts.out,
        tools,
        memo,
        started,
        lock_file,
        opts.write_lock,
        run.previous_lock,
    )
    if opts.write_lock:
        store.add_root(lock_file)
    memo.save()
    _sign(recipe, opts)
    notes = [n for r in results for n in r.notes] + dropped
    published = [r.dir for r in results if not r.failed]
    return BuildResult(False, results, time.perf_counter() - start, notes, published)


def _sign(recipe: Recipe, opts: Options) -> None:
    if opts.sign is not None:
        signing.sign_file(opts.out.resolve() / recipe.name / "provenance.json", opts.sign)


def _check_release(recipe: Recipe, opts: Options) -> None:
    for target in recipe.targets(opts.backend, opts.budget):
        if target.backend == "auto":
            raise TrtbuildError(
                f"{recipe.path}: model '{target.model.name}': --release needs an explicit backend, "
                'got backend = "auto" (set it in the recipe or pass --backend)'
            )


# ------------------------------------------------------------------------- one target


def _build_target(run: RunContext, target: Target) -> TargetResult:
    """One target: its graph job, plan, parts, check and published folder (a FAILED check
    publishes nothing). A process over its share re-plans with a refitted memory model."""
    recipe, store, memo, opts, executor = run.recipe, run.store, run.memo, run.opts, run.executor
    backend_name = resolve_backend(target.backend)
    quantize.check_backend(target, backend_name)  # fp8 is TensorRT's: said before any job
    budget = target.budget.host_memory
    before = memory_model(backend_name, None, None, opts.memory_override)  # the priors
    with executor.admit(before.export.fixed_bytes, budget, forked=not target.model.onnx) as share:
        graph_info = graph_job(recipe, target, store, memo, share, executor, opts.one_trace)
    try:
        return _build_planned(run, target, graph_info)
    finally:
        if graph_info.held is not None:  # no export followed (all cached, or a failure)
            executor.release(graph_info.held, "no export needed")


def _build_planned(run: RunContext, target: Target, graph_info: GraphResult) -> TargetResult:
    """The target once its graph is known: its plan, parts, check and published folder."""
    recipe, store, opts, executor = run.recipe, run.store, run.opts, run.executor
    backend_name = resolve_backend(target.backend)
    backend = get_backend(backend_name)
    budget = target.budget.host_memory
    graph = OpGraph.from_json(graph_info.graph)
    if target.model.weights is None and not target.model.onnx:  # its factory's own state
        graph_info = own_weights(recipe, target, list(graph.weights), graph_info, store, executor)
    out_dir = output_dir(opts.out, recipe.name, target.model.name, target.slot)
    notes = interface_notes(target.name, target.model.name, graph_info.graph)
    for note in notes:
        opts.report(note)
    locked = None if opts.memory_override else pinned(run.previous_lock, target, backend_name)
    observed = run.observed
    claimed: dict[str, Any] | None = None  # the disk estimate, checked before the first job
    for _attempt in range(MAX_REPLANS):
        memory = locked or quantize.memory_for(
            target,
            memory_model(
                backend_name,
                store.root,
                graph_info.base_bytes,
                opts.memory_override,
                graph_info.digest,
                observed,
                export_prior=source_export(target),
            ),
        )
        the_plan = plan_target(
            target,
            graph,
            graph_info,
            memory,
            opts.prove_seconds,
            opts.memory_override is not None,
            store,
            background=True,  # run reports the proof; it never waits for it to build
        )
        result = TargetResult(
            model=target.model.name,
            precision=target.precision,
            backend=backend_name,
            dir=out_dir,
            budget_bytes=budget,
            plan=the_plan,
            graph_job=graph_info,
            requested_backend=target.backend,
            memory=memory,
            kind=target.kind,
        )
        ctx = TargetContext(run, target, backend, graph, graph_info, the_plan, memory, result)
        if claimed is None:  # before the target's first export or build job
            claimed = disk.check(ctx)
        result.disk = claimed
        opts.report(
            f"{target.name}: {len(the_plan.parts)} part(s), boundary {format_size(the_plan.boundary_bytes)}"
        )
        opts.on_plan(result)
        ref = check.reference(ctx)
        try:
            result.calibration = quantize.calibration(ctx)  # int8, fp8: cached, or computed
            warning = quantize.warning(target, result.calibration)
            if warning and warning not in notes:
                notes.append(warning)
            result.parts = build_parts(ctx, ref)
        except Overrun as over:
            if over.observation.stage == "export" and ref is not None and not ref.cached():
                # Its peak is the reference's as much as the export's: no fit to learn from it.
                raise check.too_big(target, over.observation.peak_bytes) from None
            record(store.root, [over.observation])
            locked = observed = None  # the pinned model was wrong for this machine: refit
            note = (
                f"{target.name}: part {over.index} {over.observation.stage} process crossed its "
                f"memory share (peak {format_size(over.observation.peak_bytes)}); the memory "
                "model is refitted and the target planned again"
            )
            opts.report(note)
            notes.append(note)
            continue
        record(store.root, quantize.fitted(target, observations(result, graph_info)))
        result.notes = notes
        if ref is None:
            why = "--no-check" if not opts.check else "check.enabled = false in the recipe"
            notes.append(f"{target.name}: engines not checked against the model ({why})")
        else:
            result.check = check.check_target(ctx, ref)
            opts.report(result.check["message"])
            if not result.check["passed"]:
                # precision_search: the fewest modules at fp32 that pass, if asked and found
                result = search(ctx, ref) or result
        result.plan = settle(result.plan, store)
        if result.failed:
            return result  # FAILED: not published, its previous folder stays as it was
        publish(result, recipe, store)
        return result
    raise TrtbuildError(
        f"{target.name}: builds kept crossing the budget after {MAX_REPLANS} re-plans"
    )


def output_dir(out: Path, *names: str) -> Path:
    """out/<recipe>/<model>/<precision>, refusing any name that would leave the output root."""
    root = out.resolve()
    folder = root.joinpath(*names).resolve()
    if (
        not folder.is_relative_to(root)
        or folder == root
        or any(n in ("", ".", "..") for n in names)
    ):
        raise TrtbuildError(f"{folder}: refusing to write outside the output root {root}")
    return folder
