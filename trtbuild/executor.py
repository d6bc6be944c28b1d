"""Run jobs in fresh processes, watch their memory, record their peak RSS.

Every job is a new interpreter (`python -m trtbuild.worker`), the equivalent of a pool with
max_tasks_per_child=1: nothing leaks from one build into the next. Peak RSS is the kernel's
high-water mark of the worker's own address space (VmHWM, reported by the worker; ru_maxrss from
os.wait4 only where that is missing, since it also counts the parent at fork); a watcher thread
stops a process that crosses its limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from trtbuild.errors import BudgetExceeded, TrtbuildError, disk_full_text
from trtbuild.sizes import format_size

POLL_SECONDS = 0.01


@dataclass(frozen=True)
class JobOutcome:
    result: dict[str, Any]
    peak_rss_bytes: int
    seconds: float
    started: float  # wall-clock (time.time()) start and end, to see overlap of parallel jobs
    ended: float


def run_job(job: dict[str, Any], scratch: Path, limit_bytes: int | None = None) -> JobOutcome:
    """Run one job in its own process; raise TrtbuildError or BudgetExceeded on failure."""
    name = f"{job['kind']}-{time.time_ns()}"
    job = {**job, "result": str(scratch / f"{name}.result.json")}
    job_path = scratch / f"{name}.job.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TRTBUILD_PARENT_PID": str(os.getpid())}
    start, started = time.perf_counter(), time.time()
    with open(scratch / f"{name}.log", "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trtbuild.worker", str(job_path)],
            stdout=subprocess.DEVNULL, stderr=log_file, env=env,
        )  # fmt: skip
    watcher = _Watcher(proc.pid, limit_bytes)
    watcher.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    finally:
        watcher.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    outcome = _read_result(Path(job["result"]))
    own = outcome.get("vm_hwm_bytes") if outcome else None
    # VmHWM as the worker saw it; ru_maxrss also counts our own RSS at the fork (see worker.py).
    if own:
        peak = max(own, watcher.peak)
    else:
        peak = watcher.peak if watcher.killed else max(usage.ru_maxrss * 1024, watcher.peak)
    if watcher.killed or (limit_bytes is not None and peak > limit_bytes):
        # A spike shorter than the sampling period is caught here, from the kernel's own peak.
        what = "was stopped" if watcher.killed else "finished, but its output is not used"
        raise BudgetExceeded(
            f"{job['kind']} process crossed its memory limit {format_size(limit_bytes or 0)} "
            f"(peak {format_size(peak)}) and {what}",
            peak,
        )
    if outcome is None:
        log = (scratch / f"{name}.log").read_text(errors="replace")[-2000:]
        full = disk_full_text(log)
        if full:
            raise TrtbuildError(
                f"disk full while writing build files: {full}; nothing was published"
            )
        raise TrtbuildError(
            f"{job['kind']} process died with exit status {proc.returncode}: "
            f"{log.strip().splitlines()[-1] if log.strip() else 'no output'}"
        )
    if not outcome["ok"]:
        if "traceback" in outcome:
            (scratch / f"{name}.traceback.txt").write_text(outcome["traceback"])
            raise InternalJobError(
                f"{job['kind']} process failed: {outcome['error']}", outcome["traceback"]
            )
        raise TrtbuildError(outcome["error"])
    return JobOutcome(outcome["result"], peak, seconds, started, time.time())


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
    """Samples the process's RSS; kills it when it crosses `limit`."""

    def __init__(self, pid: int, limit: int | None) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit = pid, limit
        self.peak = 0
        self.killed = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            process = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop_event.wait(POLL_SECONDS):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            if self.limit is not None and rss > self.limit:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop_event.set()


class MemoryGate:
    """Admit jobs while the sum of their predicted peaks fits the budget, at most `slots` at once.

    One job is always admitted when nothing runs, so a job larger than the budget still gets its
    chance (its own limit stops it). Shared by every target of a run.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.in_use = 0
        self.running = 0
        self._cond = threading.Condition()

    @contextmanager
    def admit(self, predicted: int, budget: int) -> Iterator[int]:
        """Wait for room; yields this job's share: the budget less what the others may use."""
        with self._cond:
            while self.running and (self.running >= self.slots or self.in_use + predicted > budget):
                self._cond.wait()
            share = budget - self.in_use
            self.in_use += predicted
            self.running += 1
        try:
            yield share
        finally:
            with self._cond:
                self.in_use -= predicted
                self.running -= 1
                self._cond.notify_all()
