"""A fork server: import torch once per run, fork a fresh process for every torch job.

A graph or export job in a new interpreter pays `python` start-up and `import torch` (2-4 s on
this project's 2-core machines) before it does any work. The fork server (a "zygote", as
Android's or Chromium's) is one process that imports the worker side of trtbuild (torch, onnx,
the torch.export machinery) once; each job is a child forked from it: a fresh process, isolated as before (a crash
or leak stays in the child, which exits after its one job), watched and measured as before.

Protocol: JSON lines. The orchestrator writes `{"id", "job", "log", "cwd"}` to the server's stdin;
the server answers `{"id", "pid"}` once the child runs and `{"pid", "status"}` when it exits
(a pidfd per child: the server is single-threaded, which is what makes forking it safe), and
`{"rss_bytes"}` once ready, its ONNX exporter's registry built (which traces nothing: preload.py).
It runs no export of its own (a warm-up export was tried and changed the names a later graph
job's nodes got), so every child, in this run or a later one that reuses the server, traces from
the same state. The kernel kills the server when trtbuild dies (PR_SET_PDEATHSIG, set before its slow imports) and a
child when its server dies; a stopped server (stdin closed) kills its children and exits.

Memory: a child shares the server's pages copy-on-write. Its VmHWM counts those pages once, as a
fresh process would count its own `import torch`, so the figures and the memory model are the
same as with plain processes; the run's memory gate counts the server's pages once for all
children (see executor.MemoryGate). Model code is never imported here: what a model imports is
discovered per job (depfile) exactly as in a fresh worker.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from trtbuild.errors import TrtbuildError

EXPECTED_BYTES = 400 << 20


class Unavailable(TrtbuildError):
    """The server could not start or has died: the job can still run as a plain process."""


@dataclass
class _Session:
    """One started server: its process and the replies awaited from it."""

    proc: subprocess.Popen[bytes]
    stop: threading.Event  # set once the server has exited: its starting thread may end
    started: dict[int, Future[int]] = field(default_factory=dict)  # request id -> pid
    exited: dict[int, Future[int]] = field(default_factory=dict)  # pid -> wait status
    gone: bool = False


class ForkServer:
    """The orchestrator's handle on a fork server; thread-safe, (re)started on first use."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self._log_path, self._env = log_path, env
        self._session: _Session | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        # The server's own resident memory once it has imported everything (before it first
        # starts: what such a server usually takes, for the memory gate's arithmetic).
        self.rss_bytes = EXPECTED_BYTES

    @property
    def running(self) -> bool:
        return self._session is not None

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a run with this environment may use this server: every child gets its run's
        exact environment, but what the server imported may have read any variable but those
        read only while a job runs (PER_JOB)."""
        with self._lock:
            dead = self._session is not None and self._session.gone
        if dead:
            self.close()  # started again on first use
        return _fixed(env) == _fixed(self._env)

    def start(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            launched: Future[subprocess.Popen[bytes]] = Future()
            stop = threading.Event()
            threading.Thread(target=self._hold, args=(launched, stop), daemon=True).start()
            proc = launched.result()
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            if not ready:
                proc.wait()
                stop.set()
                raise Unavailable(f"the fork server did not start; see {self._log_path}")
            self.rss_bytes = json.loads(ready)["rss_bytes"]
            self._session = _Session(proc, stop)
            threading.Thread(target=self._read, args=(self._session,), daemon=True).start()

    def _hold(self, launched: Future[subprocess.Popen[bytes]], stop: threading.Event) -> None:
        """Start the server, then stay alive until it is stopped.

        The server dies with the thread that started it (PR_SET_PDEATHSIG, set first thing in
        serve()): this thread lives as long as the server is wanted, and no longer than trtbuild,
        so a killed run takes its server down at once, even while it is still importing torch.
        """
        try:
            with open(self._log_path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "trtbuild.execution.zygote"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=self._env,
                )
        except OSError as exc:
            launched.set_exception(Unavailable(f"the fork server did not start: {exc}"))
            return
        launched.set_result(proc)
        stop.wait()

    def spawn(self, job_path: Path, log_path: Path, env: dict[str, str]) -> int:
        """Fork a child that runs `python -m trtbuild.execution.worker JOB` as its one job, in the
        environment `env`; its pid."""
        self.start()
        started: Future[int] = Future()
        with self._lock:
            session = self._session
            if session is None or session.gone:
                raise Unavailable(f"the fork server has exited; see {self._log_path}")
            request_id, self._next_id = self._next_id, self._next_id + 1
            session.started[request_id] = started
            request = {
                "id": request_id,
                "job": str(job_path),
                "log": str(log_path),
                "cwd": os.getcwd(),
                "env": env,
            }
            try:
                assert session.proc.stdin is not None
                session.proc.stdin.write(json.dumps(request).encode() + b"\n")
                session.proc.stdin.flush()
            except OSError:
                raise Unavailable(f"the fork server has exited; see {self._log_path}") from None
        return started.result()

    def wait(self, pid: int) -> int:
        """The child's wait status, once it has exited."""
        with self._lock:
            session = self._session
            if session is None:
                raise Unavailable("the fork server was stopped")
            done = session.exited.setdefault(pid, Future())
            if session.gone and not done.done():
                done.set_exception(Unavailable(f"the fork server exited; see {self._log_path}"))
        status = done.result()
        with self._lock:
            session.exited.pop(pid, None)
        return status

    def _read(self, session: _Session) -> None:
        assert session.proc.stdout is not None
        for line in session.proc.stdout:
            message = json.loads(line)
            with self._lock:
                if "id" in message:
                    session.started.pop(message["id"]).set_result(message["pid"])
                else:
                    waiting = session.exited.setdefault(message["pid"], Future())
                    waiting.set_result(message["status"])
        with self._lock:  # the server is gone: nobody waits forever
            session.gone = True
            for future in [*session.started.values(), *session.exited.values()]:
                if not future.done():
                    future.set_exception(
                        Unavailable(f"the fork server exited; see {self._log_path}")
                    )

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            assert session.proc.stdin is not None
            with contextlib.suppress(OSError):
                session.proc.stdin.close()
            session.proc.wait()
            session.stop.set()
            if session.proc.returncode == 0:  # a clean exit: its log holds nothing to read
                self._log_path.unlink(missing_ok=True)


