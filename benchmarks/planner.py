"""Planner benchmark: trtbuild vs Torch-TensorRT's greedy rule vs the exact optimum.

    python benchmarks/planner.py            # the table in the README
    python benchmarks/planner.py --quick    # real models only
    python benchmarks/planner.py --prove-seconds 600   # time to prove each plan (default: run's)

For each model, at budgets that leave room for 3/4 and 1/3 of its weights per engine (a memory
model of weights only, so the budget is the weight cap): engines and bytes crossing engine boundaries for the greedy rule
(feasible variant; "!" marks the Torch-TensorRT variant breaking the budget), trtbuild, and the
MILP optimum where the coarsened graph is small enough; then planning time on synthetic DAGs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.greedy import greedy_parts
from benchmarks.oracle import optimum
from trtbuild.orchestrate.build import Options
from trtbuild.orchestrate.planning import plan_targets
from trtbuild.planner import Problem, coarsen, plan, problem_of, solve
from trtbuild.planner.bound import lower_bound
from trtbuild.planner.memory import MemoryModel, Stage
from trtbuild.planner.plan import PROVE_SECONDS
from trtbuild.recipe.sizes import format_size

WEIGHTS_ONLY = MemoryModel(Stage(0, 1.0), Stage(0, 1.0), "weights only: the budget is the cap")

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MODELS = [
    ("seed_net.toml", "seed_net"),
    ("resnet.toml", "resnet50"),
    ("gpt2.toml", "gpt2_small"),
    ("unet.toml", "unet"),
    ("bert.toml", "bert_base"),
    ("llama.toml", "llama_1b"),
]
ORACLE_MAX_NODES = 30


def real_models(prove_seconds: float) -> list[str]:
    rows = []
    for recipe, model in MODELS:
        (planned,) = plan_targets(RECIPES / recipe, Options(backend="onnxruntime"), model, "fp32")
        graph = planned.graph
        problem = problem_of(graph, coarsen(graph))
        total = problem.weight_of(range(problem.n))
        for fraction in (3 / 4, 1 / 3):
            cap = max(int(total * fraction), max(problem.weight_of([v]) for v in range(problem.n)))
            budget = cap
            start = time.perf_counter()
            ours = plan(graph, budget, WEIGHTS_ONLY, prove_seconds=0)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            proven = plan(graph, budget, WEIGHTS_ONLY, prove_seconds=prove_seconds)
            proving = time.perf_counter() - start
            greedy = greedy_parts(problem, cap, overshoot=False)
            torch_trt = greedy_parts(problem, cap, overshoot=True)
            overshoot = "!" if any(problem.weight_of(p) > cap for p in torch_trt) else ""
            best = optimum(problem, cap) if problem.n <= ORACLE_MAX_NODES else None
            rows.append(
                f"| {model} | {graph.ops.__len__()} / {problem.n} | {format_size(budget)} | "
                f"{len(greedy)}: {problem.cost(greedy):,} | {len(torch_trt)}{overshoot}: {problem.cost(torch_trt):,} | "
                f"{len(ours.parts)}: {ours.boundary_bytes:,} | {'n/a' if best is None else f'{best:,}'} | "
                f"{proven.lower_bound_bytes:,} | {gap(proven.optimality_gap)} | {seconds:.2f} | "
                f"{proving:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def gap(share: float) -> str:
    return "0 (optimal)" if share == 0 else f"{share:.1%}"


def synthetic(n: int, seed: int = 0) -> tuple[Problem, int]:
    """A layered DAG with skip connections, like a deep network with residual branches."""
    rng = random.Random(seed)
    edges: set[tuple[int, int]] = set()
    for v in range(1, n):
        edges.add((v - 1, v))
        if rng.random() < 0.3:
            edges.add((max(0, v - rng.randint(2, 12)), v))
    consumers: dict[int, set[int]] = {}
    for u, v in edges:
        consumers.setdefault(u, set()).add(v)
    producers = sorted(consumers)
    problem = Problem(
        n,
        sorted(edges),
        [frozenset([v]) for v in range(n)],
        [rng.randint(1, 1000) for _ in range(n)],
        producers,
        [rng.randint(1, 10_000) for _ in producers],
        [frozenset(consumers[p]) for p in producers],
    )
    return problem, problem.weight_of(range(n)) // 8


def synthetic_rows(prove_seconds: float) -> list[str]:
    rows = []
    for n in (1_000, 10_000, 100_000):
        problem, cap = synthetic(n)
        start = time.perf_counter()
        solution = solve(problem, cap)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        bound = lower_bound(problem, cap, prove_seconds)
        proving = time.perf_counter() - start
        greedy = greedy_parts(problem, cap, overshoot=False)
        share = (solution.cost - bound.lower_bytes) / solution.cost if solution.cost else 0.0
        rows.append(
            f"| synthetic | {n:,} | 1/8 of weights | {len(greedy)}: {problem.cost(greedy):,} | | "
            f"{len(solution.parts)}: {solution.cost:,} ({solution.method}) | | "
            f"{bound.lower_bytes:,} ({bound.method}) | {gap(share)} | {seconds:.2f} | {proving:.1f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="real models only")
    parser.add_argument(
        "--prove-seconds", type=float, default=PROVE_SECONDS, help="time to prove each plan"
    )
    args = parser.parse_args()
    print(
        "| model | ops / groups | budget | greedy: bytes | Torch-TRT rule: bytes | trtbuild: bytes "
        "| optimum | lower bound | gap | plan s | prove s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    real_models(args.prove_seconds)
    if not args.quick:
        synthetic_rows(args.prove_seconds)


if __name__ == "__main__":
    main()
