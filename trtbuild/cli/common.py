"""Options shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.sizes import parse_size

if TYPE_CHECKING:
    from trtbuild.orchestrate.build import Options


def size_arg(text: str, flag: str = "--budget") -> int:
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except ValueError as exc:
        raise TrtbuildError(f"{flag}: {exc}") from None


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
        default=None,
        help="output root of the build (default: build/ at the project root, the nearest "
        "folder up holding .git, else here)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache directory (default: $TRTBUILD_CACHE, else cache/ at the project root)",
    )
    parser.add_argument(
        "--remote-cache",
        metavar="URL",
        default=None,
        help="shared cache behind the local one, Bazel's HTTP protocol (default: "
        "$TRTBUILD_REMOTE_CACHE, else the recipe's [cache] remote)",
    )


def options(args: argparse.Namespace, **more: Any) -> Options:
    """The library's Options from the arguments add_build_options defined, and `more`."""
    from trtbuild.orchestrate.build import Options

    opts = Options(
        backend=args.backend, budget=budget(args), out=out_dir(args), cache=args.cache, **more
    )
    if args.remote_cache:
        opts.remote_cache = args.remote_cache
    return opts


def out_dir(args: argparse.Namespace) -> Path:
    """--out, else build/ at the project root (trtbuild.cache.layout.project_root)."""
    from trtbuild.cache.layout import project_root

    return args.out if args.out is not None else project_root() / "build"


def budget(args: argparse.Namespace) -> int | None:
    return size_arg(args.budget) if args.budget else None
