"""trtbuild.backends.quantize on a small ONNX graph: the Q/DQ TensorRT's explicit quantization
asks for (zero point 0, per-channel weights, per-tensor activations; fp8 E4M3 at amax / 448;
int4 as blocked DequantizeLinear), made by onnxruntime.quantization and run by ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtbuild.backends.quantize import quantized


def small_graph(folder: Path) -> Path:
    """Conv -> Relu -> pool -> Gemm -> Relu -> Gemm, with every value also an output."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], "relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], "pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], "flat"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["fc1"], "fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu_1"], "relu_1"),
        helper.make_node("Gemm", ["relu_1", "w3", "b3"], ["out"], "fc2", transB=1),
    ]
    weights = [init("w1", 8, 4, 3, 3), init("b1", 8), init("w2", 128, 8), init("b2", 128)]
    weights += [init("w3", 16, 128), init("b3", 16)]
    values = ["conv", "relu", "pool", "flat", "fc1", "relu_1", "out"]
    graph = helper.make_graph(
        nodes,
        "part",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, None) for v in values],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = folder / "part.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="part.onnx.data")
    return path


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


def table(path: Path, folder: Path) -> Path:
    """Min/max of every value over a few random samples (the calibration's table format)."""
    ranges: dict[str, list[float]] = {}
    for k in range(4):
        x = np.random.default_rng(k).standard_normal((2, 4, 8, 8)).astype(np.float32)
        for name, value in {"x": x, **run(path, x)}.items():
            low, high = ranges.setdefault(name, [float(value.min()), float(value.max())])
            ranges[name] = [min(low, float(value.min())), max(high, float(value.max()))]
    tensors = {n: {"min": lo, "max": hi} for n, (lo, hi) in ranges.items()}
    out = folder / "calibration.json"
    out.write_text(json.dumps({"format": 1, "method": "minmax", "samples": 4, "tensors": tensors}))
    return out


def initializers(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float32) - b) / np.linalg.norm(b))


def test_int8_is_symmetric_per_channel_qdq(tmp_path: Path) -> None:
    part = small_graph(tmp_path)
    settings = {"precision": "int8", "calibration_table": str(table(part, tmp_path))}
    out = quantized(part, settings)
    model = onnx.load(str(out), load_external_data=False)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    values = initializers(out)
    zero_points = [values[n.input[2]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert all(z.dtype in (np.int8, np.int32) and not z.any() for z in zero_points)  # symmetric
    weight_dq = next(
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and "w1" in n.input[0]
    )
    assert values[weight_dq.input[1]].shape == (8,)  # per output channel
    act_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    assert values[act_q.input[1]].shape == ()  # per tensor
    x = np.random.default_rng(9).standard_normal((2, 4, 8, 8)).astype(np.float32)
    assert rel(run(out, x)["out"], run(part, x)["out"]) < 0.05


def test_fp8_scales_activations_at_amax_over_448(tmp_path: Path) -> None:
    part = small_graph(tmp_path)
    calib = table(part, tmp_path)
    out = quantized(part, {"precision": "fp8", "calibration_table": str(calib), "tensorrt": {}})
    model = onnx.load(str(out), load_external_data=False)
    values = {i.name: i for i in model.graph.initializer}
    act_q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    assert values[act_q.input[2]].data_type == TensorProto.FLOAT8E4M3FN
    scale = float(numpy_helper.to_array(values[act_q.input[1]]))
    x_range = json.loads(calib.read_text())["tensors"]["x"]
    assert scale == pytest.approx(max(-x_range["min"], x_range["max"]) / 448, rel=1e-5)


def test_int4_for_tensorrt_is_blocked_dequantize_linear(tmp_path: Path) -> None:
    part = small_graph(tmp_path)
    settings = {"precision": "int4", "quantize": {"block": 32}, "tensorrt": {}}
    out = quantized(part, settings)
    model = onnx.load(str(out), load_external_data=False)
    blocked = [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute)
    ]
    assert blocked  # fc2's 16x128 weight: 4 blocks of 32 per output
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert TensorProto.INT4 in {types.get(n.input[0]) for n in blocked}
    x = np.random.default_rng(9).standard_normal((2, 4, 8, 8)).astype(np.float32)
    assert rel(run(out, x)["out"], run(part, x)["out"]) < 0.2


def linear_3d(folder: Path) -> Path:
    """A Linear on a 3-D input as the exporter writes it: MatMul(x, Transpose(W)) + Add(b)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w__fc__weight")
    b = numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "w__fc__bias")
    nodes = [
        helper.make_node("Transpose", ["w__fc__weight"], ["t"], "t", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "t"], ["mm"], "mm"),
        helper.make_node("Add", ["mm", "w__fc__bias"], ["out"], "add"),
    ]
    graph = helper.make_graph(
        nodes,
        "part",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 128])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 1, 64])],
        [w, b],
    )
    path = folder / "part.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path), save_as_external_data=True, location="part.onnx.data")
    return path


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_a_transposed_weight_is_quantized_too(tmp_path: Path, precision: str) -> None:
    """The exporter's MatMul(x, Transpose(W)): the weight is folded, then quantized (it was left
    at fp32: an int8 MLP engine measured as large as its fp32 one)."""
    part = linear_3d(tmp_path)
    x = np.random.default_rng(1).standard_normal((2, 1, 128)).astype(np.float32)
    tensors = {
        "x": {"min": -5.0, "max": 5.0},
        "out": {"min": -40.0, "max": 40.0},  # mm's: out's less the bias (the exporter's name)
    }
    (tmp_path / "t.json").write_text(json.dumps({"tensors": tensors}))
    settings = {
        "precision": precision,
        "calibration_table": str(tmp_path / "t.json"),
        "quantize": {"block": 32},
    }
    out = quantized(part, settings)
    model = onnx.load(str(out))
    kinds = {i.data_type for i in model.graph.initializer}
    assert (TensorProto.INT8 if precision == "int8" else TensorProto.UINT8) in kinds
    floats = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert all(np.prod(i.dims) < 64 * 128 for i in floats)  # no fp32 copy of the weight left
    assert rel(run_x(out, x), run_x(part, x)) < 0.1


def run_x(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])
