"""A quantized target's part ONNX (build process side, no torch): the part's fp32 ONNX with
Q/DQ, made by onnxruntime.quantization before the backend builds it.

- int8: static QDQ, as TensorRT's explicit quantization wants it: symmetric (zero point 0),
  weights per channel, activations per tensor, from the calibration table's ranges
  (trtbuild.check.calibrate; names are the ONNX value names). A node with a float activation the
  table has no range for (a value the exporter made inside one op) stays at fp32.
- int4: weight-only, blocked, symmetric, MatMul weights (Gemm is rewritten as MatMul + Add
  first): MatMulNBits, which ONNX Runtime runs and TensorRT reads as blocked DequantizeLinear.
- fp8 (TensorRT): Q/DQ in FLOAT8E4M3FN, weights and activations per tensor, from the same table.
- fp16 with modules kept at fp32 (a "mixed" target): ONNX Runtime's float16 converter
  (onnxruntime.transformers.float16), the part's inputs and outputs kept at their types and the
  kept modules' nodes at fp32, Casts between; a strongly typed TensorRT network follows them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtbuild.backends.constfold import fold_constants
from trtbuild.backends.keep import kept_nodes

QUANTIZED = ("int8", "int4", "fp8")


def quantized(onnx_path: Path, settings: Mapping[str, Any]) -> Path:
    """The ONNX the backend builds: `onnx_path` itself, or its quantized copy beside it."""
    precision = settings.get("precision")
    if precision == "fp16" and "mixed" in settings:
        out = onnx_path.with_name(f"{onnx_path.stem}.fp16.onnx")
        _fp16(onnx_path, out, list(settings["mixed"]["keep"]))
        return out
    if precision not in QUANTIZED:
        return onnx_path
    out = onnx_path.with_name(f"{onnx_path.stem}.{precision}.onnx")
    keep = list(settings.get("quantize", {}).get("keep", []))
    onnx_path = fold_constants(onnx_path, out.with_name(f"{onnx_path.stem}.constants.onnx"))
    onnx_path = _fold_weight_transposes(onnx_path, out.with_name(f"{onnx_path.stem}.folded.onnx"))
    if precision == "int4":  # TensorRT reads blocked DequantizeLinear, not MatMulNBits
        _int4(onnx_path, out, int(settings["quantize"]["block"]), "tensorrt" in settings, keep)
    else:
        _qdq(onnx_path, out, Path(settings["calibration_table"]), precision, keep)
    return out


def _qdq(onnx_path: Path, out: Path, table_path: Path, precision: str, keep: list[str]) -> None:
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    table = json.loads(table_path.read_text())["tensors"]
    model = onnx.load(str(onnx_path), load_external_data=False)
    floats = _float_values(model)
    ranges = _with_bias_sums({n: table[n] for n in floats if n in table}, model, onnx_path)
    exclude = [
        node.name
        for node in model.graph.node
        if any(v in floats and v not in ranges for v in [*node.input, *node.output])
    ] + kept_nodes(model, keep)
    cache = out.with_name(out.stem + ".ranges.json")
    method = CalibrationMethod.MinMax if precision == "int8" else CalibrationMethod.Distribution
    data = {
        n: TensorData(
            lowest=np.float32(r["min"]),
            highest=np.float32(r["max"]),
            **(_fp8_std(max(abs(r["min"]), abs(r["max"]))) if precision == "fp8" else {}),
        )
        for n, r in ranges.items()
    }
    save_tensors_data(TensorsData(method, data), cache)
    kind = QuantType.QInt8 if precision == "int8" else QuantType.QFLOAT8E4M3FN
    quantize_static(
        str(onnx_path),
        str(out),
        None,
        quant_format=QuantFormat.QDQ,
        per_channel=precision == "int8",
        activation_type=kind,
        weight_type=kind,
        nodes_to_exclude=exclude,
        use_external_data_format=True,
        calibrate_method=method,
        calibration_cache_path=str(cache),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )


def _fp16(onnx_path: Path, out: Path, keep: list[str]) -> None:
    """The part at fp16, the nodes of the modules `keep` names at fp32 (see the module docstring)."""
    import onnx

    from trtbuild.model.onnxparts import save_fp16

    model = onnx.load(str(onnx_path))
    save_fp16(model, out, kept_nodes(model, keep))


def _fold_weight_transposes(onnx_path: Path, folded: Path) -> Path:
    """`onnx_path`, or a copy at `folded` where every Transpose of a weight is the transposed
    weight: a Linear on a 3-D input is exported as MatMul(x, Transpose(W)), and the quantizers
    take only a weight that feeds MatMul directly. A weight nothing else reads keeps its name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    if not any(n.op_type == "Transpose" and n.input[0] in weights for n in model.graph.node):
        return onnx_path
    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rename: dict[str, str] = {}
    nodes = []
    for node in graph.node:
        source = inits.get(node.input[0]) if node.op_type == "Transpose" else None
        if source is None:
            nodes.append(node)
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        array = numpy_helper.to_array(source).transpose(perm).copy()
        name = source.name if uses[source.name] == 1 else f"{source.name}__T"
        if name == source.name:
            graph.initializer.remove(source)
        graph.initializer.append(numpy_helper.from_array(array, name))
        rename[node.output[0]] = name
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    for output in graph.output:
        output.name = rename.get(output.name, output.name)
    del graph.node[:]
    graph.node.extend(nodes)
    stale = {*rename, *rename.values()}  # shapes recorded for the old layout: inferred again
    for values in (graph.value_info, graph.input):
        for value in [v for v in values if v.name in stale]:
            values.remove(value)
    onnx.save(model, str(folded), save_as_external_data=True, location=folded.name + ".data")
    return folded


