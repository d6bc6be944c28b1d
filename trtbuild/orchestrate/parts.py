"""Build the parts of one plan: the cache's parts as they are, the others in two steps.

1. One export process writes the ONNX of every part the cache lacks: torch, the model's imports,
   its construction and its graph export are paid once per target, not once per part; weights
   are still streamed one tensor at a time, so its peak is that of the heaviest part alone.
2. One build process per part (the backend's builder), in parallel as the memory gate allows.

A process that crosses its memory share is stopped; `Overrun` carries what was measured, and
the caller refits the memory model and plans again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.cache.store import Store
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.execution.executor import Executor, JobOutcome
from trtbuild.execution.follow import Held
from trtbuild.execution.jobs import BuildJob, ExportJob, Job, PartToExport
from trtbuild.orchestrate import actions, quantize
from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.orchestrate.kinds import check_kind
from trtbuild.orchestrate.partspec import (
    backend_settings,
    build_inputs,
    old_fields,
    part_fields,
    part_json,
)
from trtbuild.orchestrate.records import process_record
from trtbuild.orchestrate.results import PartResult
from trtbuild.planner import Part
from trtbuild.planner.observations import Observation
from trtbuild.recipe.load import Target

if TYPE_CHECKING:
    from trtbuild.orchestrate.check import Reference
    from trtbuild.orchestrate.context import TargetContext


class Overrun(Exception):
    def __init__(self, index: int, observation: Observation) -> None:
        super().__init__(observation.stage)
        self.index, self.observation = index, observation


def build_parts(ctx: TargetContext, ref: Reference | None = None) -> list[PartResult]:
    """Every part of the target's plan, from the cache or built; `ref`: the check's reference,
    computed by the export process when the cache lacks it."""
    target, backend, result = ctx.target, ctx.backend, ctx.result
    store, opts = ctx.run.store, ctx.run.opts
    settings = backend_settings(ctx.run.recipe, target, backend.name, opts.release)
    settings.update(quantize.key_settings(target, result.calibration))
    fields = part_fields(target, ctx.graph, ctx.job, ctx.plan, backend.name, settings)
    keys = [actions.action_key(f) for f in fields]
    done: dict[int, PartResult] = {}
    reasons: dict[int, str] = {}  # why each part in `todo` is built

    def finish(part: Part, record: dict[str, Any], built: bool) -> None:
        blobs = dict(record["blobs"])
        done[part.index] = PartResult(
            part.index,
            keys[part.index],
            not built,
            record["peak_rss_bytes"],
            record["seconds"],
            blobs.pop("engine"),
            f"part{part.index}{backend.engine_suffix}",
            blobs,
            actions.field_digests(fields[part.index]),
            record,
            reasons.get(part.index, "cached") if built else _cached(store, keys[part.index]),
        )
        opts.on_part(result, done[part.index])

    todo = []
    for part in ctx.plan.parts:
        cached = store.get_action(keys[part.index])
        if cached is None:
            todo.append(part)
        else:
            finish(part, cached, built=False)
    if todo:
        with ExitStack() as held:  # sorted: two runs never wait for each other in a circle
            for key in sorted({keys[p.index] for p in todo}):
                held.enter_context(store.locked(key))
            again, todo = todo, []
            for part in again:  # another run may have built it while we waited
                cached = store.get_action(keys[part.index])
                if cached is None:
                    todo.append(part)
                else:
                    finish(part, cached, built=False)
            old = old_fields(ctx.run.previous_lock, target, store)
            for part in todo:
                why = actions.explain(old.get(part.index), _digests(fields[part.index]))
                reasons[part.index] = (
                    why.split(": ", 1)[1]  # "not in the lock file", "weights changed (...)"
                    if why != "up to date"
                    else "inputs unchanged, but the engine was not in the cache"
                )
                opts.report(f"{target.name} part {part.index}: building: {reasons[part.index]}")
            if todo:
                check_kind(target, backend.name, ctx.run.executor)
                _run(
                    ctx,
                    todo,
                    keys,
                    settings,
                    finish,
                    ref if ref is not None and not ref.cached() else None,
                    {p.index: actions.weight_digests(fields[p.index]) for p in todo},
                )
    return [done[part.index] for part in ctx.plan.parts]


def _run(
    ctx: TargetContext,
    todo: list[Part],
    keys: list[str],
    settings: dict[str, Any],
    finish: Callable[[Part, dict[str, Any], bool], None],
    ref: Reference | None = None,
    weights: dict[int, dict[str, str]] | None = None,
) -> None:
    """Export the ONNX of every part in `todo` in one process, then build each engine;
    `weights`: each part's weight digests, kept in its record (explain names changed ones)."""
    recipe, target, job, memory, backend = (
        ctx.run.recipe,
        ctx.target,
        ctx.job,
        ctx.memory,
        ctx.backend,
    )
    store, opts, executor = ctx.run.store, ctx.run.opts, ctx.run.executor
    budget = target.budget.host_memory
    scratch = store.scratch()
    try:
        folders = {p.index: scratch / f"part{p.index}" for p in todo}
        for folder in folders.values():
            folder.mkdir()
        heaviest = memory.export.costliest(p.load for p in todo)
        export_job = ExportJob(
            str(recipe.path),
            target.model.name,
            target.graph_precision,
            job.digest,
            settings["opset"],
            [PartToExport(part_json(p), str(folders[p.index] / "part.onnx")) for p in todo],
            state_file(job, scratch),
            ref.job_field(scratch) if ref else None,
            uses_torch=not target.model.onnx,
        )
        predicted = memory.export.predict(heaviest)
        if ref is not None:  # after the export, one weight at a time: its peak or the export's
            predicted = max(predicted, memory.export.fixed_bytes + ref.extra_bytes)
        held = job.held  # the graph job's process: the parts come from its trace
        forked = export_job.uses_torch
        with executor.admit(predicted, budget, forked=forked, replacing=held) as share:
            outcome = _stage(
                executor,
                export_job,
                scratch,
                share,
                predicted,
                None,  # an ONNX file is the same whatever device builds it
                lambda peak: Overrun(
                    todo[0].index,
                    Observation.of(
                        "export", backend.name, heaviest, job.base_bytes or 0, peak, job.digest
                    ),
                ),
                held,
            )
        if forked and not outcome.resumed:
            why = held.why_not if held is not None and held.why_not else job.held_why
            opts.report(f"{target.name}: the export traces the model again: {why}")
        if ref is not None:
            ref.keep(scratch, outcome.result["reference"])
        export = {
            **process_record("export", outcome, heaviest, predicted, share),
            "shared_by": [p.index for p in todo],
            "graph_trace": outcome.resumed,  # exported from the graph job's trace, in its process
        }
        per_part = dict(zip([p.index for p in todo], outcome.result["parts"]))

        def build_one(part: Part) -> None:
            folder, exported = folders[part.index], per_part[part.index]
            engine = folder / f"{keys[part.index][:16]}{backend.engine_suffix}"
            build_job = BuildJob(
                backend.name,
                str(folder / "part.onnx"),
                str(engine),
                {
                    **settings,
                    **build_inputs(recipe, target, part),
                    **quantize.job_inputs(store, ctx.result.calibration),
                },
            )
            predicted = memory.build.predict(part.load)
            with executor.admit(predicted, budget) as share, _named(target, part):
                outcome = _stage(
                    executor,
                    build_job,
                    scratch,
                    share,
                    predicted,
                    target.kind,
                    lambda peak: Overrun(
                        part.index,
                        Observation.of("build", backend.name, part.load, 0, peak, job.digest),
                    ),
                )
            processes = [
                {**export, **exported},
                {
                    **process_record("build", outcome, part.load, predicted, share),
                    "weights_loaded": exported["weights_loaded"],
                },
            ]
            blobs = {"engine": store.put_file(engine)}
            for name in processes[-1].get("sidecars", []):
                blobs[name] = store.put_file(folder / name)
            record = {
                "key": keys[part.index],
                "weight_digests": (weights or {}).get(part.index, {}),
                "blobs": blobs,
                "peak_rss_bytes": max(p["peak_rss_bytes"] for p in processes),
                # the export process is shared: each part counts its share of the time
                "seconds": round(export["seconds"] / len(todo) + processes[-1]["seconds"], 3),
                "weight_bytes": part.weight_bytes,
                "predicted_peak_bytes": part.predicted_peak_bytes,
                "memory_limit_bytes": budget,
                "processes": processes,
            }
            store.put_action(keys[part.index], record)
            finish(part, record, True)

        with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:
            list(pool.map(build_one, todo))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _named(target: Target, part: Part) -> Iterator[None]:
    """A build job's error names the target and the part it was building."""
    try:
        yield
    except BudgetExceeded:
        raise
    except TrtbuildError as exc:
        raise TrtbuildError(f"{target.name} part {part.index}: {exc}") from None


def state_file(job: GraphResult, scratch: Path) -> str | None:
    """The model's own state (trtbuild.orchestrate.statejob) under a .safetensors name, if it has one."""
    if job.state is None:
        return None
    link = scratch / "state.safetensors"
    os.symlink(job.state["file"], link)
    return str(link)


def _stage(
    executor: Executor,
    job: Job,
    scratch: Path,
    share: int,
    predicted: int,
    kind: str | None,
    overrun: Callable[[int], Overrun],
    held: Held | None = None,
) -> JobOutcome:
    """Run one job (in `held`, if still there); a process over its share becomes
    `overrun(peak)` (re-plan, refit)."""
    try:
        return executor.run(job, scratch, share, predicted, kind, held=held)
    except BudgetExceeded as exc:
        raise overrun(exc.peak_rss_bytes) from None


def _digests(fields: dict[str, Any]) -> dict[str, str]:
    """A part's field digests and each weight's (actions.explain names the weights changed)."""
    return {**actions.field_digests(fields), **actions.weight_digests(fields)}


def _cached(store: Store, key: str) -> str:
    return "cached (remote)" if key in store.fetched else "cached"
