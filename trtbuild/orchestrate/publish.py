"""Publishing a build: target folders swapped in whole, then the lock and the provenance.

Nothing is written or removed outside the output root (and the lock beside the recipe); the lock
and provenance are written last, so an interrupted build leaves the previous ones in place.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtbuild.cache import atomic
from trtbuild.cache.digests import DigestMemo
from trtbuild.cache.store import Store
from trtbuild.check.figures import summary
from trtbuild.errors import TrtbuildError, disk_full, is_disk_full
from trtbuild.execution import process
from trtbuild.orchestrate.enginejson import engine_description
from trtbuild.orchestrate.graphjob import weights_files
from trtbuild.orchestrate.owner import claim, remove_dropped_targets
from trtbuild.orchestrate.results import TargetResult
from trtbuild.recipe.load import Recipe
from trtbuild.release import lockfile, manifest, signing
from trtbuild.release.inputs import Inputs, glob_matches, machine, relative


def publish(result: TargetResult, recipe: Recipe, store: Store) -> None:
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
        if result.calibration:  # the table the engines were quantized with, beside them
            store.export_blob(result.calibration["sha256"], new / result.calibration["table"])
        manifest.write_json(new / "engine.json", description)
        manifest.write_json(
            new / "build.json",
            {
                "parts": [
                    {**p.record, "cached": p.cached, "reason": p.reason} for p in result.parts
                ],
                "graph_process": _graph_record(result.graph_job),
                **(
                    {"state_process": result.graph_job.state["process"]}
                    if result.graph_job.state
                    else {}
                ),
                "plan": _plan_record(result.plan),
                "budget_bytes": result.budget_bytes,
                "check": result.check,  # None: not checked (--no-check, check.enabled = false)
                "disk": result.disk,  # the disk estimate (disk.DiskNeed.to_json)
                **({"calibration": result.calibration} if result.calibration else {}),
            },
        )
        if process.stopping():  # Ctrl-C came while it was built: earlier outputs stay
            raise process.Stopping("the run is stopping")
        atomic.swap_dir(new, final)
    except BaseException as exc:  # the staging folder never outlives a failed publish
        shutil.rmtree(new, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full(exc.filename or new, exc) from None
        if isinstance(exc, OSError):
            raise TrtbuildError(
                f"{final}: cannot publish the build: {exc.strerror or exc}"
            ) from None
        raise


def _plan_record(plan: Any) -> dict[str, Any]:
    """How good the plan is (its boundary bytes against the proven lower bound), and its parts
    with the tensors they pass, as the build report draws them."""
    return {
        "boundary_bytes": plan.boundary_bytes,
        "lower_bound_bytes": plan.lower_bound_bytes,
        "optimality_gap": round(plan.optimality_gap, 6),
        "method": plan.method,
        "bound_method": plan.bound_method,
        "memory_source": plan.memory_source,
        "parts": [
            {
                "index": p.index,
                "ops": len(p.ops),
                "weight_bytes": p.weight_bytes,
                "predicted_peak_bytes": p.predicted_peak_bytes,
                "inputs": [asdict(t) for t in p.inputs],
                "outputs": [asdict(t) for t in p.outputs],
            }
            for p in plan.parts
        ],
    }


def _graph_record(job: Any) -> dict[str, Any]:
    return {
        "peak_rss_bytes": job.peak_rss_bytes,
        "seconds": job.seconds,
        "rss_samples": job.rss_samples,
        **({"node": job.node} if job.node else {}),
    }


def all_inputs(recipe: Recipe, results: list[TargetResult], memo: DigestMemo) -> Inputs:
    """The recipe, the weights files and every target's discovered inputs, as the lock pins them."""
    files = {relative(recipe.path, recipe.root): memo.sha256(recipe.path)}
    dists: dict[str, str] = {}
    env: dict[str, str] = {}
    for r in results:
        spec = recipe.model_spec(r.model)
        for path in weights_files(recipe, spec):
            files[relative(path, recipe.root)] = memo.sha256(path)
        files.update(r.graph_job.inputs.files)
        files.update(r.calibration["files"] if r.calibration else {})  # its sample files
        dists.update(r.graph_job.inputs.distributions)
        env.update(r.graph_job.inputs.env)
    return Inputs(files, dists, env)


def recipe_globs(recipe: Recipe, results: list[TargetResult]) -> list[str]:
    """The glob patterns the built models' fields name: `data`, calibration and check samples."""
    patterns: list[str] = []
    for r in results:
        spec = recipe.model_spec(r.model)
        calib = spec.calibration
        patterns += spec.data
        patterns += [calib.data] if calib and not (calib.random or calib.generator) else []
        patterns += [spec.check.data] if spec.check.data else []
    return sorted(set(patterns))


