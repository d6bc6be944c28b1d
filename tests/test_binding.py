"""The engine has the model's interface: inputs bound by name, every declared input kept, the
output structure (tuples with repeats and passed-through inputs, dicts, picked fields) as eager
returns it, and export errors that explain. Real builds on ONNX Runtime (tests/models/iface.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

import trtbuild
from trtbuild.cli import main
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.load import load_recipe

MODELS = Path(__file__).resolve().parent / "models" / "iface.py"
V8, V4 = "[2, 8]", "[2, 4]"

# name -> (factory, [(input, shape)], extra recipe lines)
CASES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "reordered": ("gated", [("gate", V4), ("feats", V8)], ""),  # forward(feats, gate)
    "keyword_only": ("keyword_only", [("feats", V8), ("mask", V4)], ""),
    "unread": ("unread", [("x", V8), ("mask", V4)], ""),
    "repeated": ("repeated", [("x", V8)], ""),
    "pass_through": ("pass_through", [("x", V8)], ""),
    "named": ("named", [("x", V8)], ""),
    "picked": ("named", [("x", V8)], 'outputs = ["x2", "logits"]'),
    "picked_one": ("named", [("x", V8)], 'outputs = ["hidden"]'),
}


def recipe_text(name: str, models: dict[str, tuple[str, list[tuple[str, str]], str]]) -> str:
    lines = [
        f'[recipe]\nname = "{name}"\n',
        '[defaults]\nbackend = "onnxruntime"\nprecisions = ["fp32"]\n',
    ]
    for seed, (model, (factory, inputs, extra)) in enumerate(models.items(), start=1):
        lines.append(
            f'[[model]]\nname = "{model}"\nsource = "iface.py:{factory}"\n'
            f'weights = {{ init = "random", seed = {seed} }}\n{extra}\n'
        )
        for input_name, shape in inputs:
            lines.append(f'[[model.inputs]]\nname = "{input_name}"\nshape = {shape}\n')
    return "\n".join(lines)


def write_recipe(folder: Path, name: str, models: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELS, folder / "iface.py")
    path = folder / f"{name}.toml"
    path.write_text(recipe_text(name, models))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case of CASES built once, in one recipe: returns the recipe's path."""
    root = tmp_path_factory.mktemp("iface")
    recipe = write_recipe(root / "project", "iface", CASES)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        build(recipe, Options(cache=root / "cache", out=root / "build"))
    finally:
        os.chdir(cwd)
    return recipe


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / max(float(ref.float().norm()), 1e-12))


def assert_same(out: Any, ref: Any, where: str = "output") -> None:
    """Same structure (type, keys, length) and tensors within 1e-4 relative error."""
    assert type(out) is type(ref), (where, type(out), type(ref))
    if isinstance(ref, dict):
        assert list(out) == list(ref), where
        for key in ref:
            assert_same(out[key], ref[key], f"{where}[{key!r}]")
    elif isinstance(ref, (tuple, list)):
        assert len(out) == len(ref), where
        for i, (o, r) in enumerate(zip(out, ref)):
            assert_same(o, r, f"{where}[{i}]")
    else:
        assert out.shape == ref.shape, where
        assert rel_error(out, ref) < 1e-4, (where, rel_error(out, ref))


def run_case(recipe_path: Path, model: str) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(engine output by position, by name, eager output, engine.json) for random inputs."""
    recipe = load_recipe(recipe_path)
    spec = recipe.model_spec(model)
    torch.manual_seed(0)
    inputs = [torch.randn(i.opt_shape) for i in spec.inputs]
    folder = recipe_path.parent.parent / "build" / recipe.name / model / "fp32"
    engine = trtbuild.load(folder)
    with torch.no_grad():
        ref = eager_model(recipe, spec, "fp32")(*inputs)
    by_name = engine(**{i.name: x for i, x in zip(spec.inputs, inputs)})
    description = json.loads((folder / "engine.json").read_text())
    return engine(*inputs), by_name, ref, description


@pytest.mark.parametrize("model", sorted(CASES))
def test_engine_computes_what_eager_returns(built: Path, model: str) -> None:
    out, by_name, ref, description = run_case(built, model)
    assert_same(out, ref)
    assert_same(by_name, ref)
    declared = [name for name, _ in CASES[model][1]]
    assert [i["name"] for i in description["inputs"]] == declared


def test_output_names_are_the_users(built: Path) -> None:
    """Dict keys, output0.. for positions, a picked field's name; the ONNX outputs carry them."""
    expected = {
        "named": ["logits", "hidden", "x2"],
        "picked": ["x2", "logits"],
        "picked_one": ["hidden"],
        "repeated": ["output0"],
        "pass_through": ["output0"],
        "reordered": ["output"],
    }
    for model, names in expected.items():
        folder = built.parent.parent / "build" / "iface" / model / "fp32"
        description = json.loads((folder / "engine.json").read_text())
        assert [o["name"] for o in description["outputs"]] == names, model
        onnx_outputs = set()
        for part in description["parts"]:
            graph = onnx.load(str(folder / part["engine"]), load_external_data=False).graph
            onnx_outputs |= {o.name for o in graph.output}
        assert set(names) <= onnx_outputs, (model, onnx_outputs)
    structure = json.loads(
        (built.parent.parent / "build/iface/pass_through/fp32/engine.json").read_text()
    )["structure"]
    assert structure == {"tuple": [{"output": "output0"}, {"input": "x"}]}


