"""`trtbuild verify PROVENANCE`: rebuild in an empty cache and compare every artifact."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "verify", help="rebuild from scratch and compare with a provenance.json"
    )
    parser.add_argument("provenance", help="build/<recipe>/provenance.json")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.verify import verify

    checks = verify(args.provenance, report=lambda m: print(m, file=sys.stderr))
    for check in checks:
        print(check.describe())
    failed = [c for c in checks if not c.ok]
    if failed:
        print(
            f"trtbuild: error: {len(failed)} of {len(checks)} artifacts do not verify",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(checks)} artifacts verify", file=sys.stderr)
    return 0
