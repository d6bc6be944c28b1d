"""`trtbuild keygen KEYFILE`: an Ed25519 key pair for signing release provenance."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "keygen", help="write an Ed25519 key (mode 0600) and KEYFILE.pub for `run --sign`"
    )
    parser.add_argument("keyfile", type=Path, help="where the private key goes")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.release.signing import keygen

    public = keygen(args.keyfile)
    print(f"wrote {args.keyfile} (private, mode 0600) and {public}", file=sys.stderr)
    return 0
