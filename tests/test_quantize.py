"""Quantized builds (issue 23): int8 from calibration data, int4 weight-only, fp8's one error.

Real models, real calibration and build processes, real ONNX Runtime engines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import trtbuild
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.explain import explain
from trtbuild.orchestrate.planning import plan_targets
from trtbuild.planner.memory import MemoryModel, Stage
from trtbuild.recipe.load import load_recipe

DATA = Path(__file__).resolve().parent / "data"
SHAPE = (8, 3, 16, 16)  # the recipe's input: a batch of 8 RGB 16x16 images
CLASSES = 4


def images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable synthetic classes: a fixed random pattern per class (seed 0) plus noise."""
    patterns = torch.randn(CLASSES, *SHAPE[1:], generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (count,), generator=gen)
    x = patterns[labels] + 1.5 * torch.randn(count, *SHAPE[1:], generator=gen)
    return x, labels


def trained_cnn(folder: Path) -> Path:
    """A SmallCNN trained for a few seconds on `images`; its state dict as safetensors."""
    import importlib.util

    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("cnn", DATA / "models" / "cnn.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.small_cnn()
    x, y = images(2048, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(120):
        batch = slice((step * 64) % 2048, (step * 64) % 2048 + 64)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held, labels = images(256, seed=2)
        assert (model(held).argmax(1) == labels).float().mean() > 0.95  # it learned the classes
    path = folder / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_samples(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x, _ = images(count * SHAPE[0], seed)
    for k in range(count):
        np.savez(folder / f"s{k:03d}.npz", x=x[k * 8 : (k + 1) * 8].numpy())


def project(folder: Path, model: str, recipe: str) -> Path:
    """`folder` holding tests/data/models/<model>.py under models/ and `recipe` as <model>.toml."""
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "models" / f"{model}.py").write_text((DATA / "models" / f"{model}.py").read_text())
    path = folder / f"{model}.toml"
    path.write_text(recipe)
    return path


def cnn_recipe(
    folder: Path,
    precisions: str = '["fp32", "int8"]',
    extra: str = "",
    weights: str = '"cnn.safetensors"',
) -> Path:
    return project(
        folder,
        "cnn",
        f"""[recipe]
name = "cnn"
[defaults]
backend = "onnxruntime"
precisions = {precisions}
[[model]]
name = "cnn"
source = "models/cnn.py:small_cnn"
weights = {weights}
[[model.inputs]]
name = "x"
shape = {list(SHAPE)}
[model.check]
data = "check/*.npz"
{extra}""",
    )


CALIBRATION = '[model.calibration]\ndata = "calib/*.npz"\nsamples = 16\nmethod = "minmax"\n'


def engine_bytes(folder: Path) -> int:
    """Every file of a target's engines (the graphs and their weights), not its JSON records."""
    return sum(f.stat().st_size for f in folder.iterdir() if f.suffix != ".json")


def test_int8_cnn_agrees_with_fp32_at_a_third_of_the_bytes(tmp_path: Path) -> None:
    trained_cnn(tmp_path)
    write_samples(tmp_path / "calib", 16, seed=3)
    write_samples(tmp_path / "check", 2, seed=4)
    recipe = cnn_recipe(tmp_path, extra=CALIBRATION)
    result = build(recipe)
    assert [t.precision for t in result.targets] == ["fp32", "int8"]
    assert all(t.check and t.check["passed"] for t in result.targets), [
        t.check for t in result.targets
    ]
    int8_dir = Path("build/cnn/cnn/int8")
    engine = onnx.load(str(int8_dir / result.targets[1].parts[0].engine), load_external_data=False)
    ops = {n.op_type for n in engine.graph.node}
    assert ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv"}, ops
    table = json.loads((int8_dir / "calibration.json").read_text())
    assert table["method"] == "minmax" and table["samples"] == 16
    assert {"x", "relu", "output"} <= set(table["tensors"])
    statement = json.loads(Path("build/cnn/provenance.json").read_text())
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects["cnn/int8/calibration.json"] == result.targets[1].calibration["sha256"]
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert "file:calib/s000.npz" in {d["uri"] for d in deps}  # each sample file, pinned

    fp32, int8 = trtbuild.load("build/cnn/cnn/fp32"), trtbuild.load("build/cnn/cnn/int8")
    held, _ = images(512, seed=5)
    agree = sum(int((fp32(b).argmax(1) == int8(b).argmax(1)).sum()) for b in held.split(SHAPE[0]))
    ratio = engine_bytes(int8_dir) / engine_bytes(Path("build/cnn/cnn/fp32"))
    rel = result.targets[1].check["worst_rel_l2"]
    print(f"int8: top-1 agreement {agree / 512:.4f}, bytes {ratio:.3f}x fp32, rel_l2 {rel:.4f}")
    assert agree / 512 >= 0.99
    assert ratio <= 0.35


def test_int8_quantizes_convolutions_without_a_bias(tmp_path: Path) -> None:
    """ResNet's convolutions have no bias: the exporter gives each a zero bias computed from
    constants (Cast, Expand), which the quantizer took for an activation without a range, so it
    left every convolution at fp32 (ResNet-50's int8 engine was 1.000x its fp32 bytes). Values
    computed from constants are folded into weights first."""
    random = CALIBRATION.replace('"calib/*.npz"', '"random"')
    recipe = cnn_recipe(tmp_path, '["fp32", "int8"]', random, RANDOM_CNN)
    text = recipe.read_text().replace("small_cnn", "norm_cnn")
    recipe.write_text(text.replace('data = "check/*.npz"\n', ""))
    fp32, int8 = build(recipe).targets
    assert int8.check and int8.check["passed"], int8.check
    (engine,) = int8.dir.glob("*.ort.onnx")
    ops = [n.op_type for n in onnx.load(str(engine), load_external_data=False).graph.node]
    assert ops.count("QLinearConv") == 3, ops
    assert engine_bytes(int8.dir) <= 0.3 * engine_bytes(fp32.dir)


def test_int8_needs_a_calibration(tmp_path: Path) -> None:
    recipe = cnn_recipe(tmp_path)
    with pytest.raises(
        TrtbuildError, match=r"cnn\.toml:\d+: model 'cnn': .*needs field 'calibration'"
    ):
        load_recipe(recipe)


def sensor_recipe(folder: Path, extra: str = "") -> Path:
    """The sensor model (tests/data/models/sensor.py) at fp16: its norm's shift (101325) is past
    fp16's largest number."""
    return project(
        folder,
        "sensor",
        f"""[recipe]
name = "sensor"
[defaults]
backend = "onnxruntime"
precisions = ["fp16"]
[[model]]
name = "sensor"
source = "models/sensor.py:sensor_mlp"
{extra}
[[model.inputs]]
name = "x"
shape = [4, 16]
""",
    )


def test_keep_holds_a_module_that_overflows_in_fp16_at_fp32(tmp_path: Path) -> None:
    (failed,) = build(sensor_recipe(tmp_path)).targets
    assert failed.check and not failed.check["passed"]  # fp16 cannot hold the norm's shift
    # the figures cover the finite values only: never "rel_l2 0" alone next to an overflow
    assert (
        "non-finite values (reference finite); the finite ones: rel_l2" in (failed.check["message"])
    )
    assert not (failed.dir / "engine.json").exists()

    (kept,) = build(sensor_recipe(tmp_path, 'keep = { fp32 = ["norm"] }')).targets
    assert kept.check and kept.check["passed"], kept.check
    assert kept.check["worst_rel_l2"] < 1e-2
    engine = onnx.load(str(next(kept.dir.glob("part0*.onnx"))), load_external_data=False)
    dtypes = {i.name: i.data_type for i in engine.graph.initializer}
    assert dtypes["w__norm__shift"] == onnx.TensorProto.FLOAT  # the norm at fp32
    assert dtypes["w__up__weight"] == onnx.TensorProto.FLOAT16  # the rest at fp16


def test_keep_takes_every_op_of_a_module_not_only_those_reading_its_weights(
    tmp_path: Path,
) -> None:
    """An RMS norm squares and averages before it reads its weight: kept at fp32, its Pow and
    ReduceMean are kept too (their ONNX name scopes say which module made them), else the
    square still overflows in fp16 on TensorRT."""
    from trtbuild.backends.keep import kept_nodes

    class RMSNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.head = RMSNorm(), torch.nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(x))

    class Wrapper(torch.nn.Module):  # as trtbuild exports it: the user's model is `model`
        def __init__(self) -> None:
            super().__init__()
            self.model = Net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    path = tmp_path / "net.onnx"
    torch.onnx.export(Wrapper().eval(), (torch.randn(2, 16),), str(path), dynamo=True)
    model = onnx.load(str(path))
    kept = {n.name: n.op_type for n in model.graph.node if n.name in kept_nodes(model, ["norm"])}
    assert {"Pow", "ReduceMean", "Mul"} <= set(kept.values()), kept
    assert "Gemm" not in kept.values()  # the head is not the norm


def test_keep_where_it_cannot_apply_is_one_error(tmp_path: Path) -> None:
    recipe = sensor_recipe(tmp_path, 'keep = { fp32 = ["norm"] }')
    recipe.write_text(recipe.read_text().replace('["fp16"]', '["fp16", "bf16"]'))
    with pytest.raises(TrtbuildError, match=r"sensor\.toml:\d+: .*'keep' applies to .*'bf16'"):
        load_recipe(recipe)
    misspelt = sensor_recipe(tmp_path / "misspelt", 'keep = { fp32 = ["nrom"] }')
    with pytest.raises(TrtbuildError, match=r"'keep': 'nrom' matches no module .*: norm, up"):
        plan_targets(misspelt)  # it would keep nothing, and say nothing
    (tmp_path / "m.onnx").write_bytes(b"")
    text = recipe.read_text().replace('["fp16", "bf16"]', '["fp16"]')
    recipe.write_text(text.replace("models/sensor.py:sensor_mlp", "onnx:m.onnx"))
    with pytest.raises(TrtbuildError, match=r"'keep' needs a model from Python"):
        load_recipe(recipe)


@pytest.mark.slow  # one build and check per module (3), then the kept one: 7 s
def test_precision_search_finds_the_module_that_overflows_in_fp16(tmp_path: Path) -> None:
    result = build(sensor_recipe(tmp_path, "precision_search = true"))
    (target,) = result.targets
    assert target.check and target.check["passed"]
    (note,) = [n for n in result.notes if "precision_search" in n]
    assert 'keep = { fp32 = ["norm"] }' in note, note
    assert (target.dir / "engine.json").is_file()  # published


def test_fp8_on_onnxruntime_is_one_error(tmp_path: Path) -> None:
    write_samples(tmp_path / "calib", 2, seed=3)
    recipe = cnn_recipe(tmp_path, '["fp8"]', CALIBRATION, '{ init = "random", seed = 0 }')
    with pytest.raises(TrtbuildError, match=r"fp8.*needs the tensorrt backend"):
        build(recipe, Options(check=False))


# Counts weights 1500x: the CNN's 0.9 MB of weights make 1.3 GB, two parts at a 1 GiB budget.
SPLIT = MemoryModel(Stage(0, 1500.0), Stage(0, 1500.0), "test: 1500 x weights")
RANDOM_CNN = '{ init = "random", seed = 0 }'


def test_calibration_is_cached_by_data_not_by_budget(tmp_path: Path) -> None:
    write_samples(tmp_path / "calib", 8, seed=3)
    write_samples(tmp_path / "check", 1, seed=4)
    recipe = cnn_recipe(tmp_path, '["int8"]', CALIBRATION, RANDOM_CNN)
    first = build(recipe)
    assert first.targets[0].calibration is not None
    assert not first.targets[0].calibration["cached"]
    assert build(recipe).up_to_date  # a second run: nothing runs, no calibration either
    assert explain(recipe) == ["cnn/int8 part 0: up to date"]

    # another budget, re-planned into two parts: the table is the one of the whole graph
    split = build(recipe, Options(budget=1 << 30, memory_override=SPLIT))
    target = split.targets[0]
    assert len(target.parts) == 2
    assert target.calibration is not None and target.calibration["cached"]
    assert target.check and target.check["passed"]

    changed = tmp_path / "calib" / "s005.npz"
    np.savez(changed, x=np.full(SHAPE, 3.0, dtype=np.float32))
    lines = explain(recipe)
    assert "changed: calib/s005.npz changed" in lines
    assert "cnn/int8 part 0: would build: its calibration is not in the cache" in lines
    again = build(recipe)
    assert again.targets[0].calibration is not None
    assert not again.targets[0].calibration["cached"]  # recalibrated
    assert not any(p.cached for p in again.targets[0].parts)  # and rebuilt
    locked = (tmp_path / "cnn.lock").read_text()
    assert 'path = "calib/s005.npz"' in locked and "[target.calibration]" in locked

    # a new file the glob matches: `run` said "up to date" (the lock pinned only the old ones)
    np.savez(tmp_path / "calib" / "s008.npz", x=np.full(SHAPE, -3.0, dtype=np.float32))
    assert "changed: files matching 'calib/*.npz' changed (new: calib/s008.npz)" in explain(recipe)
    newer = build(recipe)
    assert not newer.up_to_date
    assert newer.targets[0].calibration and not newer.targets[0].calibration["cached"]
    assert build(recipe).up_to_date


GENERATOR = """import numpy as np

OFFSET = 0.0


def samples():
    \"\"\"Calibration samples as a data pipeline makes them, one at a time, without end.\"\"\"
    k = 0
    while True:
        rng = np.random.default_rng(100 + k)
        yield {"x": rng.standard_normal(SHAPE).astype("float32") + OFFSET}
        k += 1
"""


def test_a_sample_of_the_wrong_shape_or_names_is_one_error_naming_both() -> None:
    """A calibration (or check) sample whose array is outside the recipe's shape was accepted
    silently; one without an input named what it lacked, not what it had."""
    from trtbuild.check.data import as_sample

    inputs = [
        {"name": "x", "shape": [4, 16], "dtype": "float32"},
        {"name": "ids", "shape": {"min": [1, 1], "opt": [1, 8], "max": [2, 32]}, "dtype": "int64"},
    ]
    ok = {"x": torch.zeros(4, 16), "ids": np.ones((2, 32), dtype=np.int64)}
    assert as_sample(ok, inputs, "s")["x"].dtype == np.float32
    with pytest.raises(
        TrtbuildError, match=r"s: input 'x' has shape \[2, 16\], expected \[4, 16\]"
    ):
        as_sample({**ok, "x": np.zeros((2, 16))}, inputs, "s")
    with pytest.raises(TrtbuildError, match=r"input 'ids' has shape \[3, 8\], expected \{'min'"):
        as_sample({**ok, "ids": np.ones((3, 8), dtype=np.int64)}, inputs, "s")
    with pytest.raises(
        TrtbuildError, match=r"has no tensor 'x' \(a model input; it has 'z', 'ids'\)"
    ):
        as_sample({"z": ok["x"], "ids": ok["ids"]}, inputs, "s")


def test_int8_calibrates_on_the_samples_a_python_function_yields(tmp_path: Path) -> None:
    """data = "calib.py:samples": the first `samples` dicts it yields are the calibration data,
    the same table as those samples written as .npz files; the file (and what it reads) is the
    calibration's input, pinned in the lock and named by explain when it changes."""
    source = GENERATOR.replace("SHAPE", repr(SHAPE))
    (tmp_path / "calib.py").write_text(source)
    generated = CALIBRATION.replace('"calib/*.npz"', '"calib.py:samples"').replace("16", "4")
    recipe = cnn_recipe(tmp_path, '["int8"]', generated, RANDOM_CNN)
    recipe.write_text(recipe.read_text().replace('data = "check/*.npz"\n', ""))  # N(0, 1) too
    first = build(recipe)
    (target,) = first.targets
    assert target.calibration and not target.calibration["cached"]
    assert target.calibration["samples"] == 4 and "calib.py" in target.calibration["files"]
    assert target.check and target.check["passed"]
    assert build(recipe).up_to_date  # nothing runs again, the generator neither

    folder = tmp_path / "npz"  # the same samples as files: the same table
    folder.mkdir()
    for k in range(4):
        x = np.random.default_rng(100 + k).standard_normal(SHAPE).astype("float32")
        np.savez(folder / f"s{k}.npz", x=x)
    files = cnn_recipe(
        tmp_path / "files", '["int8"]', CALIBRATION.replace("calib/", "../npz/"), RANDOM_CNN
    )
    build(files, Options(check=False, out=Path("files")))
    assert (target.dir / "calibration.json").read_text() == (
        Path("files/cnn/cnn/int8/calibration.json").read_text()
    )

    (tmp_path / "calib.py").write_text(source.replace("OFFSET = 0.0", "OFFSET = 0.5"))
    lines = explain(recipe)
    assert "changed: calib.py changed" in lines
    assert "cnn/int8 part 0: would build: its calibration is not in the cache" in lines

    recipe.write_text(recipe.read_text().replace("calib.py:samples", "calibration.py:samples"))
    with pytest.raises(TrtbuildError, match=r"cnn\.toml:\d+: field 'calibration.data': "):
        load_recipe(recipe)  # no such file: said before anything runs
    recipe.write_text(recipe.read_text().replace("calibration.py:samples", "calib.py:samples"))
    (tmp_path / "calib.py").write_text(source.replace('{"x":', '{"image":'))
    with pytest.raises(TrtbuildError, match=r"calib\.py:samples: sample 0 has no tensor 'x'"):
        build(recipe)


@pytest.mark.slow  # 11 s: the default run keeps the split run's reuse of the table (above)
def test_part_by_part_calibration_equals_the_whole_model(tmp_path: Path) -> None:
    write_samples(tmp_path / "calib", 4, seed=3)
    recipe = cnn_recipe(tmp_path, '["int8"]', CALIBRATION, RANDOM_CNN)
    tables = []
    for opts in (
        Options(check=False, cache=tmp_path / "c1", out=Path("whole")),
        Options(
            check=False,
            cache=tmp_path / "c2",
            out=Path("split"),
            budget=1 << 30,
            memory_override=SPLIT,
        ),
    ):
        result = build(recipe, opts)
        calibration = result.targets[0].calibration
        assert calibration and not calibration["cached"]
        assert calibration["process"]["peak_rss_bytes"] <= result.targets[0].budget_bytes
        tables.append(json.loads((opts.out / "cnn/cnn/int8/calibration.json").read_text()))
        parts = len(result.targets[0].parts)
    assert parts == 2
    assert tables[0] == tables[1]
    assert len(tables[0]["tensors"]) >= 8  # the input and every op's output


def test_int4_gpt2_passes_its_check_at_a_fifth_of_the_weights(tmp_path: Path) -> None:
    """Weight-only int4 of a random-init transformers GPT-2: MatMulNBits in the engine."""
    pytest.importorskip("transformers")
    config = {
        "n_layer": 2,
        "n_embd": 256,
        "n_head": 4,
        "vocab_size": 100,
        "n_positions": 64,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    model = {
        "name": "gpt2",
        "source": "transformers:GPT2LMHeadModel",
        "outputs": ["logits"],
        "config": config,
        "weights": {"init": "random", "seed": 0},
        "inputs": [{"name": "input_ids", "shape": [1, 16], "dtype": "int64", "values": [0, 100]}],
    }
    recipe = {
        "recipe": {"name": "gpt"},
        "defaults": {"backend": "onnxruntime", "precisions": ["fp32", "int4"]},
        "model": [model],
    }
    import tomli_w

    path = tmp_path / "gpt.toml"
    path.write_text(tomli_w.dumps(recipe))
    fp32, int4 = build(path).targets
    assert int4.check and int4.check["passed"], int4.check
    engine = onnx.load(str(int4.dir / int4.parts[0].engine), load_external_data=False)
    assert "MatMulNBits" in {n.op_type for n in engine.graph.node}
    ratio = engine_bytes(int4.dir) / engine_bytes(fp32.dir)
    print(f"int4: engine bytes {ratio:.3f}x fp32, rel_l2 {int4.check['worst_rel_l2']:.4f}")
    assert ratio <= 0.2


def test_plan_counts_quantized_engines_at_their_bytes_and_keep_leaves_a_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk estimate holds an int8 engine at a quarter of its fp32 weights, and a built
    int8 part is known as cached (its key carries the cached calibration table); `keep`
    leaves the head at fp32."""
    from trtbuild.cli import main

    random = CALIBRATION.replace('"calib/*.npz"', '"random"')
    recipe = str(
        cnn_recipe(tmp_path, '["int8"]', random, RANDOM_CNN + '\nkeep = { fp32 = ["head"] }')
    )
    weights = 894_992  # SmallCNN(4, 64) at fp32
    assert main(["plan", recipe, "--format", "json"]) == 0
    need = json.loads(capsys.readouterr().out)["targets"][0]["disk"]
    assert need["cache_bytes"] == weights // 4
    assert need["scratch_bytes"] == weights + weights // 4
    assert main(["run", recipe, "--no-check"]) == 0
    assert "ranges will not represent real data (set calibration.data" in capsys.readouterr().err
    assert main(["plan", recipe, "--format", "json"]) == 0
    need = json.loads(capsys.readouterr().out)["targets"][0]["disk"]
    assert need["parts_cached"] == 1 and need["total_bytes"] == 0
    # keep = { fp32 = ["head"] }: its Gemm is left at fp32, the convolutions are quantized
    (engine,) = Path("build/cnn/cnn/int8").glob("*.ort.onnx")
    ops = [n.op_type for n in onnx.load(str(engine), load_external_data=False).graph.node]
    assert ops.count("QLinearConv") == 3 and "Gemm" in ops and "QGemm" not in ops, ops


def test_a_calibration_over_the_budget_is_one_error_before_it_runs(recipes: Path) -> None:
    """seed_net_1g at 1 GiB: conv1's output alone (1x4096x224x224 float32) is 784 MiB, which
    no split makes smaller; calibration says so before any export, build or calibration job."""
    recipe = recipes / "seed_net_1g.toml"
    text = recipe.read_text().replace('precisions = ["fp32"]', 'precisions = ["int8"]')
    # at 640 MiB the plan itself refuses int8 (a part's build with the quantizer needs 820 MiB)
    text = text.replace('host_memory = "640MiB"', 'host_memory = "1GiB"')
    recipe.write_text(text + '[model.calibration]\ndata = "random"\nsamples = 1\n')
    for command in (plan_targets, build):  # plan says what run would say
        with pytest.raises(
            TrtbuildError, match=r"calibration .* largest activation alone is 784.00 MiB"
        ):
            command(recipe)
    assert not list(Path("build").rglob("*.onnx"))


def test_the_smallest_budget_a_refusal_names_is_one_that_plans(recipes: Path) -> None:
    """gpt2 at int8 and 704 MiB: the refusal named the heaviest group by weight (the 147 MiB
    embedding, 548 MiB predicted, which fits) and "the smallest budget that works is 548 MiB",
    under the very budget refused. The group that needs the most is the lm_head (a Linear on a
    3-D input, of the same 147 MiB, transposed by the builder and copied by the quantizer): the
    refusal names it, and the budget it names plans, every part within it."""
    recipe = recipes / "gpt2.toml"
    text = recipe.read_text().replace('precisions = ["fp32"]', 'precisions = ["int8"]')
    recipe.write_text(text + '[model.calibration]\ndata = "random"\nsamples = 1\n')
    with pytest.raises(TrtbuildError, match=r"704.00 MiB is too small: op group 'linear_") as err:
        plan_targets(recipe, Options(backend="onnxruntime"))
    smallest = int(re.search(r"smallest budget that works is (\d+) bytes", str(err.value))[1])
    assert smallest > 704 << 20, err.value
    (planned,) = plan_targets(recipe, Options(backend="onnxruntime", budget=smallest))
    assert all(p.predicted_peak_bytes <= smallest for p in planned.plan.parts)


@pytest.mark.slow  # one build and check per module, then the greedy ones: ~30 s
def test_precision_search_keeps_the_modules_the_check_needs(tmp_path: Path) -> None:
    recipe = cnn_recipe(tmp_path, '["int8"]', CALIBRATION.replace('"calib/*.npz"', '"random"'))
    text = (
        recipe.read_text().replace("small_cnn", "outlier_cnn").replace('data = "check/*.npz"\n', "")
    )
    recipe.write_text(text.replace('weights = "cnn.safetensors"\n', ""))  # its own state
    (failed,) = build(recipe).targets
    assert failed.check and not failed.check["passed"]  # int8 alone fails
    recipe.write_text(
        recipe.read_text().replace("[[model.inputs]]", "precision_search = true\n[[model.inputs]]")
    )
    result = build(recipe)
    (target,) = result.targets
    assert target.check and target.check["passed"]
    (note,) = [n for n in result.notes if "precision_search" in n]
    kept = json.loads(note.split("keep = { fp32 = ")[1].split(" }")[0])
    assert {"conv1", "conv2"} <= set(kept) and "head" not in kept, note
    assert (target.dir / "engine.json").is_file()  # published


@pytest.mark.slow  # a 96 MiB MLP at fp32 and int8: ~25 s
def test_a_quantized_build_is_predicted_with_its_quantizer(recipes: Path) -> None:
    """A quantized part's build process also holds the quantizer's copies of the weights: the
    plan predicts it (its peak was 1.9x the prediction for fp32 builds), and the engine holds
    the int8 weights of a Linear on a 3-D input (MatMul of a transposed weight)."""
    recipe = recipes / "mlp.toml"
    text = recipe.read_text().replace('["fp32"]', '["fp32", "int8"]').replace('"600MiB"', '"2GiB"')
    text = text.replace(
        'source = "models/mlp.py:wide_mlp"',
        'source = "models/mlp.py:wide_mlp"\nkwargs = { width = 2048, hidden = 4096 }',
    )
    recipe.write_text(
        text.replace("shape = [2, 1, 4096]", "shape = [2, 1, 2048]")
        + '[model.calibration]\ndata = "random"\nsamples = 2\n'
    )
    fp32, int8 = build(recipe).targets
    assert int8.check and int8.check["passed"]
    (part,) = int8.parts
    (process,) = [p for p in part.record["processes"] if p["kind"] == "build"]
    assert process["peak_rss_bytes"] <= process["predicted_peak_bytes"]
    assert engine_bytes(int8.dir) <= 0.26 * engine_bytes(fp32.dir)
