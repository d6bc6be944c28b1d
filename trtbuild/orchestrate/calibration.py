"""Calibration as a cached action (orchestrator side): the activation ranges of an int8 / fp8
target, computed once per model, weights, data and method.

Key: the graph digest, the weight digests, the model inputs, each sample file's sha256 (or the
seed of data = "random"), the sample count, the method and the toolchain; never the budget or
the plan. Samples a Python function yields (data = "calib.py:samples") are known once it has run:
that key is a manifest, and the files its process read (the function's own file, the data it
loaded: trtbuild.model.depfile) are discovered inputs (trtbuild.orchestrate.discovery). The
table (trtbuild.check.calibrate) is keyed by OpGraph tensor names, the same in every split, so
a re-plan reuses it. On a miss, one measured worker process (a CalibrateJob)
runs the plan's parts in order, one sample at a time, within the target's budget.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trtbuild.cache.digests import DigestMemo, digest_json
from trtbuild.check import data as checkdata
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.execution.jobs import CalibrateJob
from trtbuild.orchestrate import discovery
from trtbuild.orchestrate.records import process_record
from trtbuild.recipe.quantspec import CALIBRATED
from trtbuild.recipe.sizes import format_size
from trtbuild.release.inputs import Inputs, discovered, machine, relative

if TYPE_CHECKING:
    from pathlib import Path

    from trtbuild.cache.store import Store
    from trtbuild.model.graph import OpGraph
    from trtbuild.orchestrate.context import TargetContext
    from trtbuild.orchestrate.graphjob import GraphResult
    from trtbuild.planner import Plan
    from trtbuild.planner.memory import MemoryModel
    from trtbuild.recipe.load import Recipe, Target
    from trtbuild.recipe.schema import ModelSpec

SCHEMA = 1
GENERATED = "calibration-"  # results of a manifest (data = "file.py:function")
TABLE = "calibration.json"  # its name beside the engines
MiB = 1 << 20


@dataclass(frozen=True)
class Calibration:
    key: str
    sha256: str  # the table's blob
    files: dict[str, str]  # sample file (relative to the recipe) -> sha256
    record: dict[str, Any]  # what the store holds: method, samples, the process
    cached: bool

    def summary(self) -> dict[str, Any]:
        """What engine builds, build.json and the lock say about it."""
        return {
            "key": self.key,
            "table": TABLE,
            "sha256": self.sha256,
            "method": self.record["method"],
            "samples": self.record["samples"],
            "files": self.files,
            "random": not self.files,  # data = "random"
            "cached": self.cached,
            # the process that computed it (peak, prediction, share), wherever it ran
            "process": {k: v for k, v in self.record["process"].items() if k != "rss_samples"},
        }


def sample_files(recipe: Recipe, spec: ModelSpec) -> list[Path]:
    """The calibration files of a model, sorted, at most `samples` of them ([] for "random");
    a glob that matches none is an error naming the field."""
    calib = spec.calibration
    if calib is None or calib.random or calib.generator:
        return []
    try:
        files = checkdata.data_files(calib.data, recipe.root)
    except TrtbuildError:
        raise TrtbuildError(
            f"{recipe.model_loc(spec.name, 'calibration')}: field 'calibration.data': expected "
            f'.npz files matching {calib.data!r} (relative to {recipe.root}) or "random", found none'
        ) from None
    return files[: calib.samples]


@dataclass(frozen=True)
class Request:
    """A target's calibration as the cache knows it: its key and what the job is given."""

    key: str
    files: list[Path]
    digests: dict[str, str]  # relative path -> sha256
    count: int
    inputs: list[dict[str, Any]]
    generator: str | None  # "<absolute file>.py:function" of data = "file.py:function"


def request(recipe: Recipe, target: Target, job: GraphResult, memo: DigestMemo) -> Request | None:
    """The calibration a target needs (None for a precision without one): its key (see the
    module docstring) from the graph job's digests and the sample files' contents."""
    spec = target.model.calibration
    if target.precision not in CALIBRATED or spec is None:
        return None
    files = sample_files(recipe, target.model)
    digests = {relative(f, recipe.root): memo.sha256(f) for f in files}
    count = len(files) if files else spec.samples
    inputs = [i.model_dump(mode="json") for i in target.model.inputs]
    generator, data = None, digests if files else {"random": spec.seed}
    if spec.generator:
        file, _, function = spec.data.rpartition(":")
        generator, data = f"{recipe.resolve(file)}:{function}", {"generator": spec.data}
    key = ("calibration-manifest-" if generator else "") + digest_json(
        {
            "schema": SCHEMA,
            "graph": job.digest,
            "weights": job.weight_digests,
            "inputs": inputs,
            "data": data,
            "samples": count,
            "method": spec.method,
            "toolchain": machine("onnxruntime")["toolchain"],
        }
    )
    return Request(key, files, digests, count, inputs, generator)


def cached(recipe: Recipe, target: Target, job: GraphResult, store: Store) -> Calibration | None:
    """The target's calibration if the cache holds it (explain), else None."""
    memo = DigestMemo(store.layout.digests)
    wanted = request(recipe, target, job, memo)
    if wanted is None:
        return None
    if wanted.generator:
        hit = discovery.lookup(store, wanted.key, GENERATED, recipe.root, memo)
        if hit is None:
            return None
        record, inputs = hit
        return Calibration(record["key"], record["blobs"]["table"], inputs.files, record, True)
    stored = store.get_action(wanted.key)
    if stored is None:
        return None
    return Calibration(wanted.key, stored["blobs"]["table"], wanted.digests, stored, True)


