"""One trace per target: a graph job's process, kept once its result is written, exports the
target's parts from the program it traced (issue 28).

Two-trace path: the graph job traces the model on fake tensors and exits; the plan is made; a
new export process imports the model's code, runs its factory and traces it again. One-trace
path: the graph job's worker writes its result, then blocks on its `follow` FIFO; the
orchestrator plans and writes the path of the target's ExportJob there, and the same process
exports from its trace (partexport.prepare(trace=...)). The engines are the same bytes
(tests/test_onetrace.py); what is saved is the second import of the model's code, its factory
and its trace.

While it waits, the process is charged its resident bytes by the memory gate (gate.MemoryGate:
held), which releases it (SIGKILL) when another job needs the room: the export then runs as a
process of its own, tracing again. The FIFO is opened read-write by the orchestrator, so a worker
never blocks on opening it (it does so before it writes its result, so nothing sent is lost when
the orchestrator closes its end), and the orchestrator never blocks on writing one short line.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import shutil
import signal
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from trtbuild.execution.jobs import Job, from_json


def next_job(fifo: BinaryIO) -> tuple[Job, str] | None:
    """In the worker, its result written: the job that follows (and its result path), or None
    when the orchestrator closes the FIFO instead. The worker opened `fifo` before it wrote its
    result, so a line sent at once is never lost."""
    from trtbuild.model import exporter

    exporter.import_exporter()  # a plain process's registry while the run plans; forked: inherited
    gc.collect()
    gc.freeze()  # the trace lives on for the export: its collections need not walk it again
    with contextlib.suppress(OSError, AttributeError):  # freed pages back to the system
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with fifo:
        line = fifo.readline().strip()
    if not line:
        return None
    # The export's peak is its own: the high-water mark restarts at what is resident now.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return from_json(json.loads(Path(line.decode()).read_text()))


@dataclass(eq=False)
class Held:
    """A worker process waiting on its FIFO for the job that follows (the orchestrator's side).

    `exited` resolves to (wait status, ru_maxrss) when the process ends; `bytes` is what it
    holds while it waits (its private bytes when forked: the fork server's count once).
    """

    pid: int
    fifo: Path
    fd: int  # the orchestrator's read-write end of the FIFO
    exited: Future[tuple[int, int]]
    forked: bool
    bytes: int
    log: Path  # its stderr (the graph job's log); its folder is removed once it has exited
    why_not: str = ""  # set when it was released before its job came: the reason, for -v
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, job_path: Path) -> bool:
        """Hand over the next job; False when the process is gone (released, or it died)."""
        with self._lock:
            if self.fd >= 0 and self.exited.done():  # it died while it waited
                self.why_not = f"the graph job's process ended while it waited ({_end(self)})"
                self._close()
            if self.fd < 0:
                return False
            os.write(self.fd, f"{job_path}\n".encode())
            self._close()
            self.why_not = "the graph job's process ran an export of this target already"
            return True

    def release(self, why: str) -> None:
        """Kill the process if it still waits for a job (idle, it holds nothing of value), wait
        for its end and remove its scratch. Safe to call again, and after its job ran."""
        with self._lock:
            if self.fd >= 0:
                self.why_not = why
                self._close()
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.exited.result()
        shutil.rmtree(self.log.parent, ignore_errors=True)  # the graph job's scratch

    def _close(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self.fifo.unlink(missing_ok=True)


def _end(held: Held) -> str:
    """How the held process ended: "killed by SIGKILL", "exit status 1"."""
    try:
        code = os.waitstatus_to_exitcode(held.exited.result()[0])
    except Exception as exc:  # the fork server went away with it
        return str(exc)
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
