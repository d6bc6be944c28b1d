"""ONNX files as sources (`source = "onnx:<file>"`): planned without weights, split by budget, each
part carrying only its own initializers, checked against ONNX Runtime on the original file."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import trtbuild
from tests.conftest import REPO
from trtbuild.cli import main
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.build import BuildResult, Options, build
from trtbuild.planner.memory import MemoryModel, Stage

MiB = 1 << 20


@pytest.fixture(scope="session")
def detector_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recipes/models/make_detector_onnx.py's detector at width 192 (20 MB of weights): made once."""
    sys.path.insert(0, str(REPO / "recipes" / "models"))
    try:
        from make_detector_onnx import write
    finally:
        sys.path.pop(0)
    return write(tmp_path_factory.mktemp("detector") / "det.onnx", width=192)


def _recipe(folder: Path, body: str, name: str = "onnx_test") -> Path:
    recipe = folder / f"{name}.toml"
    recipe.write_text(f'[recipe]\nname = "{name}"\n\n{body}')
    return recipe


DETECTOR = """
[[model]]
name = "det"
source = "onnx:models/det.onnx"
precisions = {precisions}
budget = {{ host_memory = "{budget}" }}
[[model.inputs]]
name = "image"
shape = {{ min = [1, 3, 32, 32], opt = [2, 3, 32, 32], max = [2, 3, 64, 64] }}
"""


def _detector(
    tmp_path: Path, files: Path, budget: str = "140MiB", precisions: str = '["fp32"]'
) -> Path:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for f in files.parent.iterdir():
        shutil.copy(f, models / f.name)
    return _recipe(tmp_path, DETECTOR.format(budget=budget, precisions=precisions))


def _processes(result: BuildResult) -> list[dict[str, Any]]:
    out = [p for t in result.targets for part in t.parts for p in part.record["processes"]]
    return out + [p for t in result.targets for p in (t.check or {}).get("processes", [])]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def test_an_onnx_model_builds_split_by_its_budget_and_equals_onnx_runtime(
    tmp_path: Path, detector_files: Path
) -> None:
    recipe = _detector(tmp_path, detector_files, precisions='["fp32", "fp16"]')
    result = build(recipe, Options(precisions=["fp32"]))  # at 140 MiB: split
    (fp32,) = result.targets
    assert len(fp32.plan.parts) >= 2, fp32.plan
    # fp16: ONNX Runtime's converter holds a part ~4x over: one part at 180 MiB
    halved = build(recipe, Options(precisions=["fp16"], budget=180 * MiB))
    (fp16,) = halved.targets
    for run, budget in ((result, 140 * MiB), (halved, 180 * MiB)):
        assert all(p["peak_rss_bytes"] <= budget for p in _processes(run)), _processes(run)
    # each part's ONNX held only its own initializers
    loaded = [set(part.record["processes"][0]["weights_loaded"]) for part in fp32.parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(loaded) for b in loaded[i + 1 :])
    assert fp32.check["passed"] and fp16.check["passed"]
    original = ort.InferenceSession(str(detector_files), providers=["CPUExecutionProvider"])
    engines = {t.precision: trtbuild.load(t.dir) for t in (fp32, fp16)}
    for shape in ([1, 3, 32, 32], [2, 3, 32, 32], [2, 3, 64, 64]):  # min, opt, max
        image = np.random.default_rng(shape[-1]).standard_normal(shape, dtype=np.float32)
        scores, boxes = original.run(None, {"image": image})
        for precision, tolerance in (("fp32", 1e-6), ("fp16", 1e-2)):
            got = engines[precision](torch.from_numpy(image))
            assert _rel(got[0].numpy(), scores) < tolerance, (precision, shape)
            assert _rel(got[1].numpy(), boxes) < tolerance, (precision, shape)


