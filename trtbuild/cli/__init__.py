"""The `trtbuild` command: one exception boundary, thin subcommands over the library.

May import: everything; nothing imports it but trtbuild.__main__.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from trtbuild.errors import Terminated, TrtbuildError, disk_full, is_disk_full

EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPT = 0, 1, 3, 130  # and 128 + N on signal N


EXAMPLES = """examples:
  trtbuild run recipes/resnet.toml                 build every target (cached parts are reused)
  trtbuild plan recipes/resnet.toml --budget 1GiB  show the partition, build nothing
  trtbuild explain recipes/resnet.toml             say why each part would be (re)built
  trtbuild verify build/resnet/provenance.json     check published files and a clean rebuild
  trtbuild deploy recipes/resnet.toml --out repo  a Triton model repository of the engines
  trtbuild report build/resnet                      build/resnet/report.html: partition, memory, cache
  trtbuild keygen release.key                      a key pair for `run --release --sign release.key`
"""


class _Version(argparse.Action):
    """--version: trtbuild's version and the toolchain it found (package metadata, no import)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def found(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    tools = ", ".join(f"{name} {found(name)}" for name in ("torch", "onnxruntime", "tensorrt"))
    return f"trtbuild {found('trtbuild')} (python {sys.version.split()[0]}; {tools})"


COMMANDS = ("run", "plan", "explain", "verify", "deploy", "report", "cache", "keygen")


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line; only the named command's module is imported when `argv` names one (a
    no-op `run` is timed against `import torch`: benchmarks/noop.py), else all of them."""
    import importlib

    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    named = words[0] if words and words[0] in COMMANDS else None
    modules = [
        importlib.import_module(f"trtbuild.cli.{c}") for c in ([named] if named else COMMANDS)
    ]
    parser = argparse.ArgumentParser(
        prog="trtbuild",
        epilog=EXAMPLES,
        description="Memory-bounded, incremental, reproducible builds of inference engines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show versions and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # `trtbuild` alone: what it does and how to start
        parser.print_help()
        return EXIT_OK
    previous = _on_termination()
    if args.command != "run":  # run: once it is not a no-op (cli/run.py)
        configure_logging()
    try:
        code: int = args.handler(args)
        return code
    except TrtbuildError as exc:
        print(f"trtbuild: error: {exc}", file=sys.stderr)
        _json_error(args, str(exc), EXIT_USER)
        _closing(args, False, start)
        return EXIT_USER
    except OSError as exc:
        if not is_disk_full(exc):
            return _internal()
        message = str(disk_full(exc.filename or "a file trtbuild was writing", exc))
        print(f"trtbuild: error: {message}", file=sys.stderr)
        _json_error(args, message, EXIT_USER)
        _closing(args, False, start)
        return EXIT_USER
    except KeyboardInterrupt as exc:
        what = f"terminated ({exc})" if isinstance(exc, Terminated) else "interrupted"
        print(
            f"trtbuild: {what}; build processes stopped, the cache and earlier build outputs are "
            "intact",
            file=sys.stderr,
        )
        return 128 + exc.signum if isinstance(exc, Terminated) else EXIT_INTERRUPT
    except Exception:
        return _internal()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        processes = sys.modules.get("trtbuild.execution.process")
        if processes is not None:  # a program's next run (tests, a notebook) starts jobs again
            processes.accept_jobs()


def configure_logging() -> None:
    """Library warnings as one `trtbuild: ...` line each."""
    import logging

    logging.basicConfig(format="trtbuild: %(message)s", level=logging.WARNING)


TERMINATING = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def _on_termination() -> dict[int, Any]:
    """SIGTERM, SIGHUP and SIGINT stop the build; returns the handlers they had.

    Ctrl-C reaches the whole process group, so the job processes die with it; a signal sent to
    this process alone (`timeout`, a CI runner, a supervisor's SIGINT) does not, so the handler
    stops them first: their threads' waits return, the threads raise, and every scratch folder is
    removed on the way out. SIGINT is then a KeyboardInterrupt, as Python makes it.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def terminate(signum: int, frame: Any) -> None:
        processes = sys.modules.get("trtbuild.execution.process")
        if processes is not None:
            processes.stop_running()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    return {signum: signal.signal(signum, terminate) for signum in TERMINATING}


def _json_error(args: argparse.Namespace, message: str, code: int) -> None:
    """With --json, a failure is a JSON object on stdout too: scripts read one stream."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message, "exit_code": code}))


def _internal() -> int:
    """Exit 3 with a log a user can attach to a bug report."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="trtbuild-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"trtbuild {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        tb_text = getattr(sys.exc_info()[1], "traceback_text", "")
        if tb_text:
            handle.write("\nworker traceback:\n" + tb_text)
    print(
        f"trtbuild: internal error: {sys.exc_info()[1]} (details in {path}; please attach it "
        "to a bug report)",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def _closing(args: argparse.Namespace, ok: bool, start: float) -> None:
    if getattr(args, "json", False) or args.command not in ("run", "verify"):
        return
    print(f"{'PASSED' if ok else 'FAILED'} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
