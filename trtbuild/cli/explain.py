"""`trtbuild explain RECIPE`: per target and part, up to date or why it would be rebuilt."""

from __future__ import annotations

import argparse
from typing import Any

from trtbuild.cli.common import add_build_options, options


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("explain", help="say, per part, whether it is up to date and why not")
    add_build_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.orchestrate.explain import explain

    opts = options(args)
    for line in explain(args.recipe, opts):
        print(line)
    return 0
