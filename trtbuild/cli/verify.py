"""`trtbuild verify PROVENANCE`: rebuild in an empty cache and compare every artifact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "verify", help="rebuild from scratch and compare with a provenance.json"
    )
    parser.add_argument(
        "provenance", help="build/<recipe>/provenance.json, or provenance.dsse.json if signed"
    )
    parser.add_argument(
        "--public-key", type=Path, help="check a signed envelope's signature first (KEYFILE.pub)"
    )
    parser.add_argument(
        "--no-rebuild", action="store_true", help="check the signature and published files only"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.orchestrate.verify import verify

    checks = verify(
        args.provenance,
        report=lambda m: print(m, file=sys.stderr),
        public_key=args.public_key,
        rebuild=not args.no_rebuild,
    )
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
