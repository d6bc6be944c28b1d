"""Run jobs in fresh processes, watch their memory, record their peak RSS.

Executors share one interface (`Executor`): `LocalExecutor` (here: this machine's processes,
admitted by the memory gate below) and `rayexec.RayExecutor` (a Ray cluster's nodes, each
running the same `run_job` on its own).

Every job is a new interpreter (`python -m trtbuild.execution.worker`), the equivalent of a pool with
max_tasks_per_child=1: nothing leaks from one build into the next. Peak RSS is the kernel's
high-water mark of the worker's own address space (VmHWM, reported by the worker; ru_maxrss from
os.wait4 only where that is missing, since it also counts the parent at fork); a watcher thread
stops a process that crosses its limit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trtbuild.errors import (
    DISK_FULL_ERRNOS,
    BudgetExceeded,
    TrtbuildError,
    disk_full,
    disk_full_text,
)
from trtbuild.execution import forkserver, jobs
from trtbuild.execution.forkserver import ForkServer, Unavailable
from trtbuild.execution.gate import MemoryGate
from trtbuild.execution.jobs import Job
from trtbuild.execution.watch import WATCHED_FILES_KINDS, Watcher
from trtbuild.recipe.sizes import format_size

_running: set[int] = set()  # job processes started by this process that have not been waited for
_running_lock = threading.Lock()
FORKED_KINDS = ("graph", "export", "probe", "state")


@dataclass(frozen=True)
class JobOutcome:
    result: dict[str, Any]
    peak_rss_bytes: int
    seconds: float
    started: float  # wall-clock (time.time()) start and end, to see overlap of parallel jobs
    ended: float
    # Forked jobs: peak of the pages this process alone holds (USS, sampled). What it shares
    # with the fork server is in peak_rss_bytes (as in a fresh process) but costs the host once.
    private_peak_bytes: int | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS) over its life
    node: str | None = None  # the Ray node it ran on (rayexec.py); None: this machine
    # Ray: the task's time beyond its job's own (scheduling, a worker's start, files each way)
    dispatch_seconds: float | None = None
    # Files the process held (mmap'd or open) in the samples: graph and state jobs only, raw
    # (absolute, unclassified: trtbuild.model.nativefiles.model_files sorts out the model's data)
    files: list[str] = field(default_factory=list)


def run_job(
    job: Job,
    scratch: Path,
    limit_bytes: int | None = None,
    server: ForkServer | None = None,
) -> JobOutcome:
    """Run one job in its own process; raise TrtbuildError or BudgetExceeded on failure.

    Graph and export jobs are forked from `server` when there is one; build jobs (which never
    import torch) always start a plain interpreter.
    """
    name = f"{job.kind}-{time.time_ns()}"
    result_path = scratch / f"{name}.result.json"
    job_path = scratch / f"{name}.job.json"
    job_path.write_text(json.dumps(jobs.to_json(job, str(result_path))))
    log_path = scratch / f"{name}.log"
    start, started = time.perf_counter(), time.time()
    forkable = job.kind in FORKED_KINDS and getattr(job, "uses_torch", True)
    pid, wait, forked = _start(job_path, log_path, server if forkable else None)
    with _running_lock:
        _running.add(pid)
    watcher = Watcher(pid, limit_bytes, forked, job.kind in WATCHED_FILES_KINDS)
    watcher.start()
    try:
        status, maxrss = wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Unavailable):
            wait()
        raise
    finally:
        with _running_lock:
            _running.discard(pid)
        watcher.stop()
        watcher.join()
    returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    outcome = _read_result(result_path)
    own = outcome.get("vm_hwm_bytes") if outcome else None
    # VmHWM as the worker saw it; ru_maxrss also counts our own RSS at the fork (see worker.py).
    if own:
        peak = max(own, watcher.peak)
    else:
        peak = watcher.peak if watcher.killed else max(maxrss, watcher.peak)
    if watcher.killed or (limit_bytes is not None and peak > limit_bytes):
        # A spike shorter than the sampling period is caught here, from the kernel's own peak.
        what = "was stopped" if watcher.killed else "finished, but its output is not used"
        raise BudgetExceeded(
            f"{job.kind} process crossed its memory limit {format_size(limit_bytes or 0)} "
            f"(peak {format_size(peak)}) and {what}",
            peak,
        )
    if outcome is None:
        log = (scratch / f"{name}.log").read_text(errors="replace")[-2000:]
        if returncode in DISK_FULL_ERRNOS or disk_full_text(log):  # no room for its result
            code = returncode if returncode in DISK_FULL_ERRNOS else errno.ENOSPC
            where = job.engine if isinstance(job, jobs.BuildJob) else scratch
            raise disk_full(where, OSError(code, os.strerror(code)))
        raise TrtbuildError(
            f"{job.kind} process died with exit status {returncode}: "
            f"{log.strip().splitlines()[-1] if log.strip() else 'no output'}"
        )
    if not outcome["ok"]:
        if "traceback" in outcome:
            (scratch / f"{name}.traceback.txt").write_text(outcome["traceback"])
            raise InternalJobError(
                f"{job.kind} process failed: {outcome['error']}", outcome["traceback"]
            )
        raise TrtbuildError.from_text(outcome["error"])
    private = watcher.private_peak if forked else None
    return JobOutcome(
        outcome["result"],
        peak,
        seconds,
        started,
        time.time(),
        private,
        watcher.samples.points,
        files=sorted(watcher.files),
    )


def _start(
    job_path: Path, log_path: Path, server: ForkServer | None
) -> tuple[int, Callable[[], tuple[int, int]], bool]:
    """Start the job's process: (pid, a wait returning (status, ru_maxrss), forked or not)."""
    if server is not None:
        try:
            pid = server.spawn(job_path, log_path, worker_env())
            return pid, lambda: (server.wait(pid), 0), True
        except Unavailable:  # a job never fails for want of the server: run it plainly
            pass
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trtbuild.execution.worker", str(job_path)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=worker_env(),
        )
    return proc.pid, lambda: _wait4(proc.pid), False