def _fp8_std(amax: float) -> dict[str, Any]:
    """onnxruntime scales fp8 activations by their std (std / the std of the E4M3 values); the
    std that gives TensorRT's scale instead: amax / 448, the largest E4M3 value."""
    import numpy as np
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp_float8

    _, per_std = compute_scale_zp_float8(TensorProto.FLOAT8E4M3FN, np.float32(1.0))
    return {"avg": np.float32(0.0), "std": np.float32(amax / 448.0 / float(per_std))}


def _with_bias_sums(
    ranges: dict[str, dict[str, float]], model: Any, onnx_path: Path
) -> dict[str, dict[str, float]]:
    """`ranges` and those of values the exporter made inside one op, as a Linear on a 3-D input
    (MatMul, then Add of its bias): y = u + b with y in the table bounds u to
    [min y - max b, max y - min b]."""
    from onnx import numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor

    weights = {i.name: i for i in model.graph.initializer}
    out = dict(ranges)
    for node in model.graph.node:
        if node.op_type != "Add" or node.output[0] not in ranges or len(node.input) != 2:
            continue
        unranged = [v for v in node.input if v not in weights and v not in out]
        bias = [v for v in node.input if v in weights]
        if len(unranged) != 1 or len(bias) != 1:
            continue
        tensor = weights[bias[0]]
        if tensor.data_location == tensor.EXTERNAL:
            load_external_data_for_tensor(tensor, str(onnx_path.parent))
        b = numpy_helper.to_array(tensor)
        y = ranges[node.output[0]]
        out[unranged[0]] = {"min": y["min"] - float(b.max()), "max": y["max"] - float(b.min())}
    return out


def _float_values(model: Any) -> set[str]:
    """Names of the float32 activations of a graph (not its weights), by shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    weights = {i.name for i in model.graph.initializer}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {
        v.name
        for v in values
        if v.name not in weights and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }


def _int4(onnx_path: Path, out: Path, block: int, qdq: bool, keep: list[str]) -> None:
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(onnx_path))
    kept = kept_nodes(model, keep)  # before the rewrite (it keeps node names, not weight names)
    _gemm_as_matmul(model)
    quantizer = MatMulNBitsQuantizer(
        model,
        block_size=block,
        is_symmetric=True,
        nodes_to_exclude=kept,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=("MatMul",) if qdq else ("MatMul", "Gather"),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=True)


def _gemm_as_matmul(model: Any) -> None:
    """Gemm(A, B, C) with a weight B (alpha = beta = 1, A not transposed) as MatMul + Add, so
    the weight-only quantizer (MatMul only) takes it."""
    import onnx
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if (
            node.op_type != "Gemm"
            or node.input[1] not in weights
            or attrs.get("transA", 0)
            or not plain
        ):
            nodes.append(node)
            continue
        b, inputs = weights[node.input[1]], list(node.input[:2])
        if attrs.get("transB", 0):  # the weight as MatMul reads it: a copy if others read it too
            array = numpy_helper.to_array(b).T.copy()
            if uses[b.name] > 1:
                inputs[1] = f"{b.name}__t_{node.name}"
                model.graph.initializer.append(numpy_helper.from_array(array, inputs[1]))
            else:
                b.CopyFrom(numpy_helper.from_array(array, b.name))
        product = node.output[0] + "__matmul" if len(node.input) > 2 else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", inputs, [product], node.name))
        if len(node.input) > 2:
            nodes.append(
                onnx.helper.make_node(
                    "Add", [product, node.input[2]], node.output, node.name + "_bias"
                )
            )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
