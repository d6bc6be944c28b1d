"""`trtbuild plan RECIPE`: show how each target would be split into engines; build nothing."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from trtbuild.cli.common import add_build_options, options, out_dir
from trtbuild.cli.plandot import as_dot, to_svg
from trtbuild.model.interface import interface_notes
from trtbuild.recipe.sizes import format_size

if TYPE_CHECKING:
    from trtbuild.orchestrate.disk import DiskNeed
    from trtbuild.planner import Part, PartTensor, Plan


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("plan", help="show the partition plan of each target; build nothing")
    add_build_options(parser)
    parser.add_argument("--model", help="only this model")
    parser.add_argument("--precision", help="only this precision")
    parser.add_argument("--format", choices=["text", "json", "dot", "svg"], default="text")
    parser.add_argument(
        "--prove-seconds",
        type=float,
        default=None,
        help="time to prove a lower bound on boundary bytes when the plan is not exact "
        "(default 2; 0: no proof)",
    )
    parser.add_argument(
        "--trtexec",
        action="store_true",
        help="print the equivalent trtexec command line for each part",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.orchestrate.planning import plan_targets

    opts = options(args)
    if args.prove_seconds is not None:
        opts.prove_seconds = args.prove_seconds
    planned = plan_targets(args.recipe, opts, args.model, args.precision)
    for p in planned:
        for note in interface_notes(p.target.name, p.target.model.name, p.job.graph):
            print(note, file=sys.stderr)
    if args.trtexec:
        print("\n".join(trtexec_lines(args, planned)))
        return 0
    if args.format == "json":
        needs = disk_needs(args, planned)
        targets = [
            {
                **as_json(p.target, p.backend, p.plan),
                "check_predicted_peak_bytes": p.check_peak_bytes,
                "state_predicted_peak_bytes": p.state_peak_bytes,
                "disk": need.to_json(),
            }
            for p, need in zip(planned, needs)
        ]
        print(json.dumps({"targets": targets}, indent=2))
    elif args.format == "text":
        needs = disk_needs(args, planned)
        texts = [
            as_text(p.target.name, p.backend, p.plan, p.check_peak_bytes, p.state_peak_bytes)
            for p in planned
        ]
        print("\n".join(f"{text}   {need.text()}\n" for text, need in zip(texts, needs)))
        print(disk_total(needs))
    else:
        dot = as_dot(planned)
        print(dot if args.format == "dot" else to_svg(dot))
    return 0


def disk_needs(args: argparse.Namespace, planned: list[Any]) -> list[DiskNeed]:
    """Each target's disk estimate (trtbuild.orchestrate.disk), as `run` would check it."""
    from trtbuild.orchestrate.disk import target_need
    from trtbuild.orchestrate.planning import open_store
    from trtbuild.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    opts = options(args)
    store = open_store(opts, recipe)
    return [
        target_need(
            recipe,
            p.target,
            p.graph,
            p.job,
            p.plan,
            p.backend,
            store,
            opts.out,
        )
        for p in planned
    ]


def disk_total(needs: list[DiskNeed]) -> str:
    """One line: what every target together needs on each filesystem, and what is free there."""
    from functools import reduce
    from pathlib import Path

    from trtbuild.orchestrate.disk import free_bytes

    total = reduce(lambda a, b: a + b, needs)
    return "disk, all targets: " + "; ".join(
        f"about {format_size(size)} on {folder} ({format_size(free_bytes(Path(folder)))} free)"
        for folder, size in total.by_filesystem().items()
    )


def trtexec_lines(args: argparse.Namespace, planned: list[Any]) -> list[str]:
    """Write each part's ONNX and return the trtexec commands that build it as trtbuild would."""
    from trtbuild.backends.tensorrt import trt_version
    from trtbuild.deploy import trtexec
    from trtbuild.orchestrate.planning import open_store
    from trtbuild.recipe.load import load_recipe

    recipe = load_recipe(args.recipe)
    store = open_store(options(args), recipe)
    major = int((trt_version() or "10").split(".")[0])
    lines = [f"# TensorRT {major}.x; each part's ONNX is what trtbuild exports for that part"]
    for p in planned:
        folder = trtexec.folder_of(out_dir(args), recipe, p)
        trtexec.write_onnx(recipe, p, store, folder)
        lines += trtexec.commands(recipe, p, folder, major)
    return lines


