"""The graph job of a target, cached by what it depends on (a depfile cache, like ccache's).

The job's inputs are only known once it has run (trtbuild.model.depfile). So the cache has two levels:
a manifest under a key of what is known before (the model spec, precision, toolchain) lists the
input sets seen so far; a result is served when every input of one of those sets still has the
recorded content, read relative to *this* recipe's folder. Two checkouts of one project with a
shared cache therefore each get the graph of their own code, and identical code is a hit.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trtbuild.cache.digests import DigestMemo, digest_json
from trtbuild.cache.store import Store
from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.execution import jobs
from trtbuild.execution.executor import Executor, run_job
from trtbuild.execution.follow import Held
from trtbuild.model.checkpoint import checkpoint_files
from trtbuild.model.nativefiles import model_files
from trtbuild.orchestrate import discovery
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.schema import ModelSpec
from trtbuild.recipe.sizes import format_size
from trtbuild.release.inputs import Inputs, discovered, relative
from trtbuild.release.toolchain import toolchain

GRAPH_SCHEMA = 7  # 4: output names, interface; 5: native reads, state_bytes; 6: code_init; 7: x.0
# [[model]] fields that say how and where to build, not what the graph is: changing a model's
# budget must not export its graph again (nor re-measure the base its plan is made with).
NOT_GRAPH = {
    *("budget", "backend", "precisions", "devices", "check"),
    *("calibration", "keep", "precision_search"),  # quantized targets: after the graph
}


@dataclass(frozen=True)
class GraphResult:
    """What the graph job of a target found, and what it cost."""

    graph: dict[str, Any]  # OpGraph.to_json()
    digest: str
    weight_digests: dict[str, str]
    inputs: Inputs
    peak_rss_bytes: int
    seconds: float
    base_bytes: int | None  # resident size after import and export, before weights (memory.py)
    rss_samples: list[list[float]] = field(default_factory=list)  # (seconds, RSS): the report
    node: str | None = None  # the Ray node it ran on; None: the building machine
    state_bytes: int | None = None  # the model's checkpoint tensors as its factory makes them
    # The state job's process and file when the recipe names no weights (trtbuild.orchestrate.statejob);
    # set per build, never cached with the graph
    state: dict[str, Any] | None = None
    # The job's process, kept to export the parts from its trace (trtbuild.execution.follow);
    # else why the export traces the model again (for -v). Per build, never cached, and not
    # what the graph is: equal graph results may differ in them.
    held: Held | None = field(default=None, compare=False)
    held_why: str = field(default="its graph came from the cache", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "digest": self.digest,
            "weight_digests": self.weight_digests,
            "inputs": self.inputs.to_json(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "seconds": self.seconds,
            "base_bytes": self.base_bytes,
            "rss_samples": self.rss_samples,
            "node": self.node,
            "state_bytes": self.state_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphResult:
        return cls(
            data["graph"],
            data["digest"],
            data["weight_digests"],
            Inputs.from_json(data["inputs"]),
            data["peak_rss_bytes"],
            data["seconds"],
            data.get("base_bytes"),
            data.get("rss_samples", []),
            data.get("node"),
            data.get("state_bytes"),
        )


def graph_job(
    recipe: Recipe,
    target: Target,
    store: Store,
    memo: DigestMemo,
    budget: int | None,
    executor: Executor | None = None,
    hold: bool = False,
) -> GraphResult:
    """The target's graph: from the cache when its recorded inputs are unchanged, else run;
    `hold`: keep the job's process for the target's export (GraphResult.held)."""
    spec = target.model
    weights = weights_digest(recipe, spec, memo)
    manifest = "graph-manifest-" + digest_json(
        [
            GRAPH_SCHEMA,
            spec.model_dump(mode="json", exclude=NOT_GRAPH),
            weights,
            [relative(f, recipe.root) for f in recipe.data_files(spec)],  # a new match: run again
            target.graph_precision,  # quantized (or converted to fp16) after
            toolchain(),
        ]
    )

    ran: list[GraphResult] = []

    def run() -> tuple[dict[str, Any], Inputs]:
        ran.append(_run(recipe, target, store, memo, budget, executor, hold))
        return ran[0].to_json(), ran[0].inputs

    record, _, _ = discovery.get_or_run(store, manifest, "graph-", recipe.root, memo, run)
    result = fixed_base(store, GraphResult.from_json(record))
    if not ran:
        return result
    why = "" if ran[0].held else "one trace per target is off (TRTBUILD_ONE_TRACE=0)"
    if hold and not ran[0].held:
        why = (
            "Ray runs every job as a process of its own"
            if executor is not None and executor.name == "ray"
            else "the graph job's process ended with its result (stopped or crashed)"
        )
    return replace(result, held=ran[0].held, held_why=why)


def fixed_base(store: Store, job: GraphResult) -> GraphResult:
    """The job with its op graph's base and peak as first measured in this cache.

    Both are measured RSS: each run of a graph job (another model of the same graph, an edit
    that leaves the graph as it was, a forked or a fresh process) measures them anew, a few
    hundred KiB apart. Plans follow from them (the base is the export's fixed cost, the peak the
    smallest feasible budget), so they are recorded once per op graph and toolchain (the first
    writer wins) and `plan`, `run`, `explain` and `verify` all plan with those.
    """
    key = "graph-base-" + digest_json([GRAPH_SCHEMA, job.digest, toolchain()])
    if job.base_bytes is not None:
        store.put_action(
            key, {"base_bytes": job.base_bytes, "peak_rss_bytes": job.peak_rss_bytes, "blobs": {}}
        )
    entry = store.get_action(key)
    if entry is None:
        return job
    return replace(
        job,
        base_bytes=int(entry["base_bytes"]),
        peak_rss_bytes=int(entry.get("peak_rss_bytes", job.peak_rss_bytes)),
    )


def weights_files(recipe: Recipe, spec: ModelSpec) -> list[Path]:
    """The files of a target's checkpoint (none for seeded init)."""
    if not isinstance(spec.weights, str):
        return []
    return checkpoint_files(recipe.resolve(spec.weights))


