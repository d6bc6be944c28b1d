"""The ONNX file of each part of an `onnx:<file>` source (worker side, no torch).

A part is a graph of its own nodes (trtbuild.model.onnxgraph: `interface["onnx_nodes"]`), the
tensors it reads from earlier parts as inputs, and only the initializers its nodes read: each is
copied from the source's external data into the part's own `part.onnx.data` a chunk at a time
(onnxfile.CHUNK), so the process never holds a weight, let alone another part's. fp16 converts
the part with ONNX Runtime's converter (onnxruntime.transformers.float16, inputs and outputs
kept at their types, ops without fp16 kernels and custom ops kept at fp32; a part with control
flow stays at fp32: the converter breaks its subgraphs); it holds that part's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.model.onnxfile import is_external, load_graph, tensor_chunks, tensor_nbytes
from trtbuild.model.onnxgraph import model_file, onnx_graph
from trtbuild.recipe.load import Recipe

FP16_DOMAINS = ("", "ai.onnx", "com.microsoft")  # ops ONNX Runtime may have fp16 kernels for
DATA_ALIGN = 4096  # each initializer starts on a page in part.onnx.data (mmap-able)


@dataclass(frozen=True)
class Source:
    """The source model as one export process reads it: its graph without weights, its folder,
    the OpGraph parts were planned on, and the ops' node indices."""

    proto: Any
    folder: Path
    graph: OpGraph
    nodes: dict[str, list[int]]
    names: list[str]  # each node's name in the parts (node_names)

    def fp32_nodes(self, indices: list[int]) -> list[str]:
        """Names of the nodes among `indices` an fp16 part keeps at fp32: untyped outputs (a
        custom op and what follows) and other domains' ops."""
        untyped = set(self.graph.interface.get("onnx_untyped", []))
        return [
            self.names[i]
            for i in indices
            if i in untyped or self.proto.graph.node[i].domain not in FP16_DOMAINS
        ]

    def has_control_flow(self, indices: list[int]) -> bool:
        import onnx

        graphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        return any(a.type in graphs for i in indices for a in self.proto.graph.node[i].attribute)


def node_names(proto: Any) -> list[str]:
    """Each node's name in the parts: its own when unique in the graph, else type and index."""
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.name] = counts.get(node.name, 0) + 1
    return [
        n.name if n.name and counts[n.name] == 1 else f"{n.op_type}_{i}"
        for i, n in enumerate(proto.graph.node)
    ]


def open_source(recipe: Recipe, model: str, graph_digest: str) -> Source:
    """Read the source again, as the graph job did (its precisions were checked with the
    recipe's targets: trtbuild.recipe.load).

    Raises TrtbuildError for a changed model."""
    spec = recipe.model_spec(model)
    path = model_file(spec, recipe.root)
    proto = load_graph(path)
    graph = onnx_graph(proto, spec, f"{path}")
    if graph.digest() != graph_digest:
        raise TrtbuildError(
            f"model '{model}' changed while it was being built (graph digest differs); run again"
        )
    return Source(proto, path.parent, graph, graph.interface["onnx_nodes"], node_names(proto))


def export_parts(
    source: Source, parts: list[tuple[dict[str, Any], Path]], precision: str
) -> list[dict[str, Any]]:
    """Write each part's ONNX at `precision` (see module docstring); per part, what it loaded."""
    out = []
    for part, path in parts:
        written = write_part(source, part, path)
        indices = _indices(source, part)
        if precision == "fp16" and source.has_control_flow(indices):
            # ONNX Runtime's converter breaks If/Loop/Scan (their subgraphs' types no longer
            # match, whatever nodes it is told to keep): such a part stays at fp32
            written["kept_fp32"] = "control flow (If, Loop or Scan)"
        elif precision == "fp16":
            _to_fp16(path, source.fp32_nodes(indices))
        out.append(written)
    return out


def _indices(source: Source, part: dict[str, Any]) -> list[int]:
    return sorted(i for op in part["ops"] for i in source.nodes[op])


