"""Latency of chained engines: ResNet-50 forced into 1, 2 and 4 parts by budget (ONNX Runtime).

    python benchmarks/runtime.py [--runs 50]

Each split is built in a temporary folder and cache; the budgets are found by planning (the
largest budget that still gives that many parts). Median over --runs calls after 5 warm-ups, in
the same run as eager PyTorch; goal: 4 parts within 5% of 1 part.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trtbuild
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.planning import plan_targets
from trtbuild.recipe.load import load_recipe

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def budget_for(recipe: Path, parts: int, cache: Path) -> int:
    """The largest budget, in MiB steps, whose plan has exactly `parts` parts."""
    for mib in range(2048, 300, -2):
        try:
            (planned,) = plan_targets(
                recipe,
                Options(backend="onnxruntime", budget=mib * MiB, cache=cache),
                "resnet50",
                "fp32",
            )
        except trtbuild.TrtbuildError:
            break
        if len(planned.plan.parts) == parts:
            return mib * MiB
    raise SystemExit(f"no budget gives {parts} parts")


def median_ms(fn: object, x: torch.Tensor, runs: int) -> float:
    for _ in range(5):
        fn(x)  # type: ignore[operator]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-runtime-"))
    try:
        shutil.copytree(REPO / "recipes", work / "recipes", ignore=shutil.ignore_patterns("*.lock"))
        text = (work / "recipes/resnet.toml").read_text().replace('["fp32", "fp16"]', '["fp32"]')
        recipe = work / "recipes/resnet.toml"
        recipe.write_text(text)
        torch.manual_seed(0)
        x = torch.randn(1, 3, 224, 224)
        spec = load_recipe(recipe).schema.model[0]
        eager = eager_model(load_recipe(recipe), spec, "fp32")
        with torch.no_grad():
            eager_ms = median_ms(eager, x, args.runs)
        rows = []
        for parts in (1, 2, 4):
            budget = budget_for(recipe, parts, work / "cache")
            out = work / f"build{parts}"
            (target,) = build(
                recipe,
                Options(
                    backend="onnxruntime",
                    budget=budget,
                    out=out,
                    cache=work / "cache",
                    write_lock=False,
                ),
            ).targets
            engine = trtbuild.load(target.dir)
            rows.append(
                (parts, budget, target.plan.boundary_bytes, median_ms(engine, x, args.runs))
            )
        single = rows[0][3]
        print(
            f"| parts | budget | boundary bytes | median ms | vs 1 part | vs eager ({eager_ms:.1f} ms) |"
        )
        print("|---|---|---|---|---|---|")
        for parts, budget, boundary, ms in rows:
            print(
                f"| {parts} | {budget / MiB:.0f} MiB | {boundary:,} | {ms:.1f} | {ms / single:.3f} | {ms / eager_ms:.2f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
