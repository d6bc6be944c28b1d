"""`trtbuild deploy RECIPE --format triton --out DIR`: build what is missing, write a repository."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from trtbuild.cli.common import add_build_options, options
from trtbuild.cli.run import add_run_options, build_with_progress
from trtbuild.errors import TrtbuildError


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "deploy",
        help="build what is missing (as run does), then write a Triton model repository",
    )
    add_build_options(parser, out_flag="--build-dir")
    add_run_options(parser)
    parser.add_argument(
        "--format", choices=["triton"], default=None, help="repository format (default: triton)"
    )
    parser.add_argument(
        "--out",
        dest="repository",
        type=Path,
        default=None,
        help="the model repository folder (default: the recipe's [deploy] out)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="instance_group count of every part model (default: [deploy] instances, or 1)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from trtbuild.deploy import triton
    from trtbuild.orchestrate.planning import open_store
    from trtbuild.recipe.load import load_recipe

    start = time.perf_counter()
    recipe = load_recipe(args.recipe)
    spec = recipe.schema.deploy
    repository = args.repository or (recipe.resolve(spec.out) if spec.out else None)
    if repository is None:
        raise TrtbuildError(
            f"{recipe.path}: no repository folder: pass --out DIR or set out in [deploy]"
        )
    instances = args.instances or spec.instances
    if instances < 1:
        raise TrtbuildError(f"--instances: expected a number >= 1, got {instances}")
    console = Console(stderr=True)
    result = build_with_progress(args, console)
    store = open_store(options(args), recipe)
    models = triton.deploy(recipe, store, repository, instances)
    if result.up_to_date:
        console.print("engines up to date")
    for model in models:
        console.print(f"  {repository / model.name}: {_kind(model)}")
    print(
        f"{len(models)} Triton models in {repository} ({time.perf_counter() - start:.1f}s)",
        file=sys.stderr,
    )
    return 0


def _kind(model: Any) -> str:
    if model.platform == "ensemble":
        return "ensemble"
    return f"{model.platform}, {len(model.files)} file{'s' * (len(model.files) != 1)}"
