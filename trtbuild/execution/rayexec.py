"""Jobs on a Ray cluster: every graph, export and build job is a Ray task.

Each task runs in a fresh Ray worker process (`max_calls=1`) and there calls the local
executor's `run_job`: the same worker entry point, in its own process, its memory watched and
its peak recorded, now with the node it ran on. A task asks Ray for

- `memory`: its predicted peak, so Ray's own accounting sees it;
- `trtbuild`: its predicted peak as a share of its budget. Every node that builds offers
  `trtbuild: 1`, its one host budget, so the jobs running on one node never add up past it;
- its target's device kind, a custom resource that only nodes of that kind offer (a token amount:
  it places the task, the budget share above bounds it);

and is retried when its worker is lost (`max_retries`). Ray stops the tasks of a driver that
dies, and a job's own process dies with the task's (procself.die_with_parent): a killed run leaves
nothing running.

No shared filesystem: a task gets the files its job reads (the recipe's code and configs, the
weights, a part's ONNX files: shipped.py) through Ray's object store, rebuilt under a private
folder on the node at the same absolute paths below it, and sends back the files the job wrote.
A worker node needs only trtbuild and its dependencies, at the versions of the driver (the action keys assume
it: README "Building on a cluster").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trtbuild.errors import BudgetExceeded, TrtbuildError
from trtbuild.execution import jobs
from trtbuild.execution.executor import InternalJobError, JobOutcome, run_job
from trtbuild.execution.follow import Held
from trtbuild.execution.jobs import Job
from trtbuild.execution.shipped import inputs_of

RESOURCE = "trtbuild"  # what every building node offers 1 of: its host budget
KIND_TOKEN = 0.001  # of a device kind's resource: places a task, never limits it
MAX_RETRIES = 3  # a lost worker (node down, process killed) is retried this often
PATH_FIELDS = ("recipe", "onnx", "engine", "out", "state", "table", "spill")  # naming files
ENV_PREFIXES = ("TRTBUILD_", "PYTHONHASHSEED")  # what a job's process gets from the driver


def available() -> str | None:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "executor 'ray' needs Ray: pip install -e '.[ray]'"
    return None


class RayExecutor:
    """Jobs as Ray tasks on the cluster at `address`; None: a new one-node cluster here,
    offering `kinds` (the device kinds this machine is)."""

    name = "ray"  # no fork server: each task is a fresh process on its node

    def __init__(self, address: str | None, slots: int, kinds: set[str]) -> None:
        missing = available()
        if missing:
            raise TrtbuildError(missing)
        import ray

        if address:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            resources = {RESOURCE: 1.0, **dict.fromkeys(kinds, 1.0)}
            ray.init(resources=resources, logging_level=logging.ERROR, log_to_driver=False)
        offered = ray.cluster_resources()
        where = address or "this machine"
        if RESOURCE not in offered:
            ray.shutdown()
            raise TrtbuildError(
                f"Ray cluster at {where}: no node offers the '{RESOURCE}' resource; start each "
                f'building node with --resources \'{{"{RESOURCE}": 1, "<device kind>": 1}}\''
            )
        self.where, self.offered = where, set(offered)
        self.slots = threading.Semaphore(max(1, slots) * max(1, int(offered[RESOURCE])))
        self._refs: dict[tuple[str, int, int], Any] = {}  # (path, size, mtime) -> object ref
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def admit(
        self, predicted: int, budget: int, forked: bool = False, replacing: Held | None = None
    ) -> Iterator[int]:
        """Ray places and bounds each task by its budget share; here only the number in flight."""
        with self.slots:
            yield budget

    def run(
        self,
        job: Job,
        scratch: Path,
        limit: int | None,
        predicted: int,
        kind: str | None,
        hold: bool = False,  # a task's process ends with its task: two traces per target
        held: Held | None = None,
    ) -> JobOutcome:
        import ray

        share = 1.0 if not limit else min(1.0, max(predicted, 1) / limit)
        resources = {RESOURCE: max(round(share, 4), 0.0001)}
        if kind is not None:  # asked only for a part the caches lack
            if kind not in self.offered:
                raise TrtbuildError(
                    f"Ray cluster at {self.where}: no node offers device kind '{kind}'"
                )
            resources[kind] = KIND_TOKEN
        files = {str(p): self._put(p) for p in inputs_of(job)}
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        task = _task.options(memory=max(predicted, 1), resources=resources, max_retries=MAX_RETRIES)
        start = time.perf_counter()
        reply = ray.get(task.remote(jobs.to_json(job, ""), files, limit, str(scratch), env))
        if "error" in reply:
            if reply.get("peak_rss_bytes") is not None:
                raise BudgetExceeded(reply["error"], reply["peak_rss_bytes"])
            if "traceback" in reply:
                raise InternalJobError(reply["error"], reply["traceback"])
            raise TrtbuildError.from_text(reply["error"])
        for name, data in reply["files"].items():
            path = Path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        outcome = reply["outcome"]
        outcome["samples"] = [tuple(point) for point in outcome["samples"]]
        wall = time.perf_counter() - start
        return JobOutcome(**{**outcome, "dispatch_seconds": round(wall - outcome["seconds"], 3)})

    def release(self, held: Held, why: str) -> None:
        held.release(why)  # never made here

    def close(self, failed: bool) -> None:
        import ray

        ray.shutdown()  # a failed run's tasks are cancelled with its driver

    def _put(self, path: Path) -> Any:
        """A file in the object store, once per version of it."""
        import ray

        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key not in self._refs:
                self._refs[key] = ray.put(path.read_bytes())
            return self._refs[key]


# ------------------------------------------------------------------ on the node


def _run_on_node(
    job_json: dict[str, Any],
    files: dict[str, Any],
    limit: int | None,
    scratch: str,
    env: dict[str, str],
) -> dict[str, Any]:
    import ray

    root = Path(tempfile.mkdtemp(prefix="trtbuild-ray-"))
    try:
        here = root / "fs"
        for name, ref in files.items():
            path = _under(here, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(ray.get(ref))
        job_json = {**job_json, **_moved(job_json, here)}
        if job_json["kind"] == "export":
            job_json["parts"] = [
                {**p, "onnx": str(_under(here, p["onnx"]))} for p in job_json["parts"]
            ]
            for part in job_json["parts"]:
                Path(part["onnx"]).parent.mkdir(parents=True, exist_ok=True)
        if job_json["kind"] == "graph":
            job_json["cache"] = None
        if job_json["kind"] == "calibrate":
            samples = job_json["samples"]
            moved = [str(_under(here, f)) for f in samples.get("files") or []]
            job_json["samples"] = {**samples, "files": moved}
        out = _under(here, scratch)
        out.mkdir(parents=True, exist_ok=True)
        job, _ = jobs.from_json({**job_json, "result": ""})
        os.environ.update(env)
        node = ray.get_runtime_context().get_node_id()
        try:
            outcome = run_job(job, root, limit)
        except BudgetExceeded as exc:
            return {"error": str(exc), "peak_rss_bytes": exc.peak_rss_bytes}
        except TrtbuildError as exc:
            return {"error": str(exc)}
        except InternalJobError as exc:
            return {"error": str(exc), "traceback": exc.traceback_text}
        prefix = str(here)
        result = json.loads(json.dumps(outcome.result).replace(prefix, ""))
        made = {
            str(p)[len(prefix) :]: p.read_bytes()
            for p in sorted(out.rglob("*"))
            if p.is_file() and str(p)[len(prefix) :] not in files
        }
        # Files the job held on this node: the project's copy, as the orchestrator's paths
        held = [f[len(prefix) :] for f in outcome.files if f.startswith(prefix + os.sep)]
        data = {**asdict(outcome), "result": result, "node": node, "files": held}
        return {"outcome": data, "files": made}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _under(here: Path, path: str) -> Path:
    return here / path.lstrip("/")


def _moved(job_json: dict[str, Any], here: Path) -> dict[str, Any]:
    """The job's file fields, pointing into the node's copy."""
    moved: dict[str, Any] = {}
    for key in PATH_FIELDS:
        if isinstance(job_json.get(key), str) and job_json[key]:
            moved[key] = str(_under(here, job_json[key]))
    settings = job_json.get("settings")
    if isinstance(settings, dict):
        named = ("timing_cache_path", "calibration_table")
        paths = {k: str(_under(here, settings[k])) for k in named if settings.get(k)}
        if paths:
            moved["settings"] = {**settings, **paths}
    return moved


def _make_task() -> Any:
    import ray

    return ray.remote(max_calls=1)(_run_on_node)


class _LazyTask:
    """The Ray remote function, made on first use (importing trtbuild must not import Ray)."""

    _task: Any = None

    def options(self, **kwargs: Any) -> Any:
        if _LazyTask._task is None:
            _LazyTask._task = _make_task()
        return _LazyTask._task.options(**kwargs)


_task = _LazyTask()
