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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtbuild import actions, fastpath, manifest
from trtbuild.backends import get_backend, resolve_backend
from trtbuild.digests import DigestMemo
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.executor import MemoryGate, run_job
from trtbuild.graph import OpGraph
from trtbuild.memory import MemoryModel, memory_model, save_corrections
from trtbuild.planner import Part, Plan, plan
from trtbuild.recipe import DynamicShape, Recipe, Target, load_recipe
from trtbuild.sizes import format_size
from trtbuild.store import Store, default_cache_dir, sha256_file
from trtbuild.toolchain import toolchain

MAX_REPLANS = 4
Report = Callable[[str], None]


@dataclass
class PartResult:
    index: int
    key: str
    cached: bool
    peak_rss_bytes: int
    seconds: float
    sha256: str
    engine: str
    sidecars: dict[str, str]  # file name -> sha256 of files the engine reads beside it
    fields: dict[str, str]
    record: dict[str, Any]


@dataclass
class TargetResult:
    model: str
    precision: str
    backend: str
    dir: Path
    budget_bytes: int
    plan: Plan
    parts: list[PartResult] = field(default_factory=list)
    graph_job: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what happened: re-plans after overruns


@dataclass
class BuildResult:
    up_to_date: bool
    targets: list[TargetResult]
    seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Options:
    backend: str | None = None
    budget: int | None = None
    out: Path = Path("build")
    cache: Path | None = None
    jobs: int = 1
    locked: bool = False
    release: bool = False
    report: Report = lambda message: None
    on_plan: Callable[[TargetResult], None] = lambda t: None  # a target was (re-)planned
    on_part: Callable[[TargetResult, PartResult], None] = lambda t, p: None
    memory_override: MemoryModel | None = None
    write_lock: bool = True  # False for `trtbuild verify`: rebuild without touching the lock
    previous_lock: dict[str, Any] | None = None


def invocation(opts: Options) -> dict[str, Any]:
    return fastpath.invocation(opts.backend, opts.budget, opts.out, opts.release)


def build(recipe_path: str | Path, opts: Options | None = None) -> BuildResult:
    """Build every target of the recipe; "up to date" without importing torch when nothing changed."""
    opts = opts or Options()
    start = time.perf_counter()
    cache_dir = (opts.cache or default_cache_dir()).resolve()
    stale = fastpath.staleness(Path(recipe_path), invocation(opts), cache_dir)
    if stale.reason is None and not opts.release:
        return BuildResult(True, [], time.perf_counter() - start, ["up to date"])
    recipe = load_recipe(recipe_path)
    if opts.release:
        _check_release(recipe, opts)
    if opts.locked and stale.reason is not None:
        raise TrtbuildError(
            f"{manifest.lock_path(recipe.path)}: --locked, but the inputs no longer match the "
            f"lock ({stale.reason})"
        )
    if stale.reason is None:
        return BuildResult(True, [], time.perf_counter() - start, ["up to date"])
    recipe.check_files()
    store = Store(cache_dir)
    memo = DigestMemo(cache_dir / "digests.json")
    tools = toolchain()
    lock_file = manifest.lock_path(recipe.path)
    opts.previous_lock = manifest.read_lock(lock_file)
    opts.report(f"building: {stale.reason}")
    started = _now()
    gate = MemoryGate(opts.jobs)
    targets = recipe.targets(opts.backend, opts.budget)
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
        results = list(
            pool.map(lambda t: _build_target(recipe, t, store, memo, opts, gate), targets)
        )
    _write_outputs(recipe, results, opts, tools, memo, started, lock_file)
    memo.save()
    notes = [n for r in results for n in r.notes]
    return BuildResult(False, results, time.perf_counter() - start, notes)


@dataclass
class PlannedTarget:
    target: Target
    backend: str
    graph: OpGraph
    plan: Plan
    weight_digests: dict[str, str]


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
        graph_info = _graph(
            recipe, target, store, memo, None
        )  # planning only: measured, not capped
        graph = OpGraph.from_json(graph_info["graph"])
        memory = opts.memory_override or memory_model(backend, store.root)
        the_plan = plan(graph, target.budget.host_memory, memory)
        out.append(PlannedTarget(target, backend, graph, the_plan, graph_info["weight_digests"]))
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
    memory = opts.memory_override or memory_model(backend_name, store.root)
    with gate.admit(memory.export.fixed_bytes, budget) as share:
        graph_info = _graph(recipe, target, store, memo, share)
    graph = OpGraph.from_json(graph_info["graph"])
    out_dir = (opts.out / recipe.name / target.model.name / target.precision).resolve()
    notes: list[str] = []
    for _attempt in range(MAX_REPLANS):
        the_plan = plan(graph, budget, memory)
        result = TargetResult(target.model.name, target.precision, backend_name, out_dir, budget, the_plan,
                              graph_job=graph_info)  # fmt: skip
        opts.report(
            f"{target.name}: {len(the_plan.parts)} part(s), boundary {format_size(the_plan.boundary_bytes)}"
        )
        opts.on_plan(result)
        try:
            result.parts = _build_parts(
                recipe, target, graph, graph_info, the_plan, backend, store, opts, result, gate
            )
        except _Overrun as over:
            memory = memory.corrected(over.stage, over.weight_bytes, over.peak)
            save_corrections(backend_name, memory, store.root)
            note = (
                f"{target.name}: part {over.index} {over.stage} process crossed its memory share "
                f"(peak {format_size(over.peak)}); memory model corrected, re-planned and rebuilt"
            )
            opts.report(note)
            notes.append(note)
            continue
        _publish(result, recipe, target, store)
        result.notes = notes
        return result
    raise TrtbuildError(
        f"{target.name}: builds kept crossing the budget after {MAX_REPLANS} re-plans"
    )