def weights_digest(recipe: Recipe, spec: ModelSpec, memo: DigestMemo) -> str | None:
    files = weights_files(recipe, spec)
    if not files:
        return None
    return digest_json([[relative(f, recipe.root), memo.sha256(f)] for f in files])


def _with_code(digests: dict[str, str], code_init: list[str], inputs: Inputs) -> dict[str, str]:
    """Seeded-init digests of tensors the model's code initialises (weights.WeightSource.code_init)
    depend on that code: they take the digest of the model's inputs in."""
    code, by_code = inputs.digest(), set(code_init)
    return {n: digest_json([d, code]) if n in by_code else d for n, d in digests.items()}


def _run(
    recipe: Recipe,
    target: Target,
    store: Store,
    memo: DigestMemo,
    budget: int | None,
    executor: Executor | None,
    hold: bool,
) -> GraphResult:
    scratch = store.scratch()
    job = jobs.GraphJob(
        str(recipe.path),
        target.model.name,
        target.graph_precision,
        str(store.root),
        uses_torch=not target.model.onnx,
    )
    outcome = None
    try:
        if executor is None:  # planning alone: a plain process here
            outcome = run_job(job, scratch, budget)
        else:
            outcome = executor.run(job, scratch, budget, budget or 0, None, hold=hold)
    except BudgetExceeded as exc:
        raise TrtbuildError(
            f"budget {format_size(budget or 0)} is too small for {target.name}: exporting its graph on "
            f"the meta device (no weights) was stopped at {format_size(exc.peak_rss_bytes)}; "
            f"`trtbuild plan {recipe.path} --model {target.model.name}` measures it without a cap "
            "and prints the smallest budget that works"
        ) from None
    finally:
        if outcome is None or outcome.held is None:  # else its process's, removed with it
            shutil.rmtree(scratch, ignore_errors=True)
    result = outcome.result
    raw = dict(result["inputs"])
    # Files native code held while the job ran (the watcher's samples) and the declared data:
    # inputs by content, as what the depfile saw (trtbuild.model.nativefiles)
    exclude = [store.root, *weights_files(recipe, target.model)]
    if isinstance(target.model.weights, str):
        exclude.append(recipe.resolve(target.model.weights))
    native = model_files(outcome.files, exclude)
    data = [str(f) for f in recipe.data_files(target.model)]
    raw["files"] = sorted({*raw["files"], *native, *data})
    inputs = discovered(raw, recipe.root, memo)
    return GraphResult(
        result["graph"],
        result["digest"],
        _with_code(result["weight_digests"], result["code_init"], inputs),
        inputs,
        outcome.peak_rss_bytes,
        round(outcome.seconds, 3),
        result.get("base_bytes"),
        [list(point) for point in outcome.samples],
        outcome.node,
        result.get("state_bytes"),
        held=outcome.held,
    )