def as_json(target: Any, backend: str, plan: Plan) -> dict[str, Any]:
    return {
        "model": target.model.name,
        "precision": target.precision,
        "backend": backend,
        "budget_bytes": plan.budget_bytes,
        "boundary_bytes": plan.boundary_bytes,
        "lower_bound_bytes": plan.lower_bound_bytes,
        "optimality_gap": round(plan.optimality_gap, 6),
        "bound_method": plan.bound_method,
        "min_feasible_budget_bytes": plan.min_feasible_budget_bytes,
        "method": plan.method,
        "memory_model": plan.memory_source,
        "parts": [
            {
                "index": p.index,
                "ops": p.ops,
                "weight_bytes": p.weight_bytes,
                "predicted_peak_bytes": p.predicted_peak_bytes,
                "inputs": [asdict(t) for t in p.inputs],
                "outputs": [asdict(t) for t in p.outputs],
            }
            for p in plan.parts
        ],
    }


def _tensors(tensors: list[PartTensor]) -> str:
    return (
        "List["
        + ", ".join(f"Tensor: ({', '.join(map(str, t.shape))})@{t.dtype}" for t in tensors)
        + "]"
    )


def as_text(
    name: str,
    backend: str,
    plan: Plan,
    check_peak: int | None = None,
    state_peak: int | None = None,
) -> str:
    """The layout of Torch-TensorRT's "Graph Structure" printout, plus what trtbuild adds;
    `check_peak`: the export process's predicted peak with the check's reference; `state_peak`:
    the state job's (a model without `weights`, its factory's own state not yet cached)."""
    smallest = max(plan.min_feasible_budget_bytes, state_peak or 0)
    inputs = [t for p in plan.parts for t in p.inputs if t.from_part is None]
    outputs = [t for p in plan.parts for t in p.outputs if t.name in plan.model_outputs]
    lines = [
        f"{name} ({backend}, budget {format_size(plan.budget_bytes)})",
        "",
        "Graph Structure:",
        "",
        f"   Inputs: {_tensors(inputs)}",
        "    ...",
    ]
    for part in plan.parts:
        lines += _part_text(part)
    counts = [len(p.ops) for p in plan.parts]
    lines += [
        f"   Outputs: {_tensors(outputs)}",
        "",
        "  ------------------------- Aggregate Stats -------------------------",
        "",
        f"   Number of Engines: {len(plan.parts)}",
        f"   Average Number of Operators per Engine: {sum(counts) / len(counts):.1f}",
        f"   Most Operators in an Engine: {max(counts)}",
        f"   Bytes crossing engine boundaries: {plan.boundary_bytes} ({format_size(plan.boundary_bytes)})",
        f"   Lower bound: {plan.lower_bound_bytes} bytes; optimality gap {_gap(plan)}",
        f"   Largest predicted peak: {format_size(max(p.predicted_peak_bytes for p in plan.parts))}"
        f" of {format_size(plan.budget_bytes)}",
        f"   Smallest feasible budget: {format_size(smallest)}"
        + (" (without the check)" if check_peak is not None else ""),
        *(
            [
                f"   Its factory's own weights (no `weights`): a state job first, predicted "
                f"{format_size(state_peak)}"
            ]
            if state_peak is not None
            else []
        ),
        *(
            [
                f"   With the check: its reference, predicted {format_size(check_peak)} "
                "(conservative) in the export process; `run --no-check` skips it"
            ]
            if check_peak is not None
            else []
        ),
        f"   Planner: {plan.method}; memory model: {plan.memory_source}",
        "",
    ]
    return "\n".join(lines)


def _part_text(part: Part) -> list[str]:
    return [
        f"    Engine #{part.index + 1} - part{part.index}",
        f"     Engine Inputs: {_tensors(part.inputs)}",
        f"     Number of Operators in Engine: {len(part.ops)}",
        f"     Weights: {format_size(part.weight_bytes)}; predicted peak RSS: {format_size(part.predicted_peak_bytes)}",
        f"     Engine Outputs: {_tensors(part.outputs)}",
        "    ...",
    ]


def _gap(plan: Plan) -> str:
    if plan.optimality_gap == 0:
        return "0 (proven optimal)"
    return f"{plan.optimality_gap:.1%} ({plan.bound_method})"
