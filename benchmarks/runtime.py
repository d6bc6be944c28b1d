"""Latency of chained engines, and of quantized engines (ONNX Runtime).

    python benchmarks/runtime.py [--runs 50] [--tables split,quant]

split: ResNet-50 forced into 1, 2 and 4 parts by budget (the largest budget whose plan has at
least that many parts, found by planning; more parts where one MiB less jumps past it), against
eager PyTorch, built without the accuracy check (its reference does not fit those budgets);
goal: 4 parts within 5% of 1 part.

quant: per model (ResNet-50 from recipes/resnet.toml; a random-init `transformers` GPT-2), one
row per precision fp32, int8, int4, each built as one engine (a 64 GiB budget): median latency,
engine bytes (the engine files of the published target folder, not its .json records), both
against fp32, and the check's worst rel_l2. int8 is calibrated on `data = "random"` (seeded random
inputs, 16 samples). ResNet-50's only MatMul weight is its fc head: its int4 row is the convolutions
at fp32 and that head at int4.

Each table is built in a temporary folder and cache. Median over --runs calls after 5 warm-ups.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trtbuild
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.planning import plan_targets
from trtbuild.recipe.checkspec import DEFAULT_REL_L2
from trtbuild.recipe.load import load_recipe

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
PRECISIONS = '["fp32", "int8", "int4"]'
CALIBRATION = '[model.calibration]\ndata = "random"\nsamples = 16\n'
# Every target is published whatever its error (the table says whether it is within the default
# tolerance of its precision, trtbuild.recipe.checkspec.DEFAULT_REL_L2): its latency is measured.
LOOSE = 0.5
GPT2 = {  # 4 x 512 wide, 8192 tokens: 29 MiB of MatMul weights, a 16 MiB embedding (tied)
    "n_layer": 4,
    "n_embd": 512,
    "n_head": 8,
    "vocab_size": 8192,
    "n_positions": 128,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
TOKENS = 32


def budget_for(recipe: Path, parts: int, cache: Path) -> tuple[int, int]:
    """The largest budget, in MiB, whose plan has at least `parts` parts, and its parts (more
    than `parts` where one MiB less jumps past it). Bisection: a larger budget never has more
    parts; the smallest feasible budget has the most."""

    def count(mib: int) -> int:
        (planned,) = plan_targets(
            recipe,
            Options(backend="onnxruntime", budget=mib * MiB, cache=cache),
            "resnet50",
            "fp32",
        )
        return len(planned.plan.parts)

    (whole,) = plan_targets(recipe, Options(backend="onnxruntime", budget=64 << 30, cache=cache))
    low, high = -(-whole.plan.min_feasible_budget_bytes // MiB), 2048
    if count(high) >= parts:
        return high * MiB, count(high)
    if count(low) < parts:
        raise SystemExit(f"no budget gives {parts} parts (at most {count(low)} at {low} MiB)")
    while high - low > 1:  # count(low) >= parts > count(high)
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) >= parts else (low, mid)
    return low * MiB, count(low)


def median_ms(fn: Any, x: torch.Tensor, runs: int) -> float:
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def engine_bytes(folder: Path) -> int:
    """Every file of a target's engines (the graphs and their weights), not its JSON records."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix != ".json")