def test_unread_input_is_taken_and_plan_says_so(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = built.parent.parent / "build" / "iface" / "unread" / "fp32"
    engine = trtbuild.load(folder)
    x, mask = torch.randn(2, 8), torch.randn(2, 4)
    assert torch.equal(engine(x, mask), engine(x, torch.zeros(2, 4)))
    capsys.readouterr()
    env = {"TRTBUILD_CACHE": str(built.parent.parent / "cache")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["plan", str(built), "--model", "unread"]) == 0
    err = capsys.readouterr().err
    assert "never reads input 'mask'" in err


def test_load_refuses_wrong_inputs(built: Path) -> None:
    engine = trtbuild.load(built.parent.parent / "build" / "iface" / "reordered" / "fp32")
    gate, feats = torch.randn(2, 4), torch.randn(2, 8)
    with pytest.raises(
        ValueError, match=r"input 'feats': axis 0 is 3, outside the declared range 2"
    ):
        engine(gate, torch.randn(3, 8))
    with pytest.raises(TypeError, match="unknown input 'x'"):
        engine(gate=gate, x=feats)
    with pytest.raises(TypeError, match="missing input 'feats'"):
        engine(gate)


def cli(tmp_path: Path, name: str, models: dict[str, Any], *argv: str) -> tuple[int, str]:
    recipe = write_recipe(tmp_path / "project", name, models)
    return main([*argv, str(recipe)]), str(recipe)


def test_recipe_input_forward_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(tmp_path, "extra", {"m": ("repeated", [("x", V8), ("extra", V4)], "")}, "run")
    err = capsys.readouterr().err
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("trtbuild: error:")]
    assert len(lines) == 1, err
    assert "no parameter 'extra'" in lines[0] and "recipe inputs (x, extra)" in lines[0]
    assert "forward(x)" in lines[0]


def test_missing_required_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = cli(tmp_path, "missing", {"m": ("gated", [("feats", V8)], "")}, "run")
    err = capsys.readouterr().err
    assert code == 1
    assert "forward() needs 'gate'" in err and "forward(feats, gate)" in err


def test_data_dependent_branch_names_the_models_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(tmp_path, "branch", {"m": ("data_dependent", [("x", V8)], "")}, "run")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "trtbuild: error:" in err and "Traceback" not in err
    assert "data-dependent" in err
    line = next(
        i for i, text in enumerate(MODELS.read_text().splitlines(), 1) if "x.sum() > 0" in text
    )
    assert f'iface.py", line {line}' in err
    assert len(err.splitlines()) <= 45


def test_constraint_violation_names_the_recipe_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shape = "{ min = [2, 2, 4], opt = [2, 4, 4], max = [2, 8, 4] }"
    code, _ = cli(tmp_path, "flat", {"m": ("flatten", [("image", shape)], "")}, "run")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "L['inputs']" not in err and "Traceback" not in err
    assert "Constraints violated (image.size()[1])" in err
    assert "You marked image.size()[1] as dynamic but your code specialized it" in err


def test_mutated_buffer_is_a_warning_in_plan_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = {"m": ("counter", [("x", V8)], "")}
    code, recipe = cli(tmp_path, "count", models, "plan")
    assert code == 0
    warning = "model 'm' updates buffer 'count' in forward(); the engine does not keep that state"
    assert warning in capsys.readouterr().err
    assert main(["run", recipe]) == 0
    captured = capsys.readouterr()
    assert warning in " ".join((captured.out + captured.err).split())  # rich wraps lines


def test_onnx_exporter_rejection_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The part export process, not the graph job, meets this one: still exit 1, no traceback."""
    code, _ = cli(tmp_path, "special", {"m": ("special", [("x", V8)], "")}, "run")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "internal error" not in err and "Traceback" not in err and "\x1b[" not in err
    assert "No ONNX function found" in err and "bessel_j0" in err
    line = next(
        i for i, text in enumerate(MODELS.read_text().splitlines(), 1) if "bessel_j0(" in text
    )
    assert f'iface.py", line {line}' in err, err
