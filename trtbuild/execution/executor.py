"""Run jobs in fresh processes, watch their memory, record their peak RSS.

Executors share one interface (`Executor`): `LocalExecutor` (here: this machine's processes,
admitted by the memory gate below) and `rayexec.RayExecutor` (a Ray cluster's nodes, each
running the same `run_job` on its own).

Every job is a new process (`python -m trtbuild.execution.worker`, or a child of the fork server),
the equivalent of a pool with max_tasks_per_child=1: nothing leaks from one build into the next.
One exception: a target's export may run in its own graph job's process, from that job's trace
(`hold`, `resume`: trtbuild.execution.follow). Peak RSS is the kernel's
high-water mark of the worker's own address space (VmHWM, reported by the worker; ru_maxrss from
os.wait4 only where that is missing, since it also counts the parent at fork); a watcher thread
stops a process that crosses its limit.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
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
from trtbuild.execution.follow import Held
from trtbuild.execution.forkserver import ForkServer
from trtbuild.execution.gate import MemoryGate
from trtbuild.execution.jobs import Job
from trtbuild.execution.process import read_result, reaped, start_process, wait_for
from trtbuild.execution.watch import WATCHED_FILES_KINDS, Watcher
from trtbuild.recipe.sizes import format_size

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
    held: Held | None = None  # run_job(hold=True): the process, waiting for resume()
    resumed: bool = False  # run in a held process (resume): no trace of its own


def run_job(
    job: Job,
    scratch: Path,
    limit_bytes: int | None = None,
    server: ForkServer | None = None,
    hold: bool = False,
) -> JobOutcome:
    """Run one job in its own process; raise TrtbuildError or BudgetExceeded on failure.

    Graph and export jobs are forked from `server` when there is one; build jobs (which never
    import torch) always start a plain interpreter. `hold`: a torch graph job's process stays
    once its result is written, for `resume` to run the target's export in it (the outcome's
    `held`; trtbuild.execution.follow).
    """
    name = f"{job.kind}-{time.time_ns()}"
    fifo, fd = scratch / f"{name}.follow", -1
    if hold and isinstance(job, jobs.GraphJob) and job.uses_torch:
        os.mkfifo(fifo)
        fd = os.open(fifo, os.O_RDWR)  # never blocks; the worker's open never blocks either
        job = dataclasses.replace(job, follow=str(fifo))
    result_path = _write_job(job, scratch, name)
    start, started = time.perf_counter(), time.time()
    forkable = job.kind in FORKED_KINDS and getattr(job, "uses_torch", True)
    try:
        pid, wait, forked = start_process(
            scratch / f"{name}.job.json", scratch / f"{name}.log", server if forkable else None
        )
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    exited = reaped(pid, wait)
    watcher = Watcher(pid, limit_bytes, forked, job.kind in WATCHED_FILES_KINDS)
    watcher.start()
    ended = wait_for(pid, exited, watcher, result_path if fd >= 0 else None)
    held = None
    if ended is None:  # its result is written and it waits on its FIFO
        held = Held(pid, fifo, fd, exited, forked, 0, scratch / f"{name}.log")
    elif fd >= 0:
        os.close(fd)
    try:
        outcome = _outcome(job, scratch, name, watcher, ended, limit_bytes, forked, start, started)
    except BaseException:
        if held is not None:
            held.release("its job failed")
        raise
    if held is not None:
        held.bytes = outcome.private_peak_bytes or outcome.peak_rss_bytes
    return dataclasses.replace(outcome, held=held)


def resume(
    held: Held, job: Job, scratch: Path, limit_bytes: int | None = None
) -> JobOutcome | None:
    """Run `job` in the held process (one trace per target); None when it is no longer there
    (released to make room, or died): run the job as a process of its own then."""
    try:  # what the process writes from here on is this job's
        offset = held.log.stat().st_size
    except FileNotFoundError:  # released: its scratch is gone, and so is the process
        return None
    name = f"{job.kind}-{time.time_ns()}"
    _write_job(job, scratch, name)
    start, started = time.perf_counter(), time.time()
    watcher = Watcher(held.pid, limit_bytes, held.forked, job.kind in WATCHED_FILES_KINDS)
    if not held.send(scratch / f"{name}.job.json"):
        return None
    watcher.start()
    ended = wait_for(held.pid, held.exited, watcher, None)
    with open(held.log, "rb") as log:  # this job's stderr, for its errors (not the graph's)
        log.seek(offset)
        (scratch / f"{name}.log").write_bytes(log.read())
    try:
        outcome = _outcome(
            job, scratch, name, watcher, ended, limit_bytes, held.forked, start, started
        )
        return dataclasses.replace(outcome, resumed=True)
    finally:
        held.release("")  # gone already: its scratch with it


def _write_job(job: Job, scratch: Path, name: str) -> Path:
    result_path = scratch / f"{name}.result.json"
    (scratch / f"{name}.job.json").write_text(json.dumps(jobs.to_json(job, str(result_path))))
    return result_path


def _outcome(
    job: Job,
    scratch: Path,
    name: str,
    watcher: Watcher,
    ended: tuple[int, int] | None,
    limit_bytes: int | None,
    forked: bool,
    start: float,
    started: float,
) -> JobOutcome:
    """The job's outcome from its result file and what the watcher saw; `ended`: (status,
    ru_maxrss) of its exit, None while it is held."""
    status, maxrss = ended or (0, 0)
    returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    outcome = read_result(scratch / f"{name}.result.json")
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


class InternalJobError(RuntimeError):
    def __init__(self, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


class Executor(Protocol):
    """Where jobs run. `admit` yields a job's memory share once it may start (the share is its
    limit); `run` runs it for a target built for device `kind` (None: any)."""

    name: str

    def admit(
        self, predicted: int, budget: int, forked: bool = False, replacing: Held | None = None
    ) -> AbstractContextManager[int]: ...

    def run(
        self,
        job: Job,
        scratch: Path,
        limit: int | None,
        predicted: int,
        kind: str | None,
        hold: bool = False,
        held: Held | None = None,
    ) -> JobOutcome:
        """`hold`: keep a graph job's process for its target's export (the outcome's `held`,
        where the executor can); `held`: run the job in that process if it is still there."""
        ...

    def release(self, held: Held, why: str) -> None:
        """A held process no longer wanted."""

    def close(self, failed: bool) -> None:
        """The run is over; `failed`: stop whatever still runs."""


class LocalExecutor(MemoryGate):
    """This machine: jobs as its own processes, graph and export jobs forked from `server`."""

    name = "local"

    def run(
        self,
        job: Job,
        scratch: Path,
        limit: int | None,
        predicted: int,
        kind: str | None,
        hold: bool = False,
        held: Held | None = None,
    ) -> JobOutcome:
        if held is not None:
            resumed = resume(held, job, scratch, limit)
            if resumed is not None:
                return resumed
        outcome = run_job(job, scratch, limit, self.server, hold)
        if outcome.held is not None:
            self.hold(outcome.held)
        return outcome

    def close(self, failed: bool) -> None:
        for held in list(self.held):
            self.release(held, "the run is over")
        if self.server is None:
            return
        if failed:
            self.server.close()  # and every job it still runs
        else:
            forkserver.keep(self.server)  # idle: every job has been waited for
