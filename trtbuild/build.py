"""trtbuild.build(): recipe -> graphs -> plans -> cached part actions -> published engines.

The orchestrating process never imports torch: graphs, exports and engine builds run in worker
processes (trtbuild.worker), one job each, measured and watched by the executor.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbuild import actions, fastpath, lockfile
from trtbuild.backends import get_backend, resolve_backend
from trtbuild.digests import DigestMemo
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.executor import MemoryGate, run_job
from trtbuild.graph import OpGraph
from trtbuild.graphjob import GraphJob, graph_job
from trtbuild.inputs import machine
from trtbuild.memory import MemoryModel, Observation, memory_model, record
from trtbuild.planner import Part, Plan, plan
from trtbuild.publish import now, publish, write_outputs
from trtbuild.recipe import DynamicShape, Recipe, Target, load_recipe
from trtbuild.results import BuildResult, PartResult, TargetResult
from trtbuild.sizes import format_size
from trtbuild.store import Store, default_cache_dir, sha256_file
from trtbuild.toolchain import toolchain

MAX_REPLANS = 4
Report = Callable[[str], None]


@dataclass
class Options:
    backend: str | None = None
    budget: int | None = None
    out: Path = Path("build")
    cache: Path | None = None
    jobs: int = field(default_factory=lambda: auto_jobs())  # the memory gate still applies
    locked: bool = False
    release: bool = False
    report: Report = lambda message: None
    on_plan: Callable[[TargetResult], None] = lambda t: None  # a target was (re-)planned
    on_part: Callable[[TargetResult, PartResult], None] = lambda t, p: None
    memory_override: MemoryModel | None = None
    write_lock: bool = True  # False for `trtbuild verify`: rebuild without touching the lock
    previous_lock: dict[str, Any] | None = None


def auto_jobs() -> int:
    """One job per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def invocation(opts: Options) -> dict[str, Any]:
    return fastpath.invocation(opts.backend, opts.budget, opts.out, opts.release)


def build(recipe_path: str | Path, opts: Options | None = None) -> BuildResult:
    """Build every target of the recipe; "up to date" without importing torch when nothing changed."""
    opts = opts or Options()
    start = time.perf_counter()
    cache_dir = (opts.cache or default_cache_dir()).resolve()
    # A release build trusts no stat memo: every input is hashed again.
    stale = fastpath.stale(Path(recipe_path), invocation(opts), cache_dir, not opts.release)
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
        return BuildResult(True, [], time.perf_counter() - start, ["up to date"])
    recipe.check_files()
    store = Store(cache_dir)
    store.clean_orphans()
    memo = DigestMemo(cache_dir / "digests.json", trust_stat=not opts.release)
    tools = toolchain()
    lock_file = lockfile.lock_path(recipe.path)
    opts.previous_lock = lockfile.read_lock(lock_file)
    opts.report(f"building: {stale}")
    started = now()
    gate = MemoryGate(opts.jobs)
    targets = recipe.targets(opts.backend, opts.budget)
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        results = list(
            pool.map(lambda t: _build_target(recipe, t, store, memo, opts, gate), targets)
        )
    write_outputs(recipe, results, invocation(opts), opts.out, tools, memo, started, lock_file,
                  opts.write_lock)  # fmt: skip
    memo.save()
    notes = [n for r in results for n in r.notes]
    return BuildResult(False, results, time.perf_counter() - start, notes)


@dataclass
class PlannedTarget:
    target: Target
    backend: str
    graph: OpGraph
    plan: Plan
    job: GraphJob


def plan_targets(recipe_path: str | Path, opts: Options | None = None, model: str | None = None,
                 precision: str | None = None) -> list[PlannedTarget]:  # fmt: skip
    """Plans of the recipe's targets (optionally one model / precision); builds nothing.

    Planning needs only the memory model, so `--backend tensorrt` plans work without TensorRT.
    """
    opts = opts or Options()
    recipe = load_recipe(recipe_path)
    recipe.check_files()
    store = Store((opts.cache or default_cache_dir()).resolve())
    memo = DigestMemo(store.root / "digests.json")
    targets = [
        t for t in recipe.targets(opts.backend, opts.budget)
        if (model is None or t.model.name == model) and (precision is None or t.precision == precision)
    ]  # fmt: skip
    if not targets:
        raise TrtbuildError(f"{recipe.path}: no target matches model={model} precision={precision}")
    out = []
    for target in targets:
        backend = resolve_backend(target.backend)
        job = graph_job(recipe, target, store, memo, None)  # planning only: measured, not capped
        graph = OpGraph.from_json(job.graph)
        memory = memory_model(backend, store.root, job.base_bytes, opts.memory_override)
        the_plan = plan(graph, target.budget.host_memory, memory)
        out.append(PlannedTarget(target, backend, graph, the_plan, job))
    memo.save()
    return out


