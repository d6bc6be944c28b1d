"""Job processes: started plainly or forked from the fork server, waited for on a thread each, and
killed together when the run is stopped (SIGTERM: trtbuild.cli)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from trtbuild.execution.forkserver import ForkServer, Unavailable
from trtbuild.execution.watch import POLL_SECONDS, Watcher

_running: set[int] = set()  # job processes started by this process that have not been waited for
_running_lock = threading.Lock()
_stopping = threading.Event()  # set by stop_running: the run is stopping, no job starts


class Stopping(KeyboardInterrupt):
    """A job asked to start once the run was stopped (Ctrl-C, SIGTERM): it never starts. A
    KeyboardInterrupt, so no handler of a failed job (a fresh export for a held process that
    died, a re-plan) takes it for a job's failure and starts another."""


def reaped(pid: int, wait: Callable[[], tuple[int, int]]) -> Future[tuple[int, int]]:
    """(wait status, ru_maxrss) of the process once it has exited, waited for on a thread."""
    with _running_lock:
        _running.add(pid)
    exited: Future[tuple[int, int]] = Future()

    def reap() -> None:
        try:
            exited.set_result(wait())
        except BaseException as exc:
            exited.set_exception(exc)
        finally:
            with _running_lock:
                _running.discard(pid)

    threading.Thread(target=reap, daemon=True).start()
    return exited


def wait_for(
    pid: int, exited: Future[tuple[int, int]], watcher: Watcher, result_path: Path | None
) -> tuple[int, int] | None:
    """Wait for the process to exit: (status, ru_maxrss); with `result_path` (a held job),
    None as soon as that result is written and says ok (the process then waits on its FIFO)."""
    try:
        while True:
            try:
                return exited.result(timeout=None if result_path is None else POLL_SECONDS)
            except FutureTimeout:
                held = read_result(result_path) if result_path is not None else None
                if held is not None and held["ok"]:
                    return None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            exited.result()
        raise
    finally:
        watcher.stop()
        watcher.join()


def start_process(
    job_path: Path, log_path: Path, server: ForkServer | None
) -> tuple[int, Callable[[], tuple[int, int]], bool]:
    """Start the job's process: (pid, a wait returning (status, ru_maxrss), forked or not).
    Stopping once the run is stopped (stop_running)."""
    if _stopping.is_set():
        raise Stopping("the run is stopping")
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
    threads that wait for them then raise, and each job's scratch folder is removed); no job
    starts after it (start_process raises Stopping) until accept_jobs()."""
    _stopping.set()
    with _running_lock:
        pids = list(_running)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stopping() -> bool:
    """The run was stopped (stop_running): start nothing, publish nothing."""
    return _stopping.is_set()


def accept_jobs() -> None:
    """Jobs may start again: a program's next run after a stopped one (trtbuild.cli.main)."""
    _stopping.clear()


def worker_env() -> dict[str, str]:
    """The environment of every worker process (and of the fork server)."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "TRTBUILD_PARENT_PID": str(os.getpid())}


def _wait4(pid: int) -> tuple[int, int]:
    _, status, usage = os.wait4(pid, 0)
    return status, usage.ru_maxrss * 1024


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data
