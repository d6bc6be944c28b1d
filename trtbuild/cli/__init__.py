"""The `trtbuild` command: one exception boundary, thin subcommands over the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence

from trtbuild.errors import TrtbuildError, is_disk_full

EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPT = 0, 1, 3, 130


def _parser() -> argparse.ArgumentParser:
    from trtbuild.cli import cache, explain, plan, run, verify

    parser = argparse.ArgumentParser(prog="trtbuild", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (run, plan, explain, verify, cache):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="trtbuild: %(message)s", level=logging.WARNING)
    start = time.perf_counter()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except TrtbuildError as exc:
        print(f"trtbuild: error: {exc}", file=sys.stderr)
        _closing(args, False, start)
        return EXIT_USER
    except OSError as exc:
        if not is_disk_full(exc):
            return _internal()
        print(f"trtbuild: error: disk full: {exc.strerror} ({exc.filename}); the cache and earlier "
              "outputs are intact", file=sys.stderr)  # fmt: skip
        _closing(args, False, start)
        return EXIT_USER
    except KeyboardInterrupt:
        print(
            "trtbuild: interrupted; the cache and earlier build outputs are intact", file=sys.stderr
        )
        return EXIT_INTERRUPT
    except Exception:
        return _internal()


def _internal() -> int:
    """Exit 3 with a log a user can attach to a bug report."""
    fd, path = tempfile.mkstemp(prefix="trtbuild-crash-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"trtbuild {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
        tb_text = getattr(sys.exc_info()[1], "traceback_text", "")
        if tb_text:
            handle.write("\nworker traceback:\n" + tb_text)
    print(f"trtbuild: internal error: {sys.exc_info()[1]} (details in {path}; please attach it "
          "to a bug report)", file=sys.stderr)  # fmt: skip
    return EXIT_INTERNAL


def _closing(args: argparse.Namespace, ok: bool, start: float) -> None:
    if getattr(args, "json", False) or args.command not in ("run", "verify"):
        return
    print(f"{'PASSED' if ok else 'FAILED'} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
