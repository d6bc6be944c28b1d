"""Values a part's ONNX computes from constants alone, folded into weights before it is quantized
(build process side, no torch).

The exporter (optimize=False) writes some weights as small constant subgraphs: a convolution
without a bias gets a zero bias, Expand(CastLike(0.0, x), Shape(weight)). The quantizers take
only an initializer as a weight, and trtbuild.backends.quantize leaves a node with a float input
the calibration has no range for at fp32: every such convolution (all of ResNet's) stayed at fp32.

Evaluated with onnx's reference evaluator: onnxscript's constant folding does the same, but its
import (with onnx_ir) adds ~50 MiB to the build process, which its memory model does not hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIMIT = 1 << 20  # bytes: a larger computed constant stays a computation
FLOATS = (1, 10, 16)  # onnx.TensorProto: FLOAT, FLOAT16, BFLOAT16


def fold_constants(onnx_path: Path, folded: Path) -> Path:
    """`onnx_path`, or a copy at `folded` (beside it: its weights stay in `onnx_path`'s data file)
    where each float value computed from constants alone is an inline weight of the same name,
    and the nodes nothing reads any more are gone. Constants are small inline tensors, Constant
    nodes, the shape of a weight, the type of any value (CastLike); a weight stored apart is not
    one (trtbuild.backends.quantize folds its transposes itself). Other values keep their names,
    so the calibration table still names them."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    inline = {n: i for n, i in weights.items() if i.data_location != onnx.TensorProto.EXTERNAL}
    types = _elem_types(model)
    constant = {*inline, ""}  # "": an omitted optional input
    nodes = list(graph.node)
    found = {}  # node index -> a node that computes its outputs from constants alone
    for k, node in enumerate(nodes):
        made = _from_constants(node, constant, weights, types)
        if made is not None:
            found[k] = made
            constant.update(node.output)
    computed = {o for k in found if nodes[k].op_type != "Constant" for o in nodes[k].output}
    reads = {name for k, n in enumerate(nodes) if k not in found for name in n.input}
    wanted = sorted(n for n in reads & computed if types.get(n) in FLOATS)  # quantizer's reads
    if not wanted:
        return onnx_path
    needed, sub_nodes = set(wanted), list[Any]()  # what the wanted values are made of
    for k in sorted(found, reverse=True):
        if needed & set(nodes[k].output):
            sub_nodes.insert(0, found[k])
            needed.update(found[k].input)
    sub = onnx.helper.make_graph(
        sub_nodes,
        "constants",
        [],
        [onnx.helper.make_empty_tensor_value_info(name) for name in wanted],
        [inline[name] for name in sorted(needed & set(inline))],
    )
    opsets = list(model.opset_import)
    values = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=opsets)).run(None, {})
    folds = {name: value for name, value in zip(wanted, values) if value.nbytes <= LIMIT}
    if not folds:
        return onnx_path
    graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in folds.items())
    _drop_unread(graph, set(folds))
    onnx.save(model, str(folded))
    return folded


def _from_constants(
    node: Any, constant: set[str], weights: dict[str, Any], types: dict[str, int]
) -> Any | None:
    """`node`, or an equivalent node that reads constants only, if its outputs are constants."""
    import numpy as np
    from onnx import helper, numpy_helper

    if node.op_type == "Constant" or all(name in constant for name in node.input):
        return node
    if node.op_type == "Shape" and node.input[0] in weights:  # its dims, not its data
        attrs = {a.name: a.i for a in node.attribute}
        dims = list(weights[node.input[0]].dims)[attrs.get("start", 0) : attrs.get("end")]
        value = numpy_helper.from_array(np.array(dims, dtype=np.int64))
        return helper.make_node("Constant", [], list(node.output), value=value)
    if node.op_type == "CastLike" and node.input[0] in constant and node.input[1] in types:
        return helper.make_node("Cast", node.input[:1], list(node.output), to=types[node.input[1]])
    return None


def _elem_types(model: Any) -> dict[str, int]:
    """Every value's element type that shape inference knows (no weights are read)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    found = {v.name: v.type.tensor_type.elem_type for v in values}
    return {name: kind for name, kind in found.items() if kind}


def _drop_unread(graph: Any, now_weights: set[str]) -> None:
    """Remove the nodes that made `now_weights`, and then every node nothing reads any more."""
    keep = [n for n in graph.node if not set(n.output) <= now_weights]
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for n in keep for name in n.input} | outputs
        left = [n for n in keep if any(o in read for o in n.output)]
        if len(left) == len(keep):
            break
        keep = left
    del graph.node[:]
    graph.node.extend(keep)