def stop_running() -> None:
    """SIGKILL every job process this process started and still waits for (on SIGTERM: the
    threads that wait for them then raise, and each job's scratch folder is removed)."""
    with _running_lock:
        pids = list(_running)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def worker_env() -> dict[str, str]:
    """The environment of every worker process (and of the fork server)."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "TRTBUILD_PARENT_PID": str(os.getpid())}


def _wait4(pid: int) -> tuple[int, int]:
    _, status, usage = os.wait4(pid, 0)
    return status, usage.ru_maxrss * 1024


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


class InternalJobError(RuntimeError):
    def __init__(self, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


class Executor(Protocol):
    """Where jobs run. `admit` yields a job's memory share once it may start (the share is its
    limit); `run` runs it for a target built for device `kind` (None: any)."""

    name: str

    def admit(
        self, predicted: int, budget: int, forked: bool = False
    ) -> AbstractContextManager[int]: ...

    def run(
        self, job: Job, scratch: Path, limit: int | None, predicted: int, kind: str | None
    ) -> JobOutcome: ...

    def close(self, failed: bool) -> None:
        """The run is over; `failed`: stop whatever still runs."""


class LocalExecutor(MemoryGate):
    """This machine: jobs as its own processes, graph and export jobs forked from `server`."""

    name = "local"

    def run(
        self, job: Job, scratch: Path, limit: int | None, predicted: int, kind: str | None
    ) -> JobOutcome:
        return run_job(job, scratch, limit, self.server)

    def close(self, failed: bool) -> None:
        if self.server is None:
            return
        if failed:
            self.server.close()  # and every job it still runs
        else:
            forkserver.keep(self.server)  # idle: every job has been waited for
