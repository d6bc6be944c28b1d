"""Run jobs in fresh processes, watch their memory, record their peak RSS.

Executors share one interface (`Executor`): `LocalExecutor` (here: this machine's processes,
admitted by the memory gate below) and `rayexec.RayExecutor` (a Ray cluster's nodes, each
running the same `run_job` on its own).

Every job is a new interpreter (`python -m trtbuild.worker`), the equivalent of a pool with
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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from trtbuild import forkserver, jobs
from trtbuild.errors import (
    DISK_FULL_ERRNOS,
    BudgetExceeded,
    TrtbuildError,
    disk_full,
    disk_full_text,
)
from trtbuild.forkserver import ForkServer, Unavailable
from trtbuild.jobs import Job
from trtbuild.nativefiles import held_files
from trtbuild.sizes import format_size

POLL_SECONDS = 0.01
PRIVATE_EVERY = 5  # read smaps_rollup (costlier than statm) every 5th sample
_running: set[int] = set()  # job processes started by this process that have not been waited for
_running_lock = threading.Lock()
MAX_SAMPLES = 400  # RSS points kept per process for the build report (Samples)
FORKED_KINDS = ("graph", "export", "probe", "state")
# Jobs that run model code whose native reads are inputs: their held files are sampled
# (trtbuild.nativefiles); every PRIVATE_EVERY-th sample, as the costlier smaps read.
WATCHED_FILES_KINDS = ("graph", "state")


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
    # (absolute, unclassified: trtbuild.nativefiles.model_files sorts out the model's data)
    files: list[str] = field(default_factory=list)


class Samples:
    """RSS over a process's life in at most MAX_SAMPLES points: a point covers a time step and
    keeps the largest RSS seen in it; when the points run out, neighbours merge and the step
    doubles, so a long job keeps its whole curve and no peak is ever averaged away."""

    def __init__(self, step: float = 0.05, clock: Callable[[], float] = time.perf_counter) -> None:
        self.points: list[tuple[float, int]] = []
        self.step, self.clock = step, clock
        self.start = clock()

    def add(self, rss: int) -> None:
        now = self.clock() - self.start
        if self.points and now - self.points[-1][0] < self.step:
            t, high = self.points[-1]
            self.points[-1] = (t, max(high, rss))
            return
        self.points.append((round(now, 3), rss))
        if len(self.points) > MAX_SAMPLES:
            pairs = zip(self.points[::2], self.points[1::2])
            merged = [(a[0], max(a[1], b[1])) for a, b in pairs]
            self.points = merged + self.points[len(merged) * 2 :]
            self.step *= 2


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
    pid, wait, forked = _start(job_path, log_path, server if job.kind in FORKED_KINDS else None)
    with _running_lock:
        _running.add(pid)
    watcher = _Watcher(pid, limit_bytes, forked, job.kind in WATCHED_FILES_KINDS)
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
            [sys.executable, "-m", "trtbuild.worker", str(job_path)],
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


class _Watcher(threading.Thread):
    """Samples the process's RSS (and, with `files`, the files it holds); kills it when it
    crosses `limit`."""

    def __init__(
        self, pid: int, limit: int | None, private: bool = False, files: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit, self.private, self.watch_files = pid, limit, private, files
        self.files: set[str] = set()
        self.peak = 0
        self.private_peak = 0
        self.killed = False
        self.samples = Samples()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            process = psutil.Process(self.pid)
        except psutil.Error:
            return
        samples = 0
        while not self._stop_event.wait(POLL_SECONDS):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.add(rss)
            samples += 1
            if self.private and samples % PRIVATE_EVERY == 1:
                self.private_peak = max(self.private_peak, private_bytes(self.pid))
            if self.watch_files and samples % PRIVATE_EVERY == 1:
                self.files |= held_files(self.pid)
            if self.limit is not None and rss > self.limit:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop_event.set()


def private_bytes(pid: int) -> int:
    """Pages only this process holds (USS: Private_Clean + Private_Dirty), 0 once it is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


class MemoryGate:
    """Admit jobs while the sum of their predicted peaks fits the budget, at most `slots` at once.

    One job is always admitted when nothing runs, so a job larger than the budget still gets its
    chance (its own limit stops it). Shared by every target of a run.

    With a fork server, its resident pages count once: a forked job is charged its prediction
    less the server's size (its VmHWM, and so its prediction, already holds those shared pages),
    a plain job its whole prediction plus the server's size while the server runs. A plain job
    that only fits without the server stops it when no forked job needs it; the next forked job
    starts it again.
    """

    def __init__(self, slots: int, server: ForkServer | None = None) -> None:
        self.slots = max(1, slots)
        self.server = server
        self.in_use = 0
        self.running = 0
        self.forked_running = 0
        self._cond = threading.Condition()

    def _resident(self) -> int:
        return self.server.rss_bytes if self.server is not None and self.server.running else 0

    def _fits(self, charge: int, forked: bool, budget: int) -> bool:
        assert self.server is not None or not forked
        server = self.server.rss_bytes if forked and self.server is not None else self._resident()
        return self.in_use + charge + server <= budget

    def _evict(self, forked: bool, charge: int, budget: int) -> bool:
        """A plain job fits only without the server, and no forked job runs: stop the server."""
        idle = not forked and not self.forked_running
        alive = self.server is not None and self.server.running
        return idle and alive and not self._fits(charge, False, budget)

    @contextmanager
    def admit(self, predicted: int, budget: int, forked: bool = False) -> Iterator[int]:
        """Wait for room; yields this job's share: the budget less what the others may use."""
        forked = forked and self.server is not None
        server_bytes = self.server.rss_bytes if forked and self.server is not None else 0
        charge = max(predicted - server_bytes, 0)
        with self._cond:
            while True:
                if self._evict(forked, charge, budget):
                    self.server.close()  # type: ignore[union-attr]  # its pages serve this job
                busy = self.running >= self.slots or not self._fits(charge, forked, budget)
                if not (self.running and busy):
                    break
                self._cond.wait()
            share = budget - self.in_use - (0 if forked else self._resident())
            self.in_use += charge
            self.running += 1
            self.forked_running += forked
        try:
            yield share
        finally:
            with self._cond:
                self.in_use -= charge
                self.running -= 1
                self.forked_running -= forked
                self._cond.notify_all()


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
