"""trtbuild.orchestrate(): recipe -> graphs -> plans -> cached part actions -> published engines.

The orchestrating process never imports torch: graphs, exports and engine builds run in worker
processes (trtbuild.worker), one job each, measured and watched by the executor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbuild import check, disk, fastpath, forkserver, lockfile, signing
from trtbuild.backends import get_backend, resolve_backend
from trtbuild.digests import DigestMemo
from trtbuild.errors import BudgetTooSmall, TrtbuildError
from trtbuild.executor import Executor, LocalExecutor, worker_env
from trtbuild.forkserver import EXPECTED_BYTES, ForkServer
from trtbuild.graph import OpGraph
from trtbuild.graphcheck import check_dtypes
from trtbuild.graphjob import GraphResult, graph_job
from trtbuild.interface import interface_notes
from trtbuild.layout import CacheLayout, project_root
from trtbuild.memory import (
    MemoryModel,
    Observation,
    load_observations,
    memory_model,
    pinned,
    record,
)
from trtbuild.parts import Overrun, build_parts, local_kinds, observations
from trtbuild.planner import Plan, plan
from trtbuild.planner.plan import PROVE_SECONDS
from trtbuild.publish import check_owner, now, publish, write_outputs
from trtbuild.recipe import Recipe, Target, load_recipe
from trtbuild.remote import RemoteCache
from trtbuild.results import BuildResult, PartResult, TargetResult
from trtbuild.sizes import format_size
from trtbuild.statejob import own_weights
from trtbuild.store import Store, default_cache_dir
from trtbuild.toolchain import toolchain

MAX_REPLANS = 4
REMOTE_ENV = "TRTBUILD_REMOTE_CACHE"
RAY_ENV = "TRTBUILD_RAY_ADDRESS"
Report = Callable[[str], None]


@dataclass
class Options:
    backend: str | None = None
    budget: int | None = None
    out: Path = field(default_factory=lambda: project_root() / "build")
    cache: Path | None = None
    jobs: int = field(default_factory=lambda: auto_jobs())  # the memory gate still applies
    locked: bool = False
    release: bool = False
    sign: Path | None = None  # an Ed25519 key: sign the release provenance (signing.py)
    report: Report = lambda message: None
    on_plan: Callable[[TargetResult], None] = lambda t: None  # a target was (re-)planned
    on_part: Callable[[TargetResult, PartResult], None] = lambda t, p: None
    memory_override: MemoryModel | None = None
    prove_seconds: float = PROVE_SECONDS  # time to prove a heuristic plan's lower bound
    write_lock: bool = True  # False for `trtbuild verify`: rebuild without touching the lock
    # Fork torch jobs from one server process (see forkserver.py); TRTBUILD_FORK_SERVER=0: never.
    fork_server: bool = field(default_factory=lambda: os.environ.get("TRTBUILD_FORK_SERVER") != "0")
    previous_lock: lockfile.Lock | None = None
    # memory.json as the run found it: every target's first plan is made with it, as `plan`
    # would make it (a target built meanwhile, of the same graph, does not move another's plan).
    observed: list[Observation] | None = None
    # Bazel HTTP cache behind the local one (remote.py); else the recipe's [cache] remote.
    remote_cache: str | None = field(default_factory=lambda: os.environ.get(REMOTE_ENV) or None)
    executor: str | None = None  # "local" or "ray"; None: the recipe's [executor] kind
    ray_address: str | None = field(default_factory=lambda: os.environ.get(RAY_ENV) or None)
    check: bool = True  # check every target's engines against its model (check.py)
    # Build only these models / precisions (run --model/--precision); None: every target. A
    # subset publishes its targets' folders but leaves the lock and provenance as they were: those
    # describe whole-recipe builds.
    models: list[str] | None = None
    precisions: list[str] | None = None
    disk_check: bool = True  # refuse a build whose disk estimate exceeds the free space (disk.py)
    ledger: disk.Ledger = field(default_factory=disk.Ledger)  # the run's disk claims

    def __post_init__(self) -> None:
        """Paths may be given as strings, as a notebook user writes them."""
        self.out = Path(self.out)
        self.cache = Path(self.cache) if self.cache is not None else None
        self.sign = Path(self.sign) if self.sign is not None else None

    @property
    def subset(self) -> bool:
        return self.models is not None or self.precisions is not None


def open_store(opts: Options, recipe: Recipe | None = None) -> Store:
    """The run's cache: the local folder, with the remote cache behind it if one is named."""
    url = opts.remote_cache or (recipe.schema.cache.remote if recipe else None)
    remote = RemoteCache(url) if url else None
    if remote is not None:
        remote.check()
    return Store((opts.cache or default_cache_dir()).resolve(), remote)


