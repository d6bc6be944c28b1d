"""An ONNX model as an OpGraph (`source = "onnx:<file>"`): the planner's input, without weights.

Each op of the OpGraph is one ONNX node, or a group of nodes a part boundary must not fall
between: a QuantizeLinear with the DequantizeLinear that reads it, and a DequantizeLinear with
the ops that read it (TensorRT's explicit quantization fuses them: its developer guide, "Q/DQ
layer placement"), and a node whose outputs inference cannot type (a custom operator) with the
nodes that read them (a part's inputs need a type). Groups that would make a cycle are merged
(networkx condensation), so the ops stay in a topological order. An op's arguments are its
nodes' types, attributes and wiring, so its part's key changes with them; weights are the
initializers, digested one by one from their bytes (onnxfile.tensor_digest).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import CHECKPOINT, Op, OpGraph, TensorInfo, WeightInfo, live_ops
from trtbuild.model.onnxfile import tensor_nbytes
from trtbuild.model.onnxshapes import Inferred, dtype_name, infer, shape_sets
from trtbuild.recipe.schema import ModelSpec

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"


def onnx_graph(model: Any, spec: ModelSpec, where: str) -> OpGraph:
    """The OpGraph of `model` (a ModelProto without external data, onnxfile.load_graph) at the
    recipe's shapes. `interface["onnx_nodes"]` maps each op to its node indices,
    `interface["onnx_untyped"]` lists the nodes inference could not type an output of.

    Raises TrtbuildError (prefixed with `where`) when the recipe's inputs or outputs do not match
    the graph's, or a tensor between ops cannot be typed."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = _inputs(graph, inits, spec, where)
    outputs = _outputs(graph, spec, where)
    types = infer(model, spec)
    for value in graph.output:  # declared types where inference could not tell
        if types.get(value.name) is None and value.type.tensor_type.elem_type:
            types[value.name] = _declared(value)
    nodes = list(graph.node)
    readers: dict[str, set[int]] = {}
    for i, node in enumerate(nodes):
        for name in _reads(node):
            readers.setdefault(name, set()).add(i)
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.name] = counts.get(node.name, 0) + 1
    ops, members = [], {}
    for group in _groups(nodes, types):
        first = nodes[group[0]]
        unique = first.name and counts[first.name] == 1
        name = first.name if unique else f"{first.op_type}_{group[0]}"
        op = _op(name, group, nodes, types, inits, outputs, readers)
        ops.append(op)
        members[op.name] = group
    ops = live_ops(ops, outputs)
    used = {w for op in ops for w in op.weights}
    weights = {
        n: WeightInfo(
            n, [int(d) for d in t.dims], dtype_name(t.data_type), tensor_nbytes(t), CHECKPOINT
        )
        for n, t in inits.items()
        if n in used
    }
    # nodes inference could not type an output of (a custom op, and what follows from it)
    untyped = [i for i, n in enumerate(nodes) if any(o and types.get(o) is None for o in n.output)]
    interface = {
        "onnx_nodes": {op.name: members[op.name] for op in ops},
        "onnx_untyped": untyped,
    }
    return OpGraph(inputs, outputs, weights, ops, interface)


def _inputs(graph: Any, inits: dict[str, Any], spec: ModelSpec, where: str) -> list[TensorInfo]:
    declared = {v.name: v for v in graph.input if v.name not in inits}
    wanted = [i.name for i in spec.inputs]
    if sorted(declared) != sorted(wanted):
        raise TrtbuildError(
            f"{where}: the recipe's inputs {wanted} do not match the ONNX graph's inputs "
            f"{list(declared)} (by name)"
        )
    opt = shape_sets(spec)[0]
    out = []
    for spec_input in spec.inputs:
        value = declared[spec_input.name].type.tensor_type
        dtype = dtype_name(value.elem_type)
        if dtype != spec_input.dtype:
            raise TrtbuildError(
                f"{where}: input {spec_input.name!r} is {dtype} in the ONNX graph, but the "
                f"recipe says dtype = {spec_input.dtype!r}"
            )
        shape = opt[spec_input.name]
        dims = list(value.shape.dim) if value.HasField("shape") else None
        if dims is not None:
            static = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            if len(static) != len(shape) or any(
                s is not None and (s != lo or s != hi)
                for s, lo, hi in zip(static, _range(spec_input, "min"), _range(spec_input, "max"))
            ):
                raise TrtbuildError(
                    f"{where}: input {spec_input.name!r} has shape {_text(dims)} in the ONNX "
                    f"graph; the recipe's shape {spec_input.shape.model_dump() if spec_input.dynamic else shape} "  # type: ignore[union-attr]
                    "does not fit it"
                )
        named: list[int | str] = [
            f"{spec_input.name}.{a}" if lo != hi else d
            for a, (d, lo, hi) in enumerate(
                zip(shape, _range(spec_input, "min"), _range(spec_input, "max"))
            )
        ]
        count = 1
        for d in shape:
            count *= d
        out.append(TensorInfo(spec_input.name, named, dtype, count * _itemsize(value.elem_type)))
    return out