def calibrate(ctx: TargetContext) -> Calibration | None:
    """The target's table: from the cache, else computed by a calibration process; None for a
    precision that needs none."""
    target, recipe, store, opts = ctx.target, ctx.run.recipe, ctx.run.store, ctx.run.opts
    spec = target.model.calibration
    wanted = request(recipe, target, ctx.job, ctx.run.memo)
    if wanted is None or spec is None:
        return None
    key, files, count = wanted.key, wanted.files, wanted.count

    def calibration_job() -> dict[str, Any]:
        opts.report(f"{target.name}: calibrating on {count} sample(s) ({spec.method})")
        job = {"inputs": wanted.inputs, "files": [str(f) for f in files], "count": count}
        job.update(seed=spec.seed, generator=wanted.generator)
        return _run(ctx, key, job, spec.method)

    if wanted.generator is None:
        record, hit = store.get_or_run(key, calibration_job)
        return Calibration(key, record["blobs"]["table"], wanted.digests, record, hit)

    def generated() -> tuple[dict[str, Any], Inputs]:
        record = calibration_job()
        inputs = discovered(record.pop("inputs"), recipe.root, ctx.run.memo)
        return {**record, "key": discovery.result_key(GENERATED, key, inputs)}, inputs

    memo = ctx.run.memo
    record, inputs, hit = discovery.get_or_run(store, key, GENERATED, recipe.root, memo, generated)
    # its result key: discovery.result_key of the inputs the function was seen to read
    return Calibration(record["key"], record["blobs"]["table"], inputs.files, record, hit)


def _run(ctx: TargetContext, key: str, samples: dict[str, Any], method: str) -> dict[str, Any]:
    """One calibration process over the plan's parts; its table into the store."""
    target, job, plan, memory = ctx.target, ctx.job, ctx.plan, ctx.memory
    recipe, store, executor = ctx.run.recipe, ctx.run.store, ctx.run.executor
    from trtbuild.orchestrate.parts import state_file
    from trtbuild.orchestrate.partspec import part_json

    scratch = store.scratch()
    try:
        calibrate_job = CalibrateJob(
            str(recipe.path),
            target.model.name,
            target.precision,
            job.digest,
            [part_json(p) for p in plan.parts],
            samples,
            method,
            str(scratch / TABLE),
            str(scratch / "spill"),
            state_file(job, scratch),
        )
        heaviest = max(plan.parts, key=lambda p: p.weight_bytes)
        largest = largest_activation(ctx.graph)
        predicted = need(memory, plan, ctx.graph)
        budget = target.budget.host_memory
        if predicted > budget:
            raise _too_big(target.name, budget, f"needs about {format_size(predicted)}", largest)
        try:
            with executor.admit(predicted, budget, forked=True) as share:
                outcome = executor.run(calibrate_job, scratch, share, predicted, None)
        except BudgetExceeded as exc:
            peak = f"crossed it (peak {format_size(exc.peak_rss_bytes)})"
            raise _too_big(target.name, budget, peak, largest) from None
        blob = store.put_file(scratch / TABLE)
        process = process_record("calibrate", outcome, heaviest.load, predicted, share)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the spilled tensors go with it
    record = {
        "key": key,
        "blobs": {"table": blob},
        "method": method,
        "samples": outcome.result["samples"],  # a generator may yield fewer than asked
        "process": process,
    }
    return {**record, "inputs": outcome.result["inputs"]} if "inputs" in outcome.result else record


def need(memory: MemoryModel, plan: Plan, graph: OpGraph) -> int:
    """Predicted peak bytes of a calibration process: the process's base, the heaviest part's
    weights at fp32 (held for all the samples), one sample's live activations (an op's inputs
    and output, the statistics' copy: 4 x the largest), and allocator slack."""
    heaviest = max((p.weight_bytes for p in plan.parts), default=0)
    return memory.export.fixed_bytes + heaviest + 4 * largest_activation(graph) + 64 * MiB


def largest_activation(graph: OpGraph) -> int:
    """Bytes of the graph's largest op output (what one sample holds at most, besides inputs)."""
    return max((t.bytes for op in graph.ops for t in op.outputs), default=0)


def check_need(target: Target, memory: MemoryModel, plan: Plan, graph: OpGraph) -> None:
    """For `plan`: the calibration a target needs fits its budget, else the error run gives."""
    if target.precision not in CALIBRATED or target.model.calibration is None:
        return
    predicted, budget = need(memory, plan, graph), target.budget.host_memory
    if predicted > budget:
        what = f"needs about {format_size(predicted)}"
        raise _too_big(target.name, budget, what, largest_activation(graph))


def _too_big(name: str, budget: int, what: str, largest: int) -> TrtbuildError:
    """A calibration that cannot keep the budget: it runs the model at fp32 on one sample, and
    no split makes an activation smaller."""
    cause = (
        f"its largest activation alone is {format_size(largest)}: raise the budget or calibrate "
        "with smaller inputs"
        if 4 * largest > budget // 2
        else "most of it is the process (the model's code, the heaviest part's weights at "
        "fp32): raise the budget"
    )
    return TrtbuildError(
        f"{name}: calibration (the model at fp32, one sample at a time) {what} against the "
        f"budget {format_size(budget)}; {cause}"
    )
