"""The check's reference, its memory predicted (bytes): the export process computes it after its
parts (trtbuild.check.reference), holding one weight at fp32 and every sample's live tensors."""

from __future__ import annotations

import math

from trtbuild.check import data as checkdata
from trtbuild.model.graph import OpGraph
from trtbuild.planner import Plan
from trtbuild.planner.memory import MemoryModel
from trtbuild.recipe.globs import matching_files
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.schema import DynamicShape

MiB = 1 << 20


def reference_peak(
    recipe: Recipe, target: Target, the_plan: Plan, graph: OpGraph, memory: MemoryModel
) -> int | None:
    """The export process's predicted peak (bytes) while it computes the check's reference
    (`plan` shows it: the parts' predictions do not count it); None when the check is off.
    Conservative: 1.5-2.1x a dynamic-shape GPT's measured peak, ResNet-50's +5 %."""
    spec = target.model.check
    if not spec.enabled:
        return None
    # plan does not require the samples yet (run does): none found counts as one at max
    files = max(len(matching_files(spec.data, recipe.root)), 1) if spec.data else 0
    return memory.export.fixed_bytes + reference_bytes(target, the_plan, graph, files)


def _scale(target: Target) -> float:
    """How much larger tensors are at the check's largest shapes than at opt (the graph's)."""
    ratio = 1.0
    for spec in target.model.inputs:
        if isinstance(spec.shape, DynamicShape):
            ratio = max(ratio, math.prod(spec.shape.max) / math.prod(spec.shape.opt))
    return ratio


def _samples_scale(target: Target, files: int) -> float:
    """The check's samples together (it runs them all at once), in sizes at opt: seeded
    samples at min, opt and max (checkdata.sample_shapes), each as large as its largest input
    against opt; `files` samples of the user's (shapes unread) each as large as max."""
    if files:
        return files * _scale(target)
    inputs = [i.model_dump(mode="json") for i in target.model.inputs]
    opt = {
        i.name: math.prod(i.shape.opt if isinstance(i.shape, DynamicShape) else i.shape)
        for i in target.model.inputs
    }
    return sum(
        max(math.prod(shape) / max(opt[name], 1) for name, shape in sample.items())
        for sample in checkdata.sample_shapes(inputs)
    )


def activation_bytes(target: Target, graph: OpGraph) -> int:
    """The largest tensor an op of the model makes, at float32 and the check's largest shapes."""
    largest = max((t.bytes for op in graph.ops for t in op.outputs), default=0)
    return int(largest * (1 if target.precision == "fp32" else 2) * _scale(target))


def reference_bytes(target: Target, the_plan: Plan, graph: OpGraph, files: int) -> int:
    """The reference's peak beyond the process's base (torch, the model's export): its largest
    weight at fp32 (one op's weights are loaded at a time, and dropped after their last use)
    and, for its samples together (_samples_scale), the tensors between parts and a part's live
    activations (~4x the largest tensor a part passes), at float32."""
    largest = max((p.load.largest_bytes for p in the_plan.parts), default=0)
    if target.model.onnx:  # ONNX Runtime runs a whole part (check/onnxreference.py)
        largest = max((p.weight_bytes for p in the_plan.parts), default=0)
    half = target.precision != "fp32"
    tensors = [t.bytes * (2 if half else 1) for p in the_plan.parts for t in p.outputs]
    per_opt = sum(tensors) + 8 * activation_bytes(target, graph) / _scale(target)
    live = _samples_scale(target, files) * per_opt
    # + PyTorch's CPU allocator and oneDNN's scratch: ResNet-50 at 1x3x224x224 measured 80 MiB
    # over its export's peak (largest weight 8 MiB, largest activation 3 MiB)
    return int(largest * (2 if half else 1) + live + 64 * MiB)
