"""`trtbuild report build/<recipe>`: the build as one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "report",
        help="write build/<recipe>/report.html: partition, memory over time, cache hits",
    )
    parser.add_argument("folder", type=Path, help="a recipe's output folder, e.g. build/resnet")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.deploy.report import write_report

    print(write_report(args.folder))
    return 0


def report_after_run(recipe: str, out: Path) -> Path:
    """`run --report`: the report of the recipe's output folder, up to date or just built."""
    from trtbuild.deploy.report import write_report
    from trtbuild.recipe.load import load_recipe

    return write_report(out / load_recipe(recipe).name)