def write_part(source: Source, part: dict[str, Any], path: Path) -> dict[str, Any]:
    """The part's ONNX at fp32 as in the source, its initializers in `<path>.data`."""
    import onnx
    from onnx import helper

    original = source.proto.graph
    indices = _indices(source, part)
    by_name = {t.name: t for t in original.initializer}
    data = path.with_name(path.name + ".data")
    initializers, loaded = [], 0
    with open(data, "wb") as f:
        for name in part["weights"]:
            tensor = by_name[name]
            copy = onnx.TensorProto()
            if not is_external(tensor):
                copy.CopyFrom(tensor)
            else:
                copy.name, copy.data_type = tensor.name, tensor.data_type
                copy.dims.extend(tensor.dims)
                offset = -(-f.tell() // DATA_ALIGN) * DATA_ALIGN
                f.seek(offset)
                for block in tensor_chunks(tensor, source.folder):
                    f.write(block)
                copy.data_location = onnx.TensorProto.EXTERNAL
                for key, value in (
                    ("location", data.name),
                    ("offset", str(offset)),
                    ("length", str(tensor_nbytes(tensor))),
                ):
                    copy.external_data.add(key=key, value=value)
            loaded += tensor_nbytes(tensor)
            initializers.append(copy)
    nodes = []
    for i in indices:
        node = onnx.NodeProto()
        node.CopyFrom(original.node[i])
        node.name = source.names[i]
        nodes.append(node)
    graph = helper.make_graph(
        nodes,
        f"{original.name or 'graph'}_part",
        [_value(t) for t in part["inputs"]],
        [_value(t) for t in part["outputs"]],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=list(source.proto.opset_import),
        ir_version=source.proto.ir_version,
        producer_name="trtbuild",
    )
    model.functions.extend(source.proto.functions)
    onnx.save(model, str(path))
    return {
        "weights_loaded": sorted(part["weights"]),
        "weight_bytes_loaded": loaded,
        "checkpoint_files_opened": 1 if part["weights"] else 0,
        "initializers": len(initializers),
    }


def _value(tensor: dict[str, Any]) -> Any:
    """A part's input or output: its dtype, its dims (a dynamic one by its name)."""
    import numpy as np
    from onnx import helper

    elem = helper.np_dtype_to_tensor_dtype(np.dtype(tensor["dtype"]))
    return helper.make_tensor_value_info(tensor["name"], elem, list(tensor["shape"]))


def _to_fp16(path: Path, fp32_nodes: list[str]) -> None:
    """Convert the part at `path` to fp16 in place, `fp32_nodes` (Source.fp32_nodes) kept."""
    import onnx

    save_fp16(onnx.load(str(path)), path, fp32_nodes)  # this part's weights, no other's


def save_fp16(model: Any, out: Path, fp32_nodes: list[str]) -> None:
    """Write `model` (an onnx.ModelProto, converted in place) at fp16 to `out`, its weights in
    `out`.data: ONNX Runtime's converter (onnxruntime.transformers.float16), the graph's inputs
    and outputs kept at their types, `fp32_nodes` kept at fp32, Casts between (none between two
    fp32 nodes: the converter's fp16 round trip there would overflow what they keep at fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=fp32_nodes)
    _drop_round_trips(half.graph)
    out.with_name(out.name + ".data").unlink(missing_ok=True)  # onnx.save appends to it
    onnx.save(
        half,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=out.name + ".data",
        size_threshold=1024,
    )


def _drop_round_trips(graph: Any) -> None:
    """Remove every Cast to float32 of a Cast to float16 of a float32 value (the converter puts
    one between two nodes it keeps at fp32, and between a kept input and a kept node): its
    readers read the float32 value itself. A float16 Cast nothing reads any more goes too.
    A graph with subgraphs (If, Loop, Scan: they may read a value by name) is left as it is."""
    from onnx import AttributeProto, TensorProto

    if any(
        a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        return

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    floats = {
        v.name
        for v in [*graph.input, *graph.value_info]
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    halves = {
        n.output[0]: n.input[0]
        for n in graph.node
        if cast_to(n) == TensorProto.FLOAT16 and n.input[0] in floats
    }
    rename = {
        n.output[0]: halves[n.input[0]]
        for n in graph.node
        if cast_to(n) == TensorProto.FLOAT and n.input[0] in halves
    }
    outputs = {o.name for o in graph.output}
    kept = [n for n in graph.node if not (n.output and n.output[0] in rename.keys() - outputs)]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    read = {name for node in kept for name in node.input} | outputs
    kept = [n for n in kept if not (n.output[0] in halves and n.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(kept)