def _range(spec_input: Any, which: str) -> list[int]:
    return list(getattr(spec_input.shape, which) if spec_input.dynamic else spec_input.shape)


def _text(dims: list[Any]) -> str:
    return (
        "["
        + ", ".join(
            str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
        )
        + "]"
    )


def _itemsize(elem: int) -> int:
    import onnx

    return int(onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize)


def _outputs(graph: Any, spec: ModelSpec, where: str) -> list[str]:
    names = [v.name for v in graph.output]
    if spec.outputs is None:
        return names
    missing = [n for n in spec.outputs if n not in names]
    if missing:
        raise TrtbuildError(
            f"{where}: field 'outputs': {missing[0]!r} is not an output of the ONNX graph "
            f"(its outputs: {names})"
        )
    return list(spec.outputs)


def _declared(value: Any) -> Inferred | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if any(d is None for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d  # type: ignore[operator]
    return Inferred(dtype_name(tensor.elem_type), dims, count * _itemsize(tensor.elem_type))  # type: ignore[arg-type]


def _groups(nodes: list[Any], types: dict[str, Inferred | None]) -> list[list[int]]:
    """Node indices per op, the ops in a topological order (see module docstring)."""
    import networkx as nx

    producer = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for i, node in enumerate(nodes):
        for name in _reads(node):
            p = producer.get(name)
            if p is None:
                continue
            quantized = nodes[p].op_type in (QUANTIZE, DEQUANTIZE) and node.op_type != QUANTIZE
            if types.get(name) is None or quantized:
                union(p, i)
    dag = nx.DiGraph()
    dag.add_nodes_from(find(i) for i in range(len(nodes)))
    for i, node in enumerate(nodes):
        for name in _reads(node):
            p = producer.get(name)
            if p is not None and find(p) != find(i):
                dag.add_edge(find(p), find(i))
    merged = nx.condensation(dag)
    members: dict[int, list[int]] = {}
    for i in range(len(nodes)):
        members.setdefault(merged.graph["mapping"][find(i)], []).append(i)
    order = nx.lexicographical_topological_sort(merged, key=lambda c: members[c][0])
    return [members[c] for c in order]


def _reads(node: Any) -> list[str]:
    """The tensors a node reads: its inputs, and the outer-scope names its subgraphs use."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names.extend(_outer(sub))
    return names


def _outer(graph: Any) -> list[str]:
    """Names a subgraph reads that it does not define (ONNX outer-scope values)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    out = []
    for node in graph.node:
        for name in _reads(node):
            if name not in defined:
                out.append(name)
        defined.update(node.output)
    return out


def _op(
    name: str,
    group: list[int],
    nodes: list[Any],
    types: dict[str, Inferred | None],
    inits: dict[str, Any],
    model_outputs: list[str],
    readers: dict[str, set[int]],
) -> Op:
    members = [nodes[i] for i in group]
    made = {t for n in members for t in n.output if t}
    reads: list[str] = []
    for node in members:
        reads.extend(n for n in _reads(node) if n not in made and n not in reads)
    inside = set(group)
    outputs = []
    for node in members:
        for out in node.output:
            if out and (readers.get(out, inside) - inside or out in model_outputs):
                seen = types.get(out)
                if seen is None:
                    raise TrtbuildError(
                        f"cannot infer the type and shape of tensor {out!r} (made by "
                        f"{node.op_type} node {node.name!r}); declare it in the graph's value_info"
                    )
                outputs.append(TensorInfo(out, seen.shape, seen.dtype, seen.bytes))
    return Op(
        name=name,
        target="+".join(_kind(n) for n in members),
        args=_args(members),
        inputs=[n for n in reads if n not in inits],
        weights=[n for n in reads if n in inits],
        outputs=outputs,
    )


def _kind(node: Any) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _args(members: list[Any]) -> str:
    """The nodes' types, wiring and attributes (subgraphs and tensors by a digest of their
    deterministic serialization)."""
    out = []
    for node in members:
        attrs = {
            a.name: hashlib.sha256(a.SerializeToString(deterministic=True)).hexdigest()[:16]
            for a in node.attribute
        }
        out.append([_kind(node), list(node.input), list(node.output), attrs])
    return json.dumps(out, sort_keys=True)


def model_file(spec: ModelSpec, root: Path) -> Path:
    """The ONNX file of an `onnx:` source, relative to the recipe's folder `root`."""
    return (root / spec.source.partition(":")[2]).resolve()
