"""Entry point of every build process: `python -m trtbuild.execution.worker JOB.json`.

One job per process (graph, export or build), so each process holds only what its job needs and
its peak RSS is its own. The result is written as JSON next to the job; user errors exit 1.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from trtbuild.errors import TrtbuildError, disk_full, disk_full_text, is_disk_full
from trtbuild.execution.jobs import (
    BuildJob,
    CalibrateJob,
    CheckJob,
    ExportJob,
    GraphJob,
    Job,
    ProbeJob,
    StateJob,
    from_json,
)
from trtbuild.execution.procself import die_with_parent, own_peak_rss


def run(job: Job, trace: list[Any] | None = None) -> dict[str, Any]:
    """Run `job`; `trace`: a graph job's trace (program, OpGraph, rename map), kept by the graph
    job when it has a `follow` (trtbuild.execution.follow) and used by the export that follows."""
    if isinstance(job, BuildJob):
        from trtbuild.backends import get_backend
        from trtbuild.backends.quantize import quantized

        onnx = quantized(Path(job.onnx), job.settings)  # int8/int4/fp8: its Q/DQ ONNX
        return get_backend(job.backend).build(onnx, job.settings, Path(job.engine))
    if isinstance(job, ProbeJob):
        return _probe(job.bytes, job.hold, job.collect)
    if isinstance(job, CheckJob):
        from trtbuild.check.compare import run_check

        return run_check(job)
    from trtbuild.recipe.load import load_recipe

    recipe = load_recipe(job.recipe)
    if isinstance(job, GraphJob):
        return _graph(recipe, job, trace if trace is not None else [])
    if isinstance(job, StateJob):
        return _state(recipe, job)
    if isinstance(job, CalibrateJob):
        from trtbuild.check.calibrate import calibrate
        from trtbuild.model.partexport import prepare

        state = Path(job.state) if job.state else None
        return calibrate(prepare(recipe, job.model, "fp32", job.graph_digest, state), job, recipe)
    if recipe.model_spec(job.model).onnx:
        return _onnx_export(recipe, job)
    from trtbuild.model.partexport import export_parts, prepare

    parts = [(entry.part, Path(entry.onnx)) for entry in job.parts]
    state = Path(job.state) if job.state else None
    kept = trace[0] if trace else None
    prepared = prepare(recipe, job.model, job.precision, job.graph_digest, state, kept)
    exported = export_parts(recipe, job.model, parts, job.opset, prepared)
    if job.reference is None:
        return {"parts": exported}
    from trtbuild.check.reference import compute

    before = own_peak_rss()  # the export's own peak: what the memory model of exports is fitted to
    reference = compute(prepared, job.precision, job.reference, recipe.root)
    return {"parts": exported, "reference": reference, "export_peak_bytes": before}


def _onnx_export(recipe: Any, job: ExportJob) -> dict[str, Any]:
    """The parts (and the check's reference) of an `onnx:` source: no torch in this process."""
    from trtbuild.model.onnxparts import export_parts, open_source

    source = open_source(recipe, job.model, job.graph_digest)
    parts = [(entry.part, Path(entry.onnx)) for entry in job.parts]
    exported = export_parts(source, parts, job.precision)
    if job.reference is None:
        return {"parts": exported}
    from trtbuild.check.onnxreference import compute

    before = own_peak_rss()
    reference = compute(source, job.reference, recipe.root, recipe.plugins(job.model))
    return {"parts": exported, "reference": reference, "export_peak_bytes": before}


def _probe(size: int, hold: float, collect: bool) -> dict[str, Any]:
    """Touch `size` bytes and hold them `hold` seconds: what the executor measures (tests)."""
    import gc
    import time

    ballast = bytearray(size)
    for offset in range(0, size, 4096):
        ballast[offset] = 1
    if collect:
        gc.collect()
    time.sleep(hold)
    return {"bytes": len(ballast)}


def _graph(recipe: Any, job: GraphJob, trace: list[Any]) -> dict[str, Any]:
    """The op graph, weight digests and discovered inputs of one model at one precision; with
    `job.follow`, its trace is appended to `trace` for the export that follows."""
    if recipe.model_spec(job.model).onnx:  # no torch in this process
        from trtbuild.model.onnxsource import graph_result

        return graph_result(recipe, job.model, own_peak_rss)
    from trtbuild.model import depfile, exporter, frontend
    from trtbuild.model.binding import exported_graph
    from trtbuild.model.checkpoint import tensor_digest
    from trtbuild.model.nativefiles import held_files, model_files
    from trtbuild.model.weights import WeightSource

    spec = recipe.model_spec(job.model)
    # The factory runs here on the meta device: one that loads a checkpoint itself (no `weights`
    # in the recipe) still reads it here, transiently (measured); its values come from the state
    # job (trtbuild.orchestrate.statejob), and the file is an input of this graph like any file it reads.
    with depfile.recording() as touched:
        exporter.import_exporter(registry=False)  # torch.onnx.export's: not needed here
        _, program = frontend.export_model(recipe, spec, job.precision)
        graph, rename = exported_graph(program, spec)
        base = own_peak_rss()  # the model's own process cost, before any weight is read
        model = frontend.build_model(recipe, spec, "fp32").model
        source = WeightSource(recipe, spec, model)
        digests, code_init = source.digests(), source.code_init()
        constants = frontend.code_constants(program)
        held = held_files()  # native reads still held (mmap'd tables): trtbuild.model.nativefiles
    digests.update({name: tensor_digest(value) for name, value in constants.items()})
    if job.follow:
        trace.append((program, graph, rename))
    missing = sorted(set(graph.weights) - set(digests))
    if (
        missing and spec.weights is not None
    ):  # a buffer the graph reads that is neither in the checkpoint nor made by code
        raise TrtbuildError(f"{spec.weights}: checkpoint has no tensor for {missing[0]!r}")
    # Weights are pinned tensor by tensor; the cache is trtbuild's own: neither is model code.
    exclude = [Path(job.cache)] if job.cache else []
    exclude.extend(_job_files)  # the job's own files (its log is held open): never model inputs
    if isinstance(spec.weights, str):  # config.json of a model folder too: lock pins it
        exclude.append(recipe.resolve(spec.weights))
    inputs = depfile.classify(touched, exclude)
    files = sorted({*inputs.files, *model_files(held, exclude)})
    return {
        "graph": graph.to_json(),
        "digest": graph.digest(),
        "weight_digests": {k: digests[k] for k in sorted(graph.weights) if k in digests},
        "code_init": sorted(set(code_init) & set(graph.weights)),
        "base_bytes": base,
        "inputs": inputs.to_json(files),
        "state_bytes": _state_bytes(model),
    }


def _state_bytes(model: Any) -> int:
    """Bytes of the model's checkpoint tensors as its factory makes them (a tie once)."""
    unique = {id(t): t for t in model.state_dict(keep_vars=True).values()}
    return sum(t.numel() * t.element_size() for t in unique.values())


def _state(recipe: Any, job: StateJob) -> dict[str, Any]:
    """The model's own state after its factory ran, as a safetensors file (trtbuild.model.ownstate)."""
    from trtbuild.model.ownstate import write_state

    return write_state(recipe, recipe.model_spec(job.model), Path(job.out))


_job_files: list[Path] = []  # this process's job, result and log files (main sets them)


def _disk_full(exc: BaseException | None, job: Job) -> str | None:
    """The disk-full error behind `exc`, if any (libraries often wrap the OSError), naming the
    file written, else what the job writes: its engine, or its folder (ONNX files, a state)."""
    where = job.engine if isinstance(job, BuildJob) else str(_job_files[0].parent)
    seen = 0
    while exc is not None and seen < 10:
        if is_disk_full(exc):
            return str(disk_full(exc.filename or where, exc))
        if disk_full_text(str(exc)):
            return str(disk_full(where))
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _errno(exc: BaseException | None) -> int:
    """The disk-full errno behind `exc` (ENOSPC when only its text says so): the exit status."""
    while exc is not None:
        if is_disk_full(exc):
            return exc.errno or errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    return errno.ENOSPC


def main(argv: list[str], fresh: bool = False) -> int:
    """Run the job file argv[0]; `fresh`: this process was started for it (not forked from the
    fork server, which preloaded what a torch job imports: trtbuild.execution.preload)."""
    die_with_parent()
    job_path = Path(argv[0])
    job, result_file = from_json(json.loads(job_path.read_text()))
    if fresh:
        _preload(job)
    stem = job_path.name.removesuffix(".job.json")  # executor.run_job's names
    _job_files[:] = [job_path, Path(result_file), job_path.with_name(f"{stem}.log")]
    # Opened before the result exists: the orchestrator may answer as soon as it sees it (closed
    # by follow.next_job).
    fifo = job.follow if isinstance(job, GraphJob) else ""
    follow = open(fifo, "rb") if fifo else None  # noqa: SIM115
    trace: list[Any] = []
    code = _answer(job, Path(result_file), trace)
    if code or follow is None or not trace:
        return code
    from trtbuild.execution.follow import next_job

    follows = next_job(follow)  # the target's export, once it is planned
    if follows is None:
        return 0
    return _answer(follows[0], Path(follows[1]), trace)


def _preload(job: Job) -> None:
    """A torch job's imports, as the fork server makes them (trtbuild.execution.preload). What
    fails here (a recipe changed since, torch missing) fails again in run(), which reports it."""
    if not isinstance(job, GraphJob | StateJob | ExportJob | CalibrateJob):
        return
    from trtbuild.execution.preload import preload
    from trtbuild.recipe.load import load_recipe

    try:
        if not load_recipe(job.recipe).model_spec(job.model).onnx:
            preload(registry=False)  # built while the run plans (follow.py) or by the export
    except (TrtbuildError, ImportError):
        return


def _answer(job: Job, result_path: Path, trace: list[Any]) -> int:
    """Run `job` and write its result (atomically: its existence says it is whole); the exit
    status: 0, 1 (a user error), 3 (internal) or a disk-full errno."""
    try:
        result: dict[str, Any] = {"ok": True, "result": run(job, trace)}
        code = 0
    except TrtbuildError as exc:
        result, code = {"ok": False, "error": str(exc)}, 1
    except MemoryError:
        result, code = {"ok": False, "error": "out of memory"}, 3
    except Exception as exc:
        full = _disk_full(exc, job)
        if full:
            result, code = {"ok": False, "error": full}, _errno(exc)
        else:
            result = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            code = 3
    result["vm_hwm_bytes"] = own_peak_rss()
    tmp = result_path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(result))
        os.replace(tmp, result_path)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        tmp.unlink(missing_ok=True)
        return exc.errno or errno.ENOSPC  # no room for the result either: the status says it
    return code


if __name__ == "__main__":
    status = main(sys.argv[1:], fresh=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # no interpreter teardown (0.4 s with torch loaded): the result is written
