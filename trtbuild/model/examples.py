"""Example inputs and dynamic shapes for torch.export, from the recipe's inputs (worker side)."""

from __future__ import annotations

from typing import Any

import torch

from trtbuild.recipe.schema import DynamicShape, InputSpec

INPUT_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


def example_inputs(inputs: list[InputSpec], device: str) -> tuple[torch.Tensor, ...]:
    """The tensors the model is traced with: the recipe's opt shapes, except that a dynamic size
    whose opt is 0 or 1 is traced at 2 when its range holds 2. Code that branches on a size
    being 1 (transformers' packed-sequence detection at batch 1) traced at 1 gives a graph that
    is wrong for every larger size; traced at 2, it takes the branch that holds for all."""
    return tuple(
        torch.empty(traced_shape(i), dtype=INPUT_DTYPES[i.dtype], device=device) for i in inputs
    )


def traced_shape(spec: InputSpec) -> list[int]:
    """The shape an input is traced at (example_inputs); its parts are exported at it too."""
    shape = spec.shape
    if not isinstance(shape, DynamicShape):
        return list(spec.opt_shape)
    return [
        2 if opt < 2 and lo != hi and lo <= 2 <= hi else opt
        for lo, opt, hi in zip(shape.min, shape.opt, shape.max)
    ]


def dynamic_shapes(inputs: list[InputSpec]) -> tuple[tuple[dict[int, Any] | None, ...]] | None:
    """torch.export dims for the recipe's {min, opt, max} shapes."""
    if not any(i.dynamic for i in inputs):
        return None
    dims: list[dict[int, Any] | None] = []
    for spec in inputs:
        shape = spec.shape
        if not spec.dynamic:
            dims.append(None)
            continue
        assert not isinstance(shape, list)
        # DYNAMIC, not a named Dim: export may find that dims are equal (input_ids and
        # attention_mask share the sequence length) instead of failing on it.
        dims.append(
            {
                axis: torch.export.Dim.DYNAMIC(min=lo, max=hi)
                for axis, (lo, hi) in enumerate(zip(shape.min, shape.max))
                if lo != hi
            }
        )
    return (tuple(dims),)  # forward(*inputs): one entry, the tuple of inputs


def small_sizes(inputs: list[InputSpec]) -> bool:
    """A declared dynamic dimension reaches below 2 (partdims.oblivious_sizes)."""
    return any(
        lo < 2 and lo != hi
        for i in inputs
        if isinstance(i.shape, DynamicShape)
        for lo, hi in zip(i.shape.min, i.shape.max)
    )
