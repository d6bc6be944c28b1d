"""Options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from trtbuild.errors import TrtbuildError
from trtbuild.sizes import parse_size


def size_arg(text: str) -> int:
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise TrtbuildError(f"--budget: {exc}") from None


def add_build_options(parser: argparse.ArgumentParser, out_flag: str = "--out") -> None:
    """The recipe and what overrides it; `out_flag` names the output root's option ("--out",
    or "--build-dir" where --out means something else)."""
    parser.add_argument("recipe", help="the recipe TOML file")
    parser.add_argument(
        "--backend",
        choices=["auto", "onnxruntime", "tensorrt"],
        help="override the recipe's backend",
    )
    parser.add_argument(
        "--budget", type=str, help="host-memory budget, e.g. 2GiB (overrides the recipe)"
    )
    parser.add_argument(
        out_flag,
        dest="out",
        type=Path,
        default=Path("build"),
        help="output root of the build (default: build)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache directory (default: $TRTBUILD_CACHE or ./cache)",
    )


def budget(args: argparse.Namespace) -> int | None:
    return size_arg(args.budget) if args.budget else None