def split_table(work: Path, runs: int) -> None:
    recipe = work / "recipes/resnet.toml"
    recipe.write_text(recipe.read_text().replace('["fp32", "fp16"]', '["fp32"]'))
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    spec = load_recipe(recipe).schema.model[0]
    eager = eager_model(load_recipe(recipe), spec, "fp32")
    with torch.no_grad():
        eager_ms = median_ms(eager, x, runs)
    rows = []
    for wanted in (1, 2, 4):
        budget, parts = budget_for(recipe, wanted, work / "cache")
        (target,) = build(
            recipe,
            Options(
                backend="onnxruntime",
                budget=budget,
                out=work / f"build{wanted}",
                cache=work / "cache",
                write_lock=False,
                # at the largest budget of 4 parts the export process, which also computes the
                # check's reference, crossed it (2026-11-30): this table measures latency only
                check=False,
            ),
        ).targets
        engine = trtbuild.load(target.dir)
        assert len(target.plan.parts) == parts, (budget, parts, len(target.plan.parts))
        rows.append((parts, budget, target.plan.boundary_bytes, median_ms(engine, x, runs)))
    single = rows[0][3]
    print(
        f"| parts | budget | boundary bytes | median ms | vs 1 part | vs eager ({eager_ms:.1f} ms) |"
    )
    print("|---|---|---|---|---|---|")
    for parts, budget, boundary, ms in rows:
        print(
            f"| {parts} | {budget / MiB:.0f} MiB | {boundary:,} | {ms:.1f} | {ms / single:.3f} | "
            f"{ms / eager_ms:.2f} |",
            flush=True,
        )


def gpt2_recipe(folder: Path) -> Path:
    import tomli_w

    model = {
        "name": "gpt2",
        "source": "transformers:GPT2LMHeadModel",
        "outputs": ["logits"],
        "config": GPT2,
        "weights": {"init": "random", "seed": 0},
        "inputs": [
            {
                "name": "input_ids",
                "shape": [1, TOKENS],
                "dtype": "int64",
                "values": [0, GPT2["vocab_size"]],
            }
        ],
        "calibration": {"data": "random", "samples": 16},
        "check": {"rel_l2": LOOSE},
    }
    recipe = {
        "recipe": {"name": "gpt"},
        "defaults": {"backend": "onnxruntime", "precisions": ["fp32", "int8", "int4"]},
        "model": [model],
    }
    path = folder / "gpt.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


def quant_table(work: Path, runs: int) -> None:
    resnet = work / "recipes/resnet.toml"
    text = resnet.read_text().replace('["fp32", "fp16"]', PRECISIONS)
    resnet.write_text(text + CALIBRATION + f"[model.check]\nrel_l2 = {LOOSE}\n")
    torch.manual_seed(0)
    models = [
        (resnet, torch.randn(1, 3, 224, 224)),
        (gpt2_recipe(work / "recipes"), torch.randint(0, GPT2["vocab_size"], (1, TOKENS))),
    ]
    print(
        "| model | precision | median ms | vs fp32 | engine bytes | vs fp32 | worst rel_l2 "
        "| default tolerance |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for recipe, x in models:
        result = build(
            recipe,
            Options(
                backend="onnxruntime",
                budget=64 << 30,
                out=work / "quant",
                cache=work / "cache",
                write_lock=False,
            ),
        )
        base_ms = base_bytes = 0.0
        for t in result.targets:
            assert len(t.parts) == 1, f"{t.model}/{t.precision}: {len(t.parts)} engines"
            assert t.check and not t.failed, f"{t.model}/{t.precision}: {t.failed}"
            rel, allowed = t.check["worst_rel_l2"], DEFAULT_REL_L2[t.precision]
            ms, size = median_ms(trtbuild.load(t.dir), x, runs), engine_bytes(t.dir)
            if t.precision == "fp32":
                base_ms, base_bytes = ms, size
            print(
                f"| {t.model} | {t.precision} | {ms:.2f} | {ms / base_ms:.2f} | {size:,} | "
                f"{size / base_bytes:.3f} | {rel:.2e} | {allowed:g}"
                f"{'' if rel <= allowed else ' (outside)'} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--tables", default="split,quant", help="comma-separated: split, quant (default both)"
    )
    args = parser.parse_args()
    tables = {"split": split_table, "quant": quant_table}
    chosen = args.tables.split(",")
    if unknown := set(chosen) - set(tables):
        parser.error(f"--tables: unknown {sorted(unknown)}; expected split, quant")
    for name in chosen:
        work = Path(tempfile.mkdtemp(prefix="trtbuild-runtime-"))
        try:
            shutil.copytree(
                REPO / "recipes", work / "recipes", ignore=shutil.ignore_patterns("*.lock")
            )
            tables[name](work, args.runs)
            print()
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