def _graph(
    recipe: Recipe, target: Target, store: Store, memo: DigestMemo, budget: int | None
) -> dict[str, Any]:
    """The target's OpGraph, from the cache when its source files (depfile) are unchanged."""
    spec = target.model
    key = "graph-" + actions.digest(
        [1, spec.model_dump(mode="json"), target.precision, toolchain()]
    )
    cached = store.get_action(key)
    if cached and _deps_unchanged(cached["deps"], memo):
        return dict(cached["result"])
    scratch = store.scratch()
    try:
        outcome = run_job({"kind": "graph", "recipe": str(recipe.path), "model": spec.name,
                           "precision": target.precision}, scratch, budget)  # fmt: skip
    except BudgetExceeded as exc:
        raise TrtbuildError(
            f"budget {format_size(budget or 0)} is too small for {target.name}: exporting its graph on "
            f"the meta device (no weights) alone reached {format_size(exc.peak_rss_bytes)}"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = [Path(p) for p in outcome.result["sources"]]
    if isinstance(spec.weights, str):
        files.append(recipe.resolve(spec.weights))
    result = {
        **outcome.result,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "seconds": outcome.seconds,
    }
    deps = {str(p): memo.sha256(p) for p in files}
    store.put_action(key, {"deps": deps, "result": result, "blobs": {}})
    return result


def _deps_unchanged(deps: dict[str, str], memo: DigestMemo) -> bool:
    return all(Path(p).is_file() and memo.sha256(Path(p)) == sha for p, sha in deps.items())


class _Overrun(Exception):
    def __init__(self, index: int, stage: str, weight_bytes: int, peak: int) -> None:
        super().__init__(stage)
        self.index, self.stage, self.weight_bytes, self.peak = index, stage, weight_bytes, peak


def part_fields(target: Target, graph: OpGraph, graph_info: dict[str, Any], the_plan: Plan,
                backend: Any, settings: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The action-key fields of every part of a plan (see trtbuild.actions.KEY_FIELDS)."""
    fingerprint, tools = backend.fingerprint(), toolchain()
    return [
        actions.part_fields(
            graph,
            part,
            graph_info["weight_digests"],
            target.precision,
            settings,
            fingerprint,
            tools,
        )
        for part in the_plan.parts
    ]


def _build_parts(recipe: Recipe, target: Target, graph: OpGraph, graph_info: dict[str, Any], the_plan: Plan,
                 backend: Any, store: Store, opts: Options, result: TargetResult,
                 gate: MemoryGate) -> list[PartResult]:  # fmt: skip
    settings = backend_settings(recipe, target, backend.name, opts.release)
    all_fields = part_fields(target, graph, graph_info, the_plan, backend, settings)
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
                    cached = _run_part(
                        recipe, target, graph_info, part, backend, settings, store, key, share
                    )
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
    lock = opts.previous_lock or {}
    for entry in lock.get("target", []):
        if entry["model"] == target.model.name and entry["precision"] == target.precision:
            return {p["index"]: p["fields"] for p in entry.get("part", [])}
    return {}


def _run_part(recipe: Recipe, target: Target, graph_info: dict[str, Any], part: Part, backend: Any,
              settings: dict[str, Any], store: Store, key: str, share: int) -> dict[str, Any]:  # fmt: skip
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
                        "precision": target.precision, "part": part_json, "graph_digest": graph_info["digest"],
                        "onnx": str(onnx_path), "opset": settings["opset"]}),
            ("build", {"kind": "build", "backend": backend.name, "onnx": str(onnx_path),
                       "engine": str(engine_path),
                       "settings": {**settings, **build_inputs(recipe, target, part)}}),
        ):  # fmt: skip
            try:
                outcome = run_job(job, scratch, share)
            except BudgetExceeded as exc:
                raise _Overrun(part.index, stage, part.weight_bytes, exc.peak_rss_bytes) from None
            processes.append({"kind": stage, "peak_rss_bytes": outcome.peak_rss_bytes,
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


# ------------------------------------------------------------------------- publishing


def engine_description(result: TargetResult, recipe: Recipe) -> dict[str, Any]:
    plan_ = result.plan
    produced = {t.name: t for p in plan_.parts for t in p.outputs}
    model_inputs = {t.name: t for p in plan_.parts for t in p.inputs if t.from_part is None}
    spec_inputs = [
        i.name for i in next(m for m in recipe.schema.model if m.name == result.model).inputs
    ]
    outputs = [produced[n] for n in plan_.model_outputs]
    return {
        "schema": 1,
        "recipe": recipe.name,
        "model": result.model,
        "precision": result.precision,
        "backend": result.backend,
        "inputs": [_io(model_inputs[n]) for n in spec_inputs if n in model_inputs],
        "outputs": [_io(t) for t in outputs],
        "parts": [
            {
                "index": p.index,
                "engine": r.engine,
                "sha256": r.sha256,
                "sidecars": r.sidecars,
                "inputs": [t.name for t in p.inputs],
                "outputs": [t.name for t in p.outputs],
            }
            for p, r in zip(plan_.parts, result.parts)
        ],
    }


def _io(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": t.shape, "dtype": t.dtype}


def _publish(result: TargetResult, recipe: Recipe, target: Target, store: Store) -> None:
    """Swap the target's directory in whole: a reader never sees half of a build."""
    final = result.dir
    final.parent.mkdir(parents=True, exist_ok=True)
    description = engine_description(result, recipe)
    new = final.parent / f".{final.name}.new-{os.getpid()}"
    shutil.rmtree(new, ignore_errors=True)
    try:
        new.mkdir()
        for part in result.parts:
            store.export_blob(part.sha256, new / part.engine)
            for name, digest in part.sidecars.items():
                store.export_blob(digest, new / name)
        manifest.write_json(new / "engine.json", description)
        manifest.write_json(new / "build.json", {"parts": [p.record for p in result.parts],
                                                 "graph_process": _graph_record(result.graph_job)})  # fmt: skip
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(new, ignore_errors=True)
        raise TrtbuildError(f"{final}: cannot publish the build: {exc.strerror or exc}") from None


def _graph_record(info: dict[str, Any]) -> dict[str, Any]:
    return {"peak_rss_bytes": info.get("peak_rss_bytes"), "seconds": info.get("seconds")}


def _write_outputs(recipe: Recipe, results: list[TargetResult], opts: Options, tools: dict[str, str],
                   memo: DigestMemo, started: str, lock_file: Path) -> None:  # fmt: skip
    root = recipe.root
    files = [recipe.path]
    for r in results:
        files.extend(Path(p) for p in r.graph_job["sources"])
        spec = next(m for m in recipe.schema.model if m.name == r.model)
        if isinstance(spec.weights, str):
            files.append(recipe.resolve(spec.weights))
    entries = {manifest.relative(f, root): manifest.file_entry(f, memo, root) for f in files}
    lock: dict[str, Any] = {
        "lock": {"version": manifest.LOCK_VERSION, "recipe": recipe.name},
        "invocation": invocation(opts),
        "toolchain": tools,
        "file": [entries[k] for k in sorted(entries)],
        "target": [
            {
                "model": r.model,
                "precision": r.precision,
                "backend": r.backend,
                "dir": str(opts.out / recipe.name / r.model / r.precision),
                "budget_bytes": r.budget_bytes,
                "boundary_bytes": r.plan.boundary_bytes,
                "graph_digest": r.graph_job["digest"],
                "part": [
                    {
                        "index": p.index,
                        "key": p.key,
                        "engine": p.engine,
                        "sha256": p.sha256,
                        "sidecars": p.sidecars,
                        "peak_rss_bytes": p.peak_rss_bytes,
                        "fields": p.fields,
                    }
                    for p in r.parts
                ],
            }
            for r in results
        ],
    }
    subjects = [
        (f"{r.model}/{r.precision}/{name}", sha)
        for r in results for p in r.parts for name, sha in [(p.engine, p.sha256), *p.sidecars.items()]
    ]  # fmt: skip
    byproducts = [
        {"name": f"{r.model}/{r.precision}/{p.engine}", "annotations": {
            "peak_rss_bytes": p.peak_rss_bytes, "cached": p.cached, "action_key": p.key,
            "processes": p.record.get("processes", [])}}
        for r in results for p in r.parts
    ]  # fmt: skip
    params = {
        **invocation(opts), "recipe_path": str(recipe.path), "lock": str(lock_file.name),
        "targets": [{"model": r.model, "precision": r.precision, "backend": r.backend,
                     "budget_bytes": r.budget_bytes} for r in results],
    }  # fmt: skip
    statement = manifest.provenance(
        recipe.name, subjects, params, tools, lock["file"], byproducts, started, _now()
    )
    manifest.write_json(opts.out.resolve() / recipe.name / "provenance.json", statement)
    if opts.write_lock:
        manifest.write_lock(lock_file, lock)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