def make_executor(opts: Options, recipe: Recipe, targets: list[Target], store: Store) -> Executor:
    """The run's executor: Options (the CLI) first, then the recipe's [executor] table."""
    spec = recipe.schema.executor
    if (opts.executor or spec.kind) == "ray":
        from trtbuild.rayexec import RayExecutor

        address = opts.ray_address or spec.address
        if address:
            return RayExecutor(address, opts.jobs, set())
        # A cluster started here offers what this machine is, never what a recipe asks for.
        here = {k for t in targets for k in local_kinds(resolve_backend(t.backend))}
        return RayExecutor(None, opts.jobs, here)
    return LocalExecutor(opts.jobs, fork_server(opts, targets, store))


def auto_jobs() -> int:
    """One job per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def fork_server(opts: Options, targets: list[Target], store: Store) -> ForkServer | None:
    """A fork server for this run, unless turned off or a budget is too small to share with it.

    The server holds about EXPECTED_BYTES while it runs; where a budget is under twice that, each
    job gets the whole budget to itself in a plain process instead.
    """
    if not opts.fork_server or any(t.budget.host_memory < 2 * EXPECTED_BYTES for t in targets):
        return None
    return forkserver.for_run(store.layout.tmp / f"{os.getpid()}-forkserver.log", worker_env())


def invocation(opts: Options) -> dict[str, Any]:
    return fastpath.invocation(opts.backend, opts.budget, opts.out, opts.release, opts.check)


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
        return BuildResult(True, [], time.perf_counter() - start, ["up to date"])
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
        return BuildResult(True, [], time.perf_counter() - start, ["up to date"])
    recipe.check_files()
    check_owner(recipe, opts.out)
    store = open_store(opts, recipe)
    store.clean_orphans()
    memo = DigestMemo(CacheLayout(cache_dir).digests, trust_stat=not opts.release)
    tools = toolchain()
    lock_file = lockfile.lock_path(recipe.path)
    opts.previous_lock = lockfile.read_lock(lock_file)
    opts.observed = load_observations(store.root)
    opts.report(f"building: {stale}")
    started = now()
    targets = select(
        recipe, recipe.targets(opts.backend, opts.budget), opts.models, opts.precisions
    )
    executor = make_executor(opts, recipe, targets, store)
    opts.ledger = disk.Ledger(opts.disk_check)
    # A cluster runs the targets side by side; here the memory gate admits what fits.
    workers = len(targets) if executor.name == "ray" else opts.jobs
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(
                pool.map(lambda t: _build_target(recipe, t, store, memo, opts, executor), targets)
            )
    except BaseException:
        executor.close(failed=True)
        raise
    executor.close(failed=False)
    if opts.subset:
        memo.save()
        note = "a subset of the targets was built: the lock and provenance are left as they were"
        return BuildResult(False, results, time.perf_counter() - start, [note])
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
    )
    if opts.write_lock:
        store.add_root(lock_file)
    memo.save()
    _sign(recipe, opts)
    notes = [n for r in results for n in r.notes] + dropped
    return BuildResult(False, results, time.perf_counter() - start, notes)


@dataclass
class PlannedTarget:
    target: Target
    backend: str
    graph: OpGraph
    plan: Plan
    job: GraphResult


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
        memory = locked or memory_model(
            backend, store.root, job.base_bytes, opts.memory_override, job.digest
        )
        the_plan = plan_target(
            target, graph, job, memory, opts.prove_seconds, opts.memory_override is not None
        )
        out.append(PlannedTarget(target, backend, graph, the_plan, job))
    memo.save()
    return out


def plan_target(
    target: Target,
    graph: OpGraph,
    job: GraphResult,
    memory: MemoryModel,
    prove_seconds: float,
    override: bool,
) -> Plan:
    """The target's plan. Its graph job runs within the budget too, so its measured peak is a
    floor of the smallest feasible budget (not under a memory_override: that is the whole cost).

    Raises TrtbuildError naming the target and the smallest budget that works when none fits.
    """
    check_dtypes(graph, target.model.name)
    floor = 0 if override else job.peak_rss_bytes
    try:
        return plan(graph, target.budget.host_memory, memory, prove_seconds, floor)
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


def _build_target(
    recipe: Recipe,
    target: Target,
    store: Store,
    memo: DigestMemo,
    opts: Options,
    executor: Executor,
) -> TargetResult:
    backend_name = resolve_backend(target.backend)
    backend = get_backend(backend_name)
    budget = target.budget.host_memory
    before = memory_model(backend_name, None, None, opts.memory_override)  # the priors
    with executor.admit(before.export.fixed_bytes, budget, forked=True) as share:
        graph_info = graph_job(recipe, target, store, memo, share, executor)
    graph = OpGraph.from_json(graph_info.graph)
    if target.model.weights is None:  # the model's own state after its factory ran
        graph_info = own_weights(recipe, target, list(graph.weights), graph_info, store, executor)
    out_dir = output_dir(opts.out, recipe.name, target.model.name, target.slot)
    notes = interface_notes(target.name, target.model.name, graph_info.graph)
    for note in notes:
        opts.report(note)
    locked = None if opts.memory_override else pinned(opts.previous_lock, target, backend_name)
    observed = opts.observed
    claimed: dict[str, Any] | None = None  # the disk estimate, checked before the first job
    for _attempt in range(MAX_REPLANS):
        memory = locked or memory_model(
            backend_name,
            store.root,
            graph_info.base_bytes,
            opts.memory_override,
            graph_info.digest,
            observed,
        )
        the_plan = plan_target(
            target,
            graph,
            graph_info,
            memory,
            opts.prove_seconds,
            opts.memory_override is not None,
        )
        result = TargetResult(
            target.model.name,
            target.precision,
            backend_name,
            out_dir,
            budget,
            the_plan,
            graph_info,
            target.backend,
            memory=memory,
            kind=target.kind,
        )
        opts.report(
            f"{target.name}: {len(the_plan.parts)} part(s), boundary {format_size(the_plan.boundary_bytes)}"
        )
        opts.on_plan(result)
        if _attempt == 0:  # before the target's first export or build job
            args = (recipe, target, graph, graph_info, the_plan, backend_name, store, opts.out)
            claimed = disk.check(opts.ledger, *args, opts.release)
        result.disk = claimed
        ref = check.reference(recipe, target, graph, graph_info, the_plan, store, opts)
        try:
            result.parts = build_parts(
                recipe,
                target,
                graph,
                graph_info,
                the_plan,
                memory,
                backend,
                store,
                opts,
                result,
                executor,
                ref,
            )
        except Overrun as over:
            if over.observation.stage == "export" and ref is not None and not ref.cached():
                # Its peak is the reference's as much as the export's: no fit to learn from it.
                raise check.too_big(target, over.observation.peak_bytes) from None
            record(store.root, [over.observation])
            locked = observed = None  # the pinned model was wrong for this machine: refit
            note = (
                f"{target.name}: part {over.index} {over.observation.stage} process crossed its "
                f"memory share (peak {format_size(over.observation.peak_bytes)}); memory model "
                "refitted, re-planned and rebuilt"
            )
            opts.report(note)
            notes.append(note)
            continue
        record(store.root, observations(result, graph_info))
        result.notes = notes
        if ref is None:
            why = "--no-check" if not opts.check else "check.enabled = false in the recipe"
            notes.append(f"{target.name}: engines not checked against the model ({why})")
        else:
            result.check = check.check_target(
                recipe, target, ref, result, memory, store, opts, executor
            )
            opts.report(result.check["message"])
            if not result.check["passed"]:
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
