"""Constant subgraphs of a part's ONNX folded before quantizing (trtbuild.backends.constfold):
real exported models, weights stored apart as the part exporter writes them, run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from trtbuild.backends.constfold import fold_constants


def exported(folder: Path) -> Path:
    """Conv (no bias), BatchNorm, ReLU, Conv as torch.onnx writes it (optimize=False), weights in
    a data file beside it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False)
    ).eval()
    program = torch.onnx.export(
        model, (torch.randn(1, 3, 16, 16),), dynamo=True, optimize=False, verbose=False
    )
    path = folder / "part.onnx"
    assert program is not None
    program.save(str(path), external_data=True)
    return path


def test_a_convolutions_zero_bias_becomes_a_weight(tmp_path: Path) -> None:
    path = exported(tmp_path)
    before = onnx.load(str(path), load_external_data=False)
    assert "CastLike" in {n.op_type for n in before.graph.node}  # the bias is computed
    folded = fold_constants(path, tmp_path / "part.constants.onnx")
    assert folded != path
    model = onnx.load(str(folded), load_external_data=False)
    assert [n.op_type for n in model.graph.node] == ["Conv", "BatchNormalization", "Relu", "Conv"]
    weights = {i.name: i for i in model.graph.initializer}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        bias = weights[conv.input[2]]  # a weight of the same name, inline and zero
        assert bias.data_location != onnx.TensorProto.EXTERNAL
        assert not onnx.numpy_helper.to_array(bias).any()
    assert weights[model.graph.node[0].input[1]].data_location == onnx.TensorProto.EXTERNAL
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
    want, got = (ort.InferenceSession(str(p)).run(None, {"input": x})[0] for p in (path, folded))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # fused differently by ORT


def test_a_graph_without_computed_constants_is_left_as_it_is(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    assert fold_constants(path, tmp_path / "relu.constants.onnx") == path
    assert not (tmp_path / "relu.constants.onnx").exists()
