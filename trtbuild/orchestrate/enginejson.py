"""engine.json: what trtbuild.load() and a deployment need to run a target's engines: its parts in
order with their input and output tensors (names, shapes, dtypes; dynamic ranges as
{min, opt, max}), the model's interface (inputs by name, output structure) and the backend."""

from __future__ import annotations

from typing import Any

from trtbuild.orchestrate.results import TargetResult
from trtbuild.recipe.load import Recipe


def engine_description(result: TargetResult, recipe: Recipe) -> dict[str, Any]:
    plan_ = result.plan
    produced = {t.name: t for p in plan_.parts for t in p.outputs}
    model_inputs = {t.name: t for p in plan_.parts for t in p.inputs if t.from_part is None}
    graph = result.graph_job.graph
    declared = {t["name"]: t for t in graph["inputs"]}
    interface = graph.get("interface", {})
    outputs = [produced[n] for n in plan_.model_outputs]
    return {
        "schema": 1,
        "recipe": recipe.name,
        "model": result.model,
        "precision": result.precision,
        **({"kind": result.kind} if result.kind else {}),
        "backend": result.backend,
        # every declared input, read or not (trtbuild.load() takes and checks them all)
        "inputs": [
            {
                **(
                    _io(model_inputs[i.name])
                    if i.name in model_inputs
                    else _io_json(declared[i.name])
                ),
                **_range(i),
            }
            for i in recipe.model_spec(result.model).inputs
            if i.name in model_inputs or i.name in declared
        ],
        "outputs": [_io(t) for t in outputs],
        **({"structure": interface["structure"]} if "structure" in interface else {}),
        # custom-operator libraries the engines need loaded (the recipe's `plugins`)
        **(
            {"plugins": recipe.plugins(result.model)}
            if recipe.model_spec(result.model).plugins
            else {}
        ),
        "parts": [
            {
                "index": p.index,
                "engine": r.engine,
                "sha256": r.sha256,
                "sidecars": r.sidecars,
                "inputs": [t.name for t in p.inputs],
                "outputs": [t.name for t in p.outputs],
            }
            for p, r in zip(plan_.parts, result.parts)
        ],
    }


def _io(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": t.shape, "dtype": t.dtype}


def _io_json(t: dict[str, Any]) -> dict[str, Any]:
    return {"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]}


def _range(spec: Any) -> dict[str, Any]:
    """The shapes the engine takes, from the recipe: {min, max} per axis."""
    shape = spec.shape
    if isinstance(shape, list):
        return {"min": list(shape), "max": list(shape)}
    return {"min": list(shape.min), "max": list(shape.max)}