def test_editing_one_initializer_rebuilds_only_the_part_that_holds_it(
    tmp_path: Path, detector_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _detector(tmp_path, detector_files)
    (target,) = build(recipe, Options()).targets
    model = onnx.load(str(tmp_path / "models" / "det.onnx"), load_external_data=False)
    weight = next(t for t in model.graph.initializer if t.dims and t.dims[0] == 4)  # the box head
    where = {e.key: e.value for e in weight.external_data}
    with open(tmp_path / "models" / where["location"], "r+b") as f:
        f.seek(int(where["offset"]))
        f.write(np.full(4, 0.5, dtype=np.float32).tobytes())
    holding = [p.index for p in target.plan.parts if weight.name in p.weights]
    assert main(["explain", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert f"part {holding[0]}: would rebuild: weights changed ({weight.name})" in out, out
    (again,) = build(recipe, Options()).targets
    assert [p.index for p in again.parts if not p.cached] == holding
    assert again.check["passed"]


def _graph(
    nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], **kw: Any
) -> Any:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw)


def _mlp(folder: Path, size: int = 64) -> Path:
    """x -> MatMul(w0) -> Relu -> MatMul(w1) -> y, weights as external data."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), f"w{i}")
        for i in range(2)
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w1"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, size])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlp.onnx"
    onnx.save(
        _graph(nodes, [x], [y], inits),
        str(path),
        save_as_external_data=True,
        location="mlp.onnx.data",
        size_threshold=0,
    )
    return path


MLP = """
[[model]]
name = "mlp"
source = "onnx:models/mlp.onnx"
precisions = ["fp32"]
inputs = [{ name = "x", shape = [2, 64] }]
"""


def _relocate(path: Path, tensor: str, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    init = next(t for t in model.graph.initializer if t.name == tensor)
    for entry in init.external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("parent", "initializer 'w1': external data location '../secret.bin' is not a file inside"),
        (
            "absolute",
            "initializer 'w1': external data location '/etc/hostname' is not a file inside",
        ),
        (
            "link",
            "initializer 'w1': external data location 'link.bin' leads outside the model's folder",
        ),
        ("short", "shorter than the tensor's 16384 bytes"),
        ("truncated", "not a readable ONNX model (truncated or malformed protobuf"),
    ],
)
def test_untrusted_files_are_refused_in_one_line(
    tmp_path: Path, damage: str, expected: str
) -> None:
    path = _mlp(tmp_path / "models")
    (tmp_path / "secret.bin").write_bytes(b"\0" * 32768)
    if damage == "parent":
        _relocate(path, "w1", "../secret.bin")
    elif damage == "absolute":
        _relocate(path, "w1", "/etc/hostname")
    elif damage == "link":
        (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
        _relocate(path, "w1", "link.bin")
    elif damage == "short":
        data = path.with_name("mlp.onnx.data")
        data.write_bytes(data.read_bytes()[:20000])
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    recipe = _recipe(tmp_path, MLP)
    with pytest.raises(TrtbuildError) as caught:
        build(recipe, Options())
    message = str(caught.value)
    assert expected in message and "\n" not in message.strip(), message
    assert "mlp.onnx" in message or "models" in message, message


def test_recipe_inputs_or_outputs_that_do_not_match_the_graph_are_one_error(tmp_path: Path) -> None:
    _mlp(tmp_path / "models")
    recipe = _recipe(tmp_path, MLP.replace('name = "x"', 'name = "tokens"'))
    with pytest.raises(
        TrtbuildError,
        match=r"the recipe's inputs \['tokens'\] do not match the ONNX graph's inputs \['x'\]",
    ):
        build(recipe, Options())
    recipe = _recipe(tmp_path, MLP.replace("inputs = [", 'outputs = ["logits"]\ninputs = ['))
    with pytest.raises(
        TrtbuildError,
        match=r"field 'outputs': 'logits' is not an output of the ONNX graph \(its outputs: \['y'\]\)",
    ):
        build(recipe, Options())
    for shape in ("[2, 32]", "{ min = [2, 64], opt = [2, 64], max = [2, 128] }"):
        recipe = _recipe(tmp_path, MLP.replace("shape = [2, 64]", f"shape = {shape}"))
        with pytest.raises(TrtbuildError, match=r"input 'x' has shape \[2, 64\] in the ONNX graph"):
            build(recipe, Options())
    recipe = _recipe(
        tmp_path, MLP.replace('precisions = ["fp32"]', 'precisions = ["fp32", "bf16"]')
    )
    with pytest.raises(
        TrtbuildError,
        match=r"precision 'bf16' \(field 'precisions'\) is not built from an ONNX source yet",
    ):
        build(recipe, Options())


def _qdq(folder: Path, source: Path) -> Path:
    """`source` quantized by ONNX Runtime's quantizer (QDQ format, int8, per channel)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Samples(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.left = [
                {"image": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)
            ]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "qdq.onnx"
    quantize_static(
        str(source),
        str(out),
        Samples(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return out


def test_a_qdq_graph_builds_and_no_part_boundary_falls_between_a_q_and_its_dq(
    tmp_path: Path, detector_files: Path
) -> None:
    path = _qdq(tmp_path / "models", detector_files)
    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    assert "QuantizeLinear" in producer.values() and "DequantizeLinear" in producer.values()
    body = DETECTOR.format(budget="1GiB", precisions='["fp32"]').replace("det.onnx", "qdq.onnx")
    recipe = _recipe(tmp_path, body)
    counts = []
    for factor in (380.0, 250.0, 150.0):  # several budgets, as a share of the 5 MB of weights
        split = MemoryModel(Stage(0, factor), Stage(0, factor), f"test: {factor} x weights")
        recipe.with_suffix(".lock").unlink(missing_ok=True)  # a memory override is no input
        (target,) = build(recipe, Options(memory_override=split)).targets
        counts.append(len(target.plan.parts))
        crossing = {t.name for p in target.plan.parts for t in p.inputs if t.from_part is not None}
        assert not {producer[t] for t in crossing} & {"QuantizeLinear", "DequantizeLinear"}
        assert target.check["passed"]
    assert max(counts) >= 2 and len(set(counts)) >= 2, counts


def test_a_custom_operator_builds_and_runs_with_its_plugin_library(tmp_path: Path) -> None:
    """y = tanh(x (x^T x + 2I)^-1 w2) with a dynamic batch: the inverse is a custom operator
    (onnxruntime-extensions), so inference cannot type what follows it but the declared output;
    fp16 keeps the custom op at fp32 (it has no fp16 kernel)."""
    if importlib.util.find_spec("onnxruntime_extensions") is None:
        pytest.skip("onnxruntime-extensions is not installed (pip install onnxruntime-extensions)")
    from onnxruntime_extensions import get_library_path

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.eye(8, dtype=np.float32) * 2, "eye"),
        numpy_helper.from_array(rng.standard_normal((8, 4), dtype=np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"]),
        helper.make_node("MatMul", ["xt", "x"], ["gram"]),
        helper.make_node("Add", ["gram", "eye"], ["b"]),
        helper.make_node("Inverse", ["b"], ["c"], domain="ai.onnx.contrib"),  # no ONNX schema
        helper.make_node("MatMul", ["x", "c"], ["d"]),
        helper.make_node("MatMul", ["d", "w2"], ["e"]),
        helper.make_node("Tanh", ["e"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    model = _graph(nodes, [x], [y], inits)
    model.opset_import.append(helper.make_opsetid("ai.onnx.contrib", 1))
    (tmp_path / "models").mkdir()
    onnx.save(model, str(tmp_path / "models" / "inverse.onnx"))
    body = f"""
[[model]]
name = "inverse"
source = "onnx:models/inverse.onnx"
precisions = ["fp32", "fp16"]
plugins = ["{get_library_path()}"]
inputs = [{{ name = "x", shape = {{ min = [2, 8], opt = [4, 8], max = [6, 8] }} }}]
"""
    recipe = _recipe(tmp_path, body)
    split = MemoryModel(Stage(0, 6e6), Stage(0, 6e6), "test: 6e6 x weights")  # 384 B at 2 GiB
    fp32, fp16 = build(recipe, Options(memory_override=split)).targets
    assert len(fp32.plan.parts) >= 2 and fp32.check["passed"] and fp16.check["passed"]
    ops = {o["name"]: o["target"] for o in fp32.graph_job.graph["ops"]}
    assert "ai.onnx.contrib::Inverse+MatMul+MatMul+Tanh" in ops.values(), ops  # kept together
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    original = ort.InferenceSession(str(tmp_path / "models" / "inverse.onnx"), options)
    for rows in (2, 4, 6):
        sample = rng.standard_normal((rows, 8), dtype=np.float32)
        want = original.run(None, {"x": sample})[0]
        assert _rel(trtbuild.load(fp32.dir)(torch.from_numpy(sample)).numpy(), want) < 1e-6
        assert _rel(trtbuild.load(fp16.dir)(torch.from_numpy(sample)).numpy(), want) < 1e-2
    if importlib.util.find_spec("tritonclient") is not None:  # a Triton repository loads it too
        from tests.test_deploy import deploy, walk

        deploy(recipe, tmp_path / "repo")
        (served,) = walk(tmp_path / "repo", "inverse_fp32", {"x": sample})
        assert _rel(served, want) < 1e-6
    recipe.write_text(recipe.read_text().replace(f'plugins = ["{get_library_path()}"]', ""))
    with pytest.raises(TrtbuildError, match="Inverse"):
        build(recipe, Options(memory_override=split, cache=tmp_path / "other"))


@pytest.mark.slow
def test_a_model_over_the_protobuf_limit_builds_at_a_1gib_budget(tmp_path: Path) -> None:
    """Nine 4096x16384 float32 MatMuls: 2.25 GiB of external data, over protobuf's 2 GB limit."""
    folder = tmp_path / "models"
    folder.mkdir()
    count, rows, cols = 9, 4096, 16384
    inits, nodes, name = [], [], "x"
    with open(folder / "big.onnx.data", "wb") as data:
        for i in range(count):
            shape = (rows, cols) if i % 2 == 0 else (cols, rows)
            weight = np.random.default_rng(i).standard_normal(shape, dtype=np.float32) / 128
            tensor = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=shape)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", "big.onnx.data"),
                ("offset", str(data.tell())),
                ("length", str(weight.nbytes)),
            ):
                tensor.external_data.add(key=key, value=value)
            data.write(weight.tobytes())
            del weight
            inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [name, f"w{i}"], [f"h{i}"]))
            name = f"h{i}"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])
    y = helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, cols])
    onnx.save(_graph(nodes, [x], [y], inits), str(folder / "big.onnx"))
    assert (folder / "big.onnx.data").stat().st_size > 2 * 10**9
    body = f"""
[[model]]
name = "big"
source = "onnx:models/big.onnx"
precisions = ["fp32"]
budget = {{ host_memory = "1GiB" }}
inputs = [{{ name = "x", shape = [1, {rows}] }}]
"""
    result = build(_recipe(tmp_path, body), Options())
    (target,) = result.targets
    assert len(target.plan.parts) >= 3
    assert all(p["peak_rss_bytes"] <= 1 << 30 for p in _processes(result)), _processes(result)
    assert target.check["passed"]


