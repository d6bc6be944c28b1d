"""The built-in accuracy check (orchestrator side): a target passes when its engines compute its
model.

Two cached actions per target:
- the reference (trtbuild.check.reference, in the export process): the model at fp32, run part by part
  on the check's inputs; its file (trtbuild.check.data) is a blob under its own key, so engines
  that change while the model does not reuse it; like a part, it is keyed by the graph and the
  weights, not by the code that made them (early cutoff);
- the check (trtbuild.check.compare, in a process without torch): the part engines on the reference's
  tensors, each part on its own and the chain end to end, against the tolerances
  (trtbuild.recipe.checkspec). Its key: every engine's digest, the reference's key and the tolerances.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.cache.digests import digest_json
from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store
from trtbuild.check import data as checkdata
from trtbuild.check.compare import BETWEEN
from trtbuild.check.figures import message
from trtbuild.errors import TrtbuildError
from trtbuild.execution.executor import Executor
from trtbuild.execution.jobs import CheckJob, ExportJob
from trtbuild.model.graph import SYMINT
from trtbuild.orchestrate.checkmemory import activation_bytes, reference_bytes
from trtbuild.orchestrate.results import TargetResult
from trtbuild.planner.memory import MemoryModel, memory_model
from trtbuild.recipe.checkspec import DEFAULT_REL_L2, tolerances
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.sizes import format_size
from trtbuild.release.inputs import machine

if TYPE_CHECKING:
    from trtbuild.orchestrate.context import TargetContext

SCHEMA = 2  # 2: keyed by the graph and weights, not by the code (early cutoff)


@dataclass
class Reference:
    """What the reference of one target is, and the request an export process computes it from."""

    key: str
    request: dict[str, Any]  # ExportJob.reference without "path"
    extra_bytes: int  # its peak beyond the export process's base (predicted)
    store: Store
    activation_bytes: int = 0  # the model's largest tensor at the check's largest shapes

    def cached(self) -> bool:
        return self.store.get_action(self.key) is not None

    def job_field(self, scratch: Path) -> dict[str, Any]:
        return {**self.request, "path": str(scratch / "reference.npz")}

    def keep(self, scratch: Path, result: dict[str, Any]) -> None:
        """Put the reference file the export process wrote into the store, under its key."""
        blob = self.store.put_file(scratch / "reference.npz")
        self.store.put_action(self.key, {"blobs": {"reference": blob}, **result})


def reference(ctx: TargetContext) -> Reference | None:
    """The target's reference, or None when its check is off (`--no-check`, `enabled = false`)."""
    recipe, target, graph, job, the_plan = (
        ctx.run.recipe,
        ctx.target,
        ctx.graph,
        ctx.job,
        ctx.plan,
    )
    opts, store = ctx.run.opts, ctx.run.store
    spec = target.model.check
    if not opts.check or not spec.enabled:
        return None
    try:  # a tolerance of an output the model lacks: said before anything is built
        tolerances(spec, target.precision, the_plan.model_outputs)
    except TrtbuildError as exc:
        raise TrtbuildError(f"{recipe.model_loc(target.model.name, 'check')}: {exc}") from None
    samples = {
        "inputs": [i.model_dump(mode="json") for i in target.model.inputs],
        "seed": spec.seed,
        "data": spec.data,
    }
    files = checkdata.data_files(spec.data, recipe.root) if spec.data else []
    parts = [_part(p) for p in the_plan.parts]
    fields = {
        "schema": SCHEMA,
        "graph": job.digest,
        "weights": job.weight_digests,
        "precision": target.precision,
        "samples": samples,
        "data": [sha256_file(f) for f in files],
        "plugins": [sha256_file(Path(p)) for p in recipe.plugins(target.model.name)],
        "boundaries": [[p["inputs"], p["outputs"]] for p in parts],
        "toolchain": machine("onnxruntime")["toolchain"],
    }
    request = {
        "parts": [_part_json(p) for p in the_plan.parts],
        "outputs": the_plan.model_outputs,
        "samples": samples,
    }
    extra = reference_bytes(target, the_plan, graph, len(files))
    return Reference(digest_json(fields), request, extra, store, activation_bytes(target, graph))


def _part(part: Any) -> dict[str, Any]:
    return {
        "inputs": [t.name for t in part.inputs if t.dtype != SYMINT],
        "outputs": [t.name for t in part.outputs if t.dtype != SYMINT],
    }


def _part_json(part: Any) -> dict[str, Any]:
    from trtbuild.orchestrate.partspec import part_json as as_json

    return as_json(part)