def _check_release(recipe: Recipe, opts: Options) -> None:
    for target in recipe.targets(opts.backend, opts.budget):
        if target.backend == "auto":
            raise TrtbuildError(
                f"{recipe.path}: model '{target.model.name}': --release needs an explicit backend, "
                'got backend = "auto" (set it in the recipe or pass --backend)'
            )


# ------------------------------------------------------------------------- one target


def _build_target(
    recipe: Recipe, target: Target, store: Store, memo: DigestMemo, opts: Options, gate: MemoryGate
) -> TargetResult:
    backend_name = resolve_backend(target.backend)
    backend = get_backend(backend_name)
    budget = target.budget.host_memory
    before = memory_model(backend_name, store.root, None, opts.memory_override)
    with gate.admit(before.export.fixed_bytes, budget) as share:
        graph_info = graph_job(recipe, target, store, memo, share)
    graph = OpGraph.from_json(graph_info.graph)
    out_dir = output_dir(opts.out, recipe.name, target.model.name, target.precision)
    notes: list[str] = []
    for _attempt in range(MAX_REPLANS):
        memory = memory_model(backend_name, store.root, graph_info.base_bytes, opts.memory_override)
        the_plan = plan(graph, budget, memory)
        result = TargetResult(target.model.name, target.precision, backend_name, out_dir, budget,
                              the_plan, graph_info, target.backend)  # fmt: skip
        opts.report(
            f"{target.name}: {len(the_plan.parts)} part(s), boundary {format_size(the_plan.boundary_bytes)}"
        )
        opts.on_plan(result)
        try:
            result.parts = _build_parts(recipe, target, graph, graph_info, the_plan, memory,
                                        backend, store, opts, result, gate)  # fmt: skip
        except _Overrun as over:
            record(store.root, [over.observation])
            note = (
                f"{target.name}: part {over.index} {over.observation.stage} process crossed its "
                f"memory share (peak {format_size(over.observation.peak_bytes)}); memory model "
                "refitted, re-planned and rebuilt"
            )
            opts.report(note)
            notes.append(note)
            continue
        record(store.root, observations(result, graph_info))
        publish(result, recipe, store)
        result.notes = notes
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


class _Overrun(Exception):
    def __init__(self, index: int, observation: Observation) -> None:
        super().__init__(observation.stage)
        self.index, self.observation = index, observation


def observations(result: TargetResult, job: GraphJob) -> list[Observation]:
    """The processes this build ran (cached parts ran none), as memory-model observations."""
    base = job.base_bytes or 0
    seen = []
    for part in result.parts:
        for p in [] if part.cached else part.record["processes"]:
            own = base if p["kind"] == "export" else 0
            seen.append(Observation(p["kind"], result.backend, part.record["weight_bytes"], own,
                                    p["peak_rss_bytes"]))  # fmt: skip
    return seen


