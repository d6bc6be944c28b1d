"""`precision_search = true`: a quantized or fp16 target that fails its check keeps the fewest
modules at fp32 that make it pass (orchestrator side).

Each module that holds weights is ranked by its sensitivity: the check's worst rel_l2 with that
module alone kept at fp32 (one build and one check each, every one a cached action). Modules are
then kept in that order, one more at a time, until the check passes; that build is the target's,
and a note gives the `keep` line to paste into the recipe (which makes the next run's keys
match). Greedy: the fewest in that order, not proven the fewest of all sets.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import TYPE_CHECKING, Any

from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.orchestrate import check
from trtbuild.orchestrate.results import TargetResult
from trtbuild.recipe.quantspec import KEEPS

if TYPE_CHECKING:
    from trtbuild.orchestrate.check import Reference
    from trtbuild.orchestrate.context import TargetContext
    from trtbuild.recipe.load import Target


def modules(graph: OpGraph) -> list[str]:
    """The modules holding the graph's weights ("conv1" of "conv1.weight"), in graph order."""
    found: dict[str, None] = {}
    for op in graph.ops:
        for weight in op.weights:
            found.setdefault(weight.rpartition(".")[0] or weight, None)
    return list(found)


def check_keep(target: Target, graph: OpGraph) -> None:
    """Every glob of the model's `keep` names a module (or weight) of its graph: a misspelt one
    would keep nothing and say nothing. Raises TrtbuildError naming the glob and the modules."""
    names = modules(graph)
    everything = [*names, *graph.weights]
    for glob in target.model.keep.get("fp32", []):
        if not any(fnmatch.fnmatchcase(n, glob) for n in everything):
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise TrtbuildError(
                f"model '{target.model.name}': field 'keep': {glob!r} matches no module of the "
                f"model (modules holding weights: {shown})"
            )


def search(ctx: TargetContext, ref: Reference) -> TargetResult | None:
    """The passing build with the fewest modules kept (see the module docstring), or None when
    the target does not ask for a search or no set of kept modules passes."""
    target = ctx.target
    if not target.model.precision_search or target.precision not in KEEPS:
        return None
    already = list(target.model.keep.get("fp32", []))
    report = ctx.run.opts.report
    candidates = [m for m in modules(ctx.graph) if m not in already]
    report(f"{target.name}: precision_search over {len(candidates)} module(s)")
    tried: dict[tuple[str, ...], TargetResult] = {}

    def attempt(keep: list[str]) -> TargetResult:
        if tuple(keep) not in tried:
            tried[tuple(keep)] = _build(ctx, ref, [*already, *keep])
        return tried[tuple(keep)]

    error = {m: float(_worst(attempt([m]))) for m in candidates}
    ranked = sorted(candidates, key=lambda m: (error[m], candidates.index(m)))
    for count in range(1, len(ranked) + 1):
        result = attempt(ranked[:count])
        if result.check and result.check["passed"]:
            line = "keep = { fp32 = " + json.dumps([*already, *ranked[:count]]) + " }"
            result.notes.append(
                f"{target.name}: precision_search: the check passes with {line} "
                f"(add it to model '{target.model.name}' in the recipe)"
            )
            return result
    ctx.result.notes.append(
        f"{target.name}: precision_search: no set of modules kept at fp32 passes the check"
    )
    return None


def _worst(result: TargetResult) -> Any:
    return (result.check or {}).get("worst_rel_l2", float("inf"))


def _build(ctx: TargetContext, ref: Reference, keep: list[str]) -> TargetResult:
    """The target built and checked with `keep` at fp32."""
    from trtbuild.orchestrate.parts import build_parts

    model = ctx.target.model.model_copy(update={"keep": {"fp32": keep}})
    target = dataclasses.replace(ctx.target, model=model)
    result = dataclasses.replace(ctx.result, parts=[], check=None, notes=list(ctx.result.notes))
    trial = dataclasses.replace(ctx, target=target, result=result)
    result.parts = build_parts(trial, ref)
    result.check = check.check_target(trial, ref)
    ctx.run.opts.report(f"{target.name}: keep {keep}: {result.check['message']}")
    return result
