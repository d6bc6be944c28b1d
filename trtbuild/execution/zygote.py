"""The fork server's own process (`python -m trtbuild.execution.zygote`): imports the worker side of
trtbuild once, then forks one child per job request and reports its pid and exit status.
The protocol and the client are in trtbuild.execution.forkserver."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
from typing import Any

from trtbuild.errors import is_disk_full
from trtbuild.execution.preload import preload


def _child(request: dict[str, Any], server_pid: int) -> None:
    """In the forked child: become a worker process for one job, then exit."""
    code = 3
    try:
        os.environ.clear()  # the run's environment, as a fresh worker process would have it
        os.environ.update(request["env"])
        os.environ["TRTBUILD_PARENT_PID"] = str(server_pid)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        os.chdir(request["cwd"])
        from trtbuild.execution import worker

        code = worker.main([request["job"]])
    except BaseException as exc:  # a child must never return into the server's loop
        import traceback

        code = (exc.errno or code) if is_disk_full(exc) else code  # executor.run_job
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _reply(fd: int, message: dict[str, Any]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def serve() -> None:
    from trtbuild.execution.procself import die_with_parent, status_bytes

    die_with_parent()  # before the imports: a run killed while they take seconds takes us down
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the orchestrator's to handle
    # The protocol gets its own descriptors: whatever an import prints goes to the log.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    preload(registry=True)  # before the first fork: every child inherits it (preload.py)
    server_pid = os.getpid()
    _reply(replies, {"rss_bytes": status_bytes("VmRSS")})
    children: dict[int, int] = {}  # pidfd -> pid
    pending = b""
    while True:
        readable, _, _ = select.select([requests, *children], [], [])
        for fd in readable:
            if fd != requests:
                pid = children.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _reply(replies, {"pid": pid, "status": status})
                continue
            chunk = os.read(requests, 65536)
            if not chunk:  # the orchestrator is gone: so are its jobs
                for pid in children.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                # At once: an interpreter that imported torch takes 1.1 s to tear down (measured),
                # and a run that stops its server to make room for a job waits for that.
                sys.stderr.flush()
                os._exit(0)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    for fd_ in (requests, replies, *children):
                        os.close(fd_)
                    _child(request, server_pid)
                children[os.pidfd_open(pid)] = pid
                _reply(replies, {"id": request["id"], "pid": pid})


if __name__ == "__main__":
    serve()
