"""`trtbuild plan`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("plan", help="plan")
    parser.add_argument("recipe")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise NotImplementedError
