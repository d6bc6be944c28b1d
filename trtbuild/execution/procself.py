"""This process as Linux shows it and ends it: /proc/self memory figures, the parent-death signal."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path


def own_peak_rss() -> int | None:
    """Peak RSS of this process's own address space (VmHWM), or None off Linux.

    Not getrusage: on Linux, ru_maxrss of a process started by fork + exec also counts the
    parent's resident memory at the fork, so a big orchestrator would inflate every worker.
    """
    return status_bytes("VmHWM")


def status_bytes(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A worker must not outlive the trtbuild process that watches its memory (kill -9 of it).

    Linux sends the signal when the thread that started us ends: the executor's thread waits
    for us until we exit, so that is the run itself. If the parent is already gone, stop now.
    """
    parent = int(os.environ.get("TRTBUILD_PARENT_PID", "0"))
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the check below still holds
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent and os.getppid() != parent:
        os._exit(1)
