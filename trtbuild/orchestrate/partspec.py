"""What a part is, as the keys and jobs see it: its action-key fields (trtbuild.orchestrate.actions),
the backend settings that go into them, the lock's fields for "why rebuilt" messages, and the
inputs a build job needs beyond its key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store
from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.orchestrate import actions
from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.planner import Part, Plan
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.schema import DynamicShape
from trtbuild.release.inputs import machine

if TYPE_CHECKING:
    from trtbuild.release.lockfile import Lock


def part_json(part: Part) -> dict[str, Any]:
    return {
        "ops": part.ops,
        "weights": part.weights,
        "inputs": [t.__dict__ for t in part.inputs],
        "outputs": [t.__dict__ for t in part.outputs],
    }


def part_fields(
    target: Target,
    graph: OpGraph,
    job: GraphResult,
    the_plan: Plan,
    backend: str,
    settings: dict[str, Any],
) -> list[dict[str, Any]]:
    """The action-key fields of every part of a plan (see trtbuild.orchestrate.actions.KEY_FIELDS)."""
    facts = machine(backend, target.kind)
    ranges = {
        i.name: [i.shape.min, i.shape.opt, i.shape.max]
        for i in target.model.inputs
        if isinstance(i.shape, DynamicShape)
    }
    return [
        actions.part_fields(
            graph, part, job.weight_digests, target.precision, settings, facts, ranges
        )
        for part in the_plan.parts
    ]


def old_fields(lock: Lock | None, target: Target, store: Store) -> dict[int, dict[str, str]]:
    """Per-part field digests the lock recorded for this target, with each weight's digest from
    the part's cache record where the cache still has it: for "why rebuilt" messages."""
    locked = lock and lock.target(target.model.name, target.precision, target.kind)
    if not locked:
        return {}
    out = {}
    for p in locked.parts:
        record = store.get_action(p.key)
        out[p.index] = {**p.fields, **(record.get("weight_digests", {}) if record else {})}
    return out


def backend_settings(recipe: Recipe, target: Target, backend: str, release: bool) -> dict[str, Any]:
    """Every backend setting of a target; all of it goes into the action key."""
    settings: dict[str, Any] = {"opset": target.defaults.opset}
    if target.model.plugins:  # by content: a rebuilt library rebuilds the engines
        settings["plugins"] = [sha256_file(Path(p)) for p in recipe.plugins(target.model.name)]
    if backend == "tensorrt":
        trt = target.defaults.tensorrt
        settings.update(
            gpu_workspace=target.budget.gpu_workspace,
            host_memory=target.budget.host_memory,
            tensorrt=trt.model_dump(mode="json"),
            release=release,
        )
        if trt.timing_cache:
            path = recipe.resolve(trt.timing_cache)
            if not path.is_file():
                raise TrtbuildError(
                    f"{recipe.path}: field 'defaults.tensorrt.timing_cache': expected a timing "
                    f"cache file, but {path} does not exist"
                )
            settings["timing_cache_sha256"] = sha256_file(path)
    return settings


def build_inputs(recipe: Recipe, target: Target, part: Part) -> dict[str, Any]:
    """What a builder needs beyond the key's settings: precision, input ranges, file paths."""
    ranges = {i.name: i.shape for i in target.model.inputs if isinstance(i.shape, DynamicShape)}
    inputs = []
    for t in part.inputs:
        entry: dict[str, Any] = {"name": t.name, "shape": t.shape}
        if t.name in ranges:
            entry.update(min=ranges[t.name].min, opt=ranges[t.name].opt, max=ranges[t.name].max)
        inputs.append(entry)
    cache = target.defaults.tensorrt.timing_cache
    return {
        "precision": target.precision,
        "inputs": inputs,
        "plugin_paths": recipe.plugins(target.model.name),
        "timing_cache_path": str(recipe.resolve(cache)) if cache else None,
    }