# Variables only trtbuild's jobs (and pytest) read, and only while a job runs: a server started
# under other values serves as well, so one process's runs with different caches share one server.
PER_JOB = ("TRTBUILD_", "PYTEST_CURRENT_TEST")


def _fixed(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(PER_JOB)}


_kept: ForkServer | None = None  # the last run's server, for the next run of this process
_kept_lock = threading.Lock()


def for_run(log_path: Path, env: dict[str, str]) -> ForkServer:
    """A server for a run: the one this process's last run left, if its environment is the same.

    One `trtbuild run` is one process, but a program (or a test session) that calls
    trtbuild.orchestrate.build() again and again would otherwise pay the server's imports every time. The
    server never runs model code and forks every job afresh, so a kept one serves a later run
    exactly as a new one would; a different environment (which the children inherit) gets a new
    server.
    """
    global _kept
    with _kept_lock:
        kept, _kept = _kept, None
    if kept is not None and kept.serves(env):
        return kept
    if kept is not None:
        kept.close()
    return ForkServer(log_path, env)


def keep(server: ForkServer) -> None:
    """The run is over: keep its server (idle, children all reaped) for the next run."""
    global _kept
    with _kept_lock:
        previous, _kept = _kept, server
    if previous is not None and previous is not server:
        previous.close()


@atexit.register
def _close_kept() -> None:
    with _kept_lock:
        if _kept is not None:
            _kept.close()