def too_big(target: Target, peak: int) -> TrtbuildError:
    """The error for an export process that, computing the check's reference too, crossed the
    budget: the reference holds the model's activations at the check's shapes at fp32, which no
    plan makes smaller (a 1x1024x224x224 float32 tensor alone is 205 MB)."""
    return TrtbuildError(
        f"{target.name}: the export process, which also computes the accuracy check's reference "
        f"(the model at fp32 on the check's shapes), crossed the budget "
        f"{format_size(target.budget.host_memory)} (peak {format_size(peak)}); raise the budget, "
        "check smaller shapes with [model.check] data, or skip the check (run --no-check, or "
        "[model.check] enabled = false)"
    )


def check_target(ctx: TargetContext, ref: Reference) -> dict[str, Any]:
    """The check's record: from the cache, else the reference (if missing) and a check process.
    {"key", "passed", "cached", "outputs": [figures], "parts": [...], "message", ...}."""
    target, result, memory = ctx.target, ctx.result, ctx.memory
    recipe, store, executor = ctx.run.recipe, ctx.run.store, ctx.run.executor
    outputs = result.plan.model_outputs
    tols = tolerances(target.model.check, target.precision, outputs)
    tols[BETWEEN] = {
        "rel_l2": target.model.check.rel_l2 or DEFAULT_REL_L2[target.precision],
        "atol": None,
        "rtol": None,
    }
    key = digest_json(
        {
            "schema": SCHEMA,
            "reference": ref.key,
            "engines": [[p.sha256, p.sidecars] for p in result.parts],
            "tolerances": tols,
            "backend": result.backend,
        }
    )
    cached = store.get_action(key)
    if cached is None:
        with store.locked(key):
            cached = store.get_action(key)
            if cached is None:
                record = _run(recipe, target, ref, result, memory, tols, store, executor, key)
                store.put_action(key, record)
                return {**record, "cached": False}
    return {**cached, "cached": True}


def _run(
    recipe: Recipe,
    target: Target,
    ref: Reference,
    result: TargetResult,
    memory: MemoryModel,
    tols: dict[str, Any],
    store: Store,
    executor: Executor,
    key: str,
) -> dict[str, Any]:
    budget = target.budget.host_memory
    scratch = store.scratch()
    processes = []
    try:
        record = store.get_action(ref.key)
        if record is None:  # every part was cached: an export process with no part to write
            from trtbuild.orchestrate.parts import state_file

            job = ExportJob(
                str(recipe.path),
                target.model.name,
                target.precision,
                result.graph_job.digest,
                target.defaults.opset,
                [],
                state=state_file(result.graph_job, scratch),
                reference=ref.job_field(scratch),
                uses_torch=not target.model.onnx,
            )
            predicted = memory.export.fixed_bytes + ref.extra_bytes
            with executor.admit(predicted, budget, forked=job.uses_torch) as share:
                outcome = executor.run(job, scratch, share, predicted, None)
            ref.keep(scratch, outcome.result["reference"])
            processes.append(_record("reference", outcome, predicted, share))
            record = store.get_action(ref.key)
            assert record is not None
        reference = store.blob_path(record["blobs"]["reference"])
        parts = []
        for p, part in zip(result.plan.parts, result.parts):
            folder = scratch / f"part{p.index}"
            folder.mkdir()
            store.export_blob(part.sha256, folder / part.engine)
            for name, digest in part.sidecars.items():
                store.export_blob(digest, folder / name)
            parts.append({"engine": str(folder / part.engine), **_part(p)})
        # One engine loaded at a time, its weights and the backend's prepacked copies of them
        # (ONNX Runtime: ResNet-50 2.8x, a Linear stack 1.6-1.8x, measured), the reference's
        # tensors, and an engine's activations.
        weights = max((p.weight_bytes for p in result.plan.parts), default=0)
        # A process's own cost is the backend's, whatever the model (a test's memory_override
        # counts weights only): never below the builder's prior fixed cost.
        fixed = max(memory.build.fixed_bytes, memory_model(result.backend, None).build.fixed_bytes)
        predicted = fixed + 3 * weights + 2 * reference.stat().st_size + 4 * ref.activation_bytes
        check_job = CheckJob(
            result.backend,
            str(reference),
            parts,
            result.plan.model_outputs,
            record["samples"],
            tols,
            recipe.plugins(target.model.name),
        )
        with executor.admit(predicted, budget) as share:
            outcome = executor.run(check_job, scratch, share, predicted, target.kind)
        processes.append(_record("check", outcome, predicted, share))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = outcome.result
    return {
        "key": key,
        "reference_key": ref.key,
        "passed": figures["passed"],
        "message": message(figures, target.name),
        "worst_rel_l2": max((o.get("rel_l2", math.inf) for o in figures["outputs"]), default=0.0),
        "tolerances": tols,
        "outputs": figures["outputs"],
        "parts": figures["parts"],
        "processes": processes,
        "blobs": {},
    }


def _record(kind: str, outcome: Any, predicted: int, share: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "predicted_peak_bytes": predicted,
        "memory_limit_bytes": share,
        "seconds": round(outcome.seconds, 3),
        "started": outcome.started,
        "ended": outcome.ended,
    }