def write_outputs(
    recipe: Recipe,
    results: list[TargetResult],
    invocation: dict[str, Any],
    out: Path,
    tools: dict[str, str],
    memo: DigestMemo,
    started: str,
    lock_file: Path,
    write_lock: bool,
    previous: lockfile.Lock | None,
) -> list[str]:
    """The lock (unless `write_lock` is off, as for verify) and the provenance statement;
    `previous`: the lock as the run found it.

    Returns notes: the targets whose outputs were removed because the recipe dropped them.
    """
    dropped = remove_dropped_targets(out, recipe.name, results)
    inputs = all_inputs(recipe, results, memo)
    targets = [
        _locked(r, out / recipe.name / r.model / r.slot, machine(r.backend, r.kind)["device"])
        for r in results
    ]
    # A failed check published nothing: the lock keeps the parts that are published (the last
    # build that passed, if any) beside the failed check, which makes the next run try again.
    targets = [_still_published(t, previous) if r.failed else t for r, t in zip(results, targets)]
    globs = {p: glob_matches(p, recipe.root) for p in recipe_globs(recipe, results)}
    lock = lockfile.Lock(recipe.name, invocation, tools, inputs, targets, globs)
    subjects = [
        (f"{r.name}/{name}", sha)
        for r, t in zip(results, targets)
        for p in t.parts
        for name, sha in [(p.engine, p.sha256), *p.sidecars.items()]
    ] + [  # the calibration table published beside the engines
        (f"{r.name}/{r.calibration['table']}", r.calibration["sha256"])
        for r in results
        if not r.failed and r.calibration
    ]
    byproducts = [
        {
            "name": f"{r.name}/{p.engine}",
            "annotations": {
                "peak_rss_bytes": p.peak_rss_bytes,
                "cached": p.cached,
                "action_key": p.key,
                "processes": [
                    {k: v for k, v in process.items() if k != "rss_samples"}
                    for process in p.record.get("processes", [])
                ],
            },
        }
        for r in results
        for p in r.parts
    ] + [
        {"name": f"{r.name}/check", "annotations": r.check} for r in results if r.check is not None
    ]
    params = {
        **invocation,
        "recipe_path": str(recipe.path),
        "lock": str(lock_file.name),
        "targets": [
            {
                "model": r.model,
                "precision": r.precision,
                **({"kind": r.kind} if r.kind else {}),
                "backend": r.backend,
                "budget_bytes": r.budget_bytes,
                "check": summary(r.check),
            }
            for r in results
        ],
    }
    deps = [
        *({"path": path, "sha256": sha} for path, sha in sorted(inputs.files.items())),
        *({"path": f"env:{name}", "sha256": sha} for name, sha in sorted(inputs.env.items())),
    ]
    statement = manifest.provenance(
        recipe.name, subjects, params, tools, deps, byproducts, started, now()
    )
    statement_path = out.resolve() / recipe.name / "provenance.json"
    manifest.write_json(statement_path, statement)
    claim(recipe, statement_path.parent)
    # A signature of the previous statement would now read as tampering: `--sign` re-makes it.
    signing.envelope_path(statement_path).unlink(missing_ok=True)
    if write_lock:
        lockfile.write_lock(lock_file, lock)
    return [f"{name}: no longer in the recipe; its outputs were removed" for name in dropped]


def _locked(r: TargetResult, folder: Path, device: dict[str, str]) -> lockfile.LockedTarget:
    return lockfile.LockedTarget(
        model=r.model,
        precision=r.precision,
        backend=r.backend,
        requested_backend=r.requested_backend,
        device=device,
        dir=str(folder),
        budget_bytes=r.budget_bytes,
        boundary_bytes=r.plan.boundary_bytes,
        graph_digest=r.graph_job.digest,
        memory=r.memory.to_json() if r.memory else None,
        kind=r.kind,
        check=summary(r.check),
        calibration=_calibration(r.calibration),
        parts=[
            lockfile.LockedPart(
                p.index, p.key, p.engine, p.sha256, p.sidecars, p.peak_rss_bytes, p.fields
            )
            for p in r.parts
        ],
    )


def _still_published(
    failed: lockfile.LockedTarget, previous: lockfile.Lock | None
) -> lockfile.LockedTarget:
    """A failed target as the lock pins it: its failed check, and the parts of the build its
    folder still holds: the previous lock's (a failed target's there are, by the same rule,
    still those published), none if nothing was ever published."""
    before = previous and previous.target(failed.model, failed.precision, failed.kind)
    if not before:
        return dataclasses.replace(failed, parts=[])
    return dataclasses.replace(before, check=failed.check)


def _calibration(table: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the lock pins of a target's calibration (its files are [[file]] inputs)."""
    if table is None:
        return None
    return {k: table[k] for k in ("key", "sha256", "method", "samples")}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
