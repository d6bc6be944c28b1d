"""`trtbuild plan --format dot|svg`: the plans as one Graphviz document (and its SVG, by `dot`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.sizes import format_size

if TYPE_CHECKING:
    from trtbuild.model.graph import OpGraph
    from trtbuild.planner import Plan


def as_dot(planned: list[Any]) -> str:
    """One Graphviz document: a cluster per target, inside it a cluster per engine, every op
    edge drawn (ranked top to bottom); edges that cross engines are red and carry the boundary
    tensor's name, shape, dtype and bytes."""
    lines = ["digraph trtbuild {", "  rankdir=TB; node [shape=box, fontsize=10];"]
    for number, p in enumerate(planned):
        lines += _target_dot(f"t{number}", p.target.name, p.plan, p.graph)
    lines.append("}")
    return "\n".join(lines)


def _target_dot(prefix: str, name: str, plan: Plan, graph: OpGraph) -> list[str]:
    def node(op_or_input: str) -> str:
        return f'"{prefix}/{op_or_input}"'

    engine_of = {op: part.index for part in plan.parts for op in part.ops}
    boundary = {t.name: t for part in plan.parts for t in part.inputs if t.from_part is not None}
    lines = [f'  subgraph "cluster_{prefix}" {{', f'    label="{name}"; style=dashed;']
    for part in plan.parts:
        lines.append(f'    subgraph "cluster_{prefix}_{part.index}" {{')
        lines.append(
            f'      label="engine {part.index}: {len(part.ops)} ops, '
            f'{format_size(part.weight_bytes)} weights"; style=rounded;'
        )
        lines += [f'      {node(op)} [label="{op}"];' for op in part.ops]
        lines.append("    }")
    lines += [f'    {node(t.name)} [label="{t.name}", shape=ellipse];' for t in graph.inputs]
    for op in graph.ops:
        if op.name not in engine_of:
            continue
        for tensor in op.inputs:
            source = graph.producer(tensor) or tensor
            style = ""
            if tensor in boundary and engine_of.get(source) != engine_of[op.name]:
                t = boundary[tensor]
                size = "x".join(map(str, t.shape))
                style = (
                    f' [color=red, fontcolor=red, label="{t.name}\\n{size} {t.dtype}\\n'
                    f'{format_size(t.bytes)}"]'
                )
            lines.append(f"    {node(source)} -> {node(op.name)}{style};")
    lines.append("  }")
    return lines


def to_svg(dot: str) -> str:
    if shutil.which("dot") is None:
        raise TrtbuildError(
            "--format svg needs Graphviz's `dot` (apt-get install graphviz, or brew install graphviz); "
            "--format dot prints the graph without it"
        )
    proc = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise TrtbuildError(f"Graphviz failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout
