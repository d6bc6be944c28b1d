"""Types and shapes of every tensor of an ONNX graph at the recipe's shapes, without its weights.

ONNX's own shape inference (onnx.shape_inference.infer_shapes, data propagation on) runs on a
skeleton of the graph: its nodes, the recipe's input shapes, the small initializers that shape
computations read (Reshape's target), and every other initializer as a typed graph input, so
no weight is copied. It runs once per distinct set of the recipe's min, opt and max shapes: a
dimension equal in all of them is static, one that differs is dynamic and named after the
recipe's input axis it equals everywhere (`x.0`), else after its tensor (`add_1.0`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trtbuild.recipe.schema import ModelSpec

INLINE_BYTES = 1024  # initializers kept in the skeleton (shape data); larger ones become inputs


@dataclass(frozen=True)
class Inferred:
    """A tensor as inference saw it: numpy dtype name, dims (int, or a dynamic dim's name), bytes
    at the recipe's opt shapes. Unknown tensors (a custom op's outputs) are None in `infer`."""

    dtype: str
    shape: list[int | str]
    bytes: int


def dtype_name(elem_type: int) -> str:
    import onnx

    return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type).name)


def shape_sets(spec: ModelSpec) -> list[dict[str, list[int]]]:
    """The recipe's input shapes at opt, min and max (duplicates dropped); opt first."""
    out: list[dict[str, list[int]]] = []
    for which in ("opt", "min", "max"):
        shapes = {
            i.name: list(getattr(i.shape, which) if i.dynamic else i.shape) for i in spec.inputs
        }
        if shapes not in out:
            out.append(shapes)
    return out


def infer(model: Any, spec: ModelSpec) -> dict[str, Inferred | None]:
    """Every node output's type and shape (see module docstring); None where inference could
    not tell (a custom operator ONNX has no schema for, and what follows from it)."""
    runs = [_infer_once(model, shapes) for shapes in shape_sets(spec)]
    names = _input_axes(spec)
    out: dict[str, Inferred | None] = {}
    for node in model.graph.node:
        for name in node.output:
            if not name:
                continue
            seen = [run.get(name) for run in runs]
            if any(s is None for s in seen):
                out[name] = None
                continue
            dtypes = {s[0] for s in seen}  # type: ignore[index]
            ranks = {len(s[1]) for s in seen}  # type: ignore[index]
            if len(dtypes) != 1 or len(ranks) != 1:
                out[name] = None
                continue
            out[name] = _combine(name, seen, names)  # type: ignore[arg-type]
    return out


def _combine(
    name: str, seen: list[tuple[int, list[int]]], names: dict[tuple[int, ...], str]
) -> Inferred:
    elem, opt = seen[0]
    shape: list[int | str] = []
    for axis, dim in enumerate(opt):
        values = tuple(s[1][axis] for s in seen)
        if len(set(values)) == 1:
            shape.append(dim)
        else:
            shape.append(names.get(values, f"{name}.{axis}"))
    count = 1
    for d in opt:
        count *= d
    return Inferred(dtype_name(elem), shape, count * _itemsize(elem))


def _itemsize(elem: int) -> int:
    import onnx

    return int(onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize)


def _input_axes(spec: ModelSpec) -> dict[tuple[int, ...], str]:
    """(opt, min, max values of a dynamic axis, as shape_sets orders them) -> `input.axis`."""
    sets = shape_sets(spec)
    out: dict[tuple[int, ...], str] = {}
    for i in spec.inputs:
        for axis in range(len(sets[0][i.name])):
            values = tuple(s[i.name][axis] for s in sets)
            if len(set(values)) > 1:
                out.setdefault(values, f"{i.name}.{axis}")
    return out


def _dim_params(graph: Any, shapes: dict[str, list[int]]) -> dict[str, int]:
    """The graph inputs' named dimensions (`dim_param`) at the recipe's `shapes`."""
    out: dict[str, int] = {}
    for value in graph.input:
        if value.name in shapes and value.type.tensor_type.HasField("shape"):
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                if dim.dim_param:
                    out.setdefault(dim.dim_param, size)
    return out


def _at(value: Any, params: dict[str, int]) -> Any:
    """A copy of ValueInfoProto `value` with its named dimensions that are in `params` set."""
    import onnx

    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value)
    if copy.type.tensor_type.HasField("shape"):
        for dim in copy.type.tensor_type.shape.dim:
            if dim.dim_param in params:
                dim.dim_value = params[dim.dim_param]  # clears dim_param (a oneof)
    return copy


def _infer_once(model: Any, shapes: dict[str, list[int]]) -> dict[str, tuple[int, list[int]]]:
    """name -> (elem_type, dims) for every tensor inference fully determined at `shapes`."""
    import onnx
    from onnx import helper

    from trtbuild.model.onnxfile import is_external, tensor_nbytes

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in inits:
            continue
        elem = value.type.tensor_type.elem_type
        inputs.append(helper.make_tensor_value_info(value.name, elem, shapes[value.name]))
    kept = []
    for t in graph.initializer:
        if not is_external(t) and tensor_nbytes(t) <= INLINE_BYTES:
            kept.append(t)
        else:
            inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    # What the graph declares (value_info, outputs) with its named dimensions at `shapes`: the
    # types of a custom op's outputs, which inference cannot find, and of what follows from them
    params = _dim_params(graph, shapes)
    outputs = [_at(v, params) for v in graph.output]
    declared = [_at(v, params) for v in graph.value_info]
    inferred = None
    for value_info in (declared, []):  # a declaration inference disagrees with: without them
        skeleton = helper.make_graph(
            list(graph.node), graph.name or "g", inputs, outputs, value_info=value_info
        )
        skeleton.initializer.extend(kept)
        small = helper.make_model(
            skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version
        )
        small.functions.extend(model.functions)
        try:
            inferred = onnx.shape_inference.infer_shapes(small, strict_mode=False, data_prop=True)
            break
        except Exception:
            continue
    if inferred is None:  # inference gave up on the whole graph: every tensor unknown
        return {}
    out: dict[str, tuple[int, list[int]]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if not tensor.elem_type or not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if all(d is not None for d in dims):
            out[value.name] = (tensor.elem_type, [int(d) for d in dims])  # type: ignore[arg-type]
    return out