def test_a_transformers_model_exported_to_onnx_builds_split_and_equals_onnx_runtime(
    tmp_path: Path,
) -> None:
    """GPT-2 (random init, 2 layers) as `optimum`-style users have it: an ONNX file of its logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=500, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    model.config.use_cache = False

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, use_cache=False).logits

    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "gpt2.onnx"
    torch.onnx.export(
        Logits(),
        (torch.ones(2, 8, dtype=torch.int64),),  # not 1: torch.export specializes size 1
        str(path),
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")},),
        opset_version=18,
        external_data=True,
    )
    body = """
[[model]]
name = "gpt2"
source = "onnx:models/gpt2.onnx"
precisions = ["fp32"]
[[model.inputs]]
name = "input_ids"
dtype = "int64"
values = [0, 500]
shape = { min = [1, 4], opt = [2, 16], max = [2, 32] }
"""
    split = MemoryModel(Stage(0, 5e3), Stage(0, 5e3), "test: 5e3 x weights")  # 0.5 MB
    (target,) = build(_recipe(tmp_path, body), Options(memory_override=split)).targets
    assert len(target.plan.parts) >= 2 and target.check["passed"], target.plan
    original = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    engine = trtbuild.load(target.dir)
    for shape in ([1, 4], [2, 16], [2, 32]):
        ids = np.random.default_rng(shape[1]).integers(0, 500, shape)
        want = original.run(None, {"input_ids": ids})[0]
        assert _rel(engine(torch.from_numpy(ids)).numpy(), want) < 1e-6, shape


def test_control_flow_builds_at_fp32_and_fp16(tmp_path: Path) -> None:
    """An If whose branches read an outer-scope tensor, with a dynamic batch: fp16 keeps the If at
    fp32 (ONNX Runtime's converter breaks SSA form in its branches otherwise)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4), dtype=np.float32), "w")
    zero = numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero")

    def branch(name: str, op: str) -> Any:
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)
        return helper.make_graph([helper.make_node(op, ["h"], [f"{name}_out"])], name, [], [out])

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceSum", ["h"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node(
            "If",
            ["positive"],
            ["y"],
            then_branch=branch("then", "Relu"),
            else_branch=branch("else", "Neg"),
        ),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    (tmp_path / "models").mkdir()
    onnx.save(_graph(nodes, [x], [y], [w, zero]), str(tmp_path / "models" / "if.onnx"))
    body = """
[[model]]
name = "branchy"
source = "onnx:models/if.onnx"
precisions = ["fp32", "fp16"]
inputs = [{ name = "x", shape = { min = [1, 4], opt = [3, 4], max = [5, 4] } }]
"""
    fp32, fp16 = build(_recipe(tmp_path, body), Options()).targets
    assert fp32.check["passed"] and fp16.check["passed"]
    assert fp16.parts[0].record["processes"][0]["kept_fp32"].startswith("control flow")
    original = ort.InferenceSession(str(tmp_path / "models" / "if.onnx"))
    for rows in (1, 3, 5):
        for sign in (1.0, -1.0):
            sample = sign * np.abs(rng.standard_normal((rows, 4), dtype=np.float32))
            want = original.run(None, {"x": sample})[0]
            got = trtbuild.load(fp16.dir)(torch.from_numpy(sample)).numpy()
            assert _rel(got, want) < 1e-2, (rows, sign)