def part_fields(target: Target, graph: OpGraph, job: GraphJob, the_plan: Plan, backend: str,
                settings: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The action-key fields of every part of a plan (see trtbuild.actions.KEY_FIELDS)."""
    facts, inputs = machine(backend), job.inputs.digest()
    return [
        actions.part_fields(
            graph, part, job.weight_digests, inputs, target.precision, settings, facts
        )
        for part in the_plan.parts
    ]


def _build_parts(recipe: Recipe, target: Target, graph: OpGraph, graph_info: GraphJob, the_plan: Plan,
                 memory: MemoryModel, backend: Any, store: Store, opts: Options,
                 result: TargetResult, gate: MemoryGate) -> list[PartResult]:  # fmt: skip
    settings = backend_settings(recipe, target, backend.name, opts.release)
    all_fields = part_fields(target, graph, graph_info, the_plan, backend.name, settings)
    old = _old_fields(opts, target)

    def one(part: Part) -> PartResult:
        fields = all_fields[part.index]
        key = actions.action_key(fields)
        cached = store.get_action(key)
        if cached is None:
            with (
                gate.admit(part.predicted_peak_bytes, target.budget.host_memory) as share,
                store.locked(key),
            ):
                cached = store.get_action(key)
                if cached is None:
                    reason = actions.explain(old.get(part.index), actions.field_digests(fields))
                    opts.report(f"{target.name} part {part.index}: {reason}")
                    cached = _run_part(recipe, target, graph_info, part, memory, backend,
                                       settings, store, key, share)  # fmt: skip
                    store.put_action(key, cached)
                    built = True
                else:
                    built = False
        else:
            built = False
        blobs = dict(cached["blobs"])
        res = PartResult(part.index, key, not built, cached["peak_rss_bytes"], cached["seconds"],
                         blobs.pop("engine"), f"part{part.index}{backend.engine_suffix}", blobs,
                         actions.field_digests(fields), cached)  # fmt: skip
        opts.on_part(result, res)
        return res

    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        return list(pool.map(one, the_plan.parts))


def _old_fields(opts: Options, target: Target) -> dict[int, dict[str, str]]:
    """Per-part field digests the lock recorded for this target, for "why rebuilt" messages."""
    entry = lockfile.target_entry(opts.previous_lock, target.model.name, target.precision)
    return {p["index"]: p["fields"] for p in entry.get("part", [])}


def _run_part(recipe: Recipe, target: Target, graph_info: GraphJob, part: Part, memory: MemoryModel,
              backend: Any, settings: dict[str, Any], store: Store, key: str,
              share: int) -> dict[str, Any]:  # fmt: skip
    scratch = store.scratch()
    try:
        onnx_path, engine_path = (
            scratch / "part.onnx",
            scratch / f"{key[:16]}{backend.engine_suffix}",
        )
        part_json = {
            "ops": part.ops, "weights": part.weights,
            "inputs": [t.__dict__ for t in part.inputs], "outputs": [t.__dict__ for t in part.outputs],
        }  # fmt: skip
        processes = []
        for stage, job in (
            ("export", {"kind": "export", "recipe": str(recipe.path), "model": target.model.name,
                        "precision": target.precision, "part": part_json, "graph_digest": graph_info.digest,
                        "onnx": str(onnx_path), "opset": settings["opset"]}),
            ("build", {"kind": "build", "backend": backend.name, "onnx": str(onnx_path),
                       "engine": str(engine_path),
                       "settings": {**settings, **build_inputs(recipe, target, part)}}),
        ):  # fmt: skip
            try:
                outcome = run_job(job, scratch, share)
            except BudgetExceeded as exc:
                base = (graph_info.base_bytes or 0) if stage == "export" else 0
                seen = Observation(stage, backend.name, part.weight_bytes, base, exc.peak_rss_bytes)
                raise _Overrun(part.index, seen) from None
            processes.append({"kind": stage, "peak_rss_bytes": outcome.peak_rss_bytes,
                              "predicted_peak_bytes": memory.stage(stage).predict(part.weight_bytes),
                              "seconds": round(outcome.seconds, 3), "started": outcome.started,
                              "ended": outcome.ended, **outcome.result})  # fmt: skip
        # The builder reads the part's ONNX, which holds exactly the weights the exporter loaded.
        processes[-1]["weights_loaded"] = processes[0]["weights_loaded"]
        blobs = {"engine": store.put_file(engine_path)}
        for name in processes[-1].get("sidecars", []):
            blobs[name] = store.put_file(scratch / name)
        return {
            "key": key,
            "blobs": blobs,
            "peak_rss_bytes": max(p["peak_rss_bytes"] for p in processes),
            "seconds": round(sum(p["seconds"] for p in processes), 3),
            "weight_bytes": part.weight_bytes,
            "predicted_peak_bytes": part.predicted_peak_bytes,
            "memory_limit_bytes": share,
            "processes": processes,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def backend_settings(recipe: Recipe, target: Target, backend: str, release: bool) -> dict[str, Any]:
    """Every backend setting of a target; all of it goes into the action key."""
    settings: dict[str, Any] = {"opset": target.defaults.opset}
    if backend == "tensorrt":
        trt = target.defaults.tensorrt
        settings.update(
            gpu_workspace=target.budget.gpu_workspace, host_memory=target.budget.host_memory,
            tensorrt=trt.model_dump(mode="json"), release=release,
        )  # fmt: skip
        if trt.timing_cache:
            path = recipe.resolve(trt.timing_cache)
            if not path.is_file():
                raise TrtbuildError(
                    f"{recipe.path}: field 'defaults.tensorrt.timing_cache': expected a timing "
                    f"cache file, but {path} does not exist"
                )
            settings["timing_cache_sha256"] = sha256_file(path)
    return settings


def build_inputs(recipe: Recipe, target: Target, part: Part) -> dict[str, Any]:
    """What a builder needs beyond the key's settings: precision, input ranges, file paths."""
    ranges = {i.name: i.shape for i in target.model.inputs if isinstance(i.shape, DynamicShape)}
    inputs = []
    for t in part.inputs:
        entry: dict[str, Any] = {"name": t.name, "shape": t.shape}
        if t.name in ranges:
            entry.update(min=ranges[t.name].min, opt=ranges[t.name].opt, max=ranges[t.name].max)
        inputs.append(entry)
    cache = target.defaults.tensorrt.timing_cache
    return {"precision": target.precision, "inputs": inputs,
            "timing_cache_path": str(recipe.resolve(cache)) if cache else None}  # fmt: skip
