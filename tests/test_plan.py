"""`trtbuild plan` on the real recipes: the seed network against Torch-TensorRT's greedy rule,
and every printed plan split with torch.fx and run piece by piece against eager PyTorch."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.greedy import greedy_cost, greedy_parts
from trtbuild.cli import main
from trtbuild.errors import TrtbuildError
from trtbuild.model.binding import exported_graph
from trtbuild.model.frontend import code_constants, eager_model, export_model
from trtbuild.model.partexport import part_module, split_inputs
from trtbuild.orchestrate.build import Options
from trtbuild.orchestrate.planning import plan_targets
from trtbuild.planner import coarsen, problem_of
from trtbuild.planner.memory import DEFAULTS, MemoryModel, Stage
from trtbuild.planner.plan import load_of, rewrites
from trtbuild.recipe.load import load_recipe

SEED_CUT_BYTES = 12845056  # the 1x1024x56x56 fp32 tensor; Torch-TensorRT moves 51.4 MB


@pytest.mark.parametrize(
    ("backend", "budget"),
    [("onnxruntime", 2 << 30), ("onnxruntime", 1 << 30), ("tensorrt", 2 << 30)],
)
def test_seed_net_beats_greedy(recipes: Path, backend: str, budget: int) -> None:
    (planned,) = plan_targets(recipes / "seed_net.toml", Options(backend=backend, budget=budget))
    plan, graph = planned.plan, planned.graph
    memory = DEFAULTS[backend]
    cap = memory.max_weight_bytes(budget, load_of(graph, graph.weights, rewrites(graph)))
    problem = problem_of(graph, coarsen(graph))
    if cap >= max(problem.weight_of([v]) for v in range(problem.n)):
        assert plan.boundary_bytes <= greedy_cost(problem, cap, overshoot=False)
        torch_trt = greedy_parts(problem, cap, overshoot=True)
        overshoots = any(problem.weight_of(p) > cap for p in torch_trt)
        assert overshoots or plan.boundary_bytes <= problem.cost(torch_trt)
    assert all(p.predicted_peak_bytes <= budget for p in plan.parts)
    if len(plan.parts) == 2:
        assert plan.boundary_bytes <= SEED_CUT_BYTES


def test_seed_net_tensorrt_model_makes_two_engines_at_2gib(recipes: Path) -> None:
    (planned,) = plan_targets(recipes / "seed_net.toml", Options(backend="tensorrt"))
    assert len(planned.plan.parts) == 2
    assert planned.plan.boundary_bytes == SEED_CUT_BYTES


def test_seed_net_tensorrt_model_at_1gib_is_infeasible(recipes: Path) -> None:
    """4x conv1's 151 MB plus the CUDA context exceeds 1 GiB: said, not attempted."""
    with pytest.raises(
        TrtbuildError, match=r"too small: .* smallest budget that works is \d+ bytes \(1\.06 GiB\)"
    ):
        plan_targets(recipes / "seed_net.toml", Options(backend="tensorrt", budget=1 << 30))


def test_budget_below_largest_layer_is_one_line_error(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(recipes / "seed_net.toml"), "--budget", "450MiB"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert (
        "seed_net/fp32: budget 450.00 MiB is too small: op group 'conv2d' alone holds 144.02 MiB"
        in err[0]
    )
    assert "the smallest budget that works is" in err[0]


def test_budget_below_graph_export_is_one_line_error(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(recipes / "seed_net.toml"), "--budget", "100MiB"]) == 1
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("trtbuild: error:")
    ]
    assert len(err) == 1
    assert "budget 100.00 MiB is too small for seed_net/fp32: exporting its graph" in err[0]
    assert "--model seed_net` measures it without a cap" in err[0]


def test_plan_json_schema(recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert (
        main(["plan", str(recipes / "seed_net.toml"), "--budget", "640MiB", "--format", "json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    (target,) = data["targets"]
    assert set(target) >= {
        "model",
        "precision",
        "budget_bytes",
        "boundary_bytes",
        "min_feasible_budget_bytes",
        "parts",
    }
    crossing = 0
    for part in target["parts"]:
        assert set(part) >= {
            "index",
            "ops",
            "weight_bytes",
            "predicted_peak_bytes",
            "inputs",
            "outputs",
        }
        for t in part["inputs"]:
            assert set(t) >= {"name", "shape", "dtype", "bytes", "from_part"}
            assert t["from_part"] is None or t["from_part"] < part["index"]
            crossing += t["bytes"] if t["from_part"] is not None else 0
    assert crossing == target["boundary_bytes"]
    # The check's reference runs in the export process: not a part's peak, shown beside them
    # (a new user's `plan` called a budget feasible that the checked run then crossed).
    assert target["check_predicted_peak_bytes"] > target["parts"][0]["weight_bytes"]
    recipe = recipes / "seed_net.toml"
    recipe.write_text(recipe.read_text() + "[model.check]\nenabled = false\n")
    assert main(["plan", str(recipe), "--budget", "640MiB", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["targets"][0]["check_predicted_peak_bytes"] is None


def test_plan_text_and_dot(recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    # 640 MiB: the two convolutions, each folded with its batch norm, no longer fit together
    assert main(["plan", str(recipes / "seed_net.toml"), "--budget", "640MiB"]) == 0
    text = capsys.readouterr().out
    assert "Engine #2 - part1" in text
    assert "Engine Inputs: List[Tensor: (1, 4096, 112, 112)@float32]" in text
    assert "Bytes crossing engine boundaries: 205520896" in text
    assert "(without the check)" in text and "   With the check: its reference, predicted " in text
    assert (
        main(["plan", str(recipes / "seed_net.toml"), "--budget", "640MiB", "--format", "dot"]) == 0
    )
    dot = capsys.readouterr().out
    assert dot.startswith("digraph trtbuild {") and 'label="seed_net/fp32"' in dot
    assert "color=red" in dot


def run_split(recipe_path: Path, opts: Options) -> int:
    """Split each target along its plan with torch.fx; return how many plans had >= 2 parts."""
    recipe = load_recipe(recipe_path)
    split = 0
    for planned in plan_targets(recipe_path, opts):
        spec, precision = planned.target.model, planned.target.precision
        torch.manual_seed(0)
        x = (
            torch.randn(spec.inputs[0].opt_shape)
            if spec.inputs[0].dtype.startswith("float")
            else torch.randint(0, 50, spec.inputs[0].opt_shape)
        )
        eager = eager_model(recipe, spec, precision)
        with torch.no_grad():
            ref = eager(x)
        _, program = export_model(recipe, spec, precision)
        _, rename = exported_graph(program, spec)  # output tensors carry the users' names
        state = {
            **dict([*eager.model.named_parameters(), *eager.model.named_buffers()]),
            **code_constants(program),
        }
        values = {spec.inputs[0].name: x}
        for part in planned.plan.parts:
            tensors, symints = split_inputs([asdict(t) for t in part.inputs])
            module = part_module(
                program,
                part.ops,
                [t.name for t in part.inputs],
                [t.name for t in part.outputs],
                rename,
                {w: state[w].detach() for w in part.weights},
                symints,
                {t["name"]: t["shape"] for t in tensors},
                device="cpu",
            )
            with torch.no_grad():
                outs = module(*[values[t["name"]] for t in tensors])
            values.update(zip([t.name for t in part.outputs], outs))
        out = values[planned.plan.model_outputs[0]]
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5), planned.target.name
        split += len(planned.plan.parts) >= 2
    return split


# These budgets split the models under this fixed memory model, whatever a machine measures.
FIXED = MemoryModel(Stage(420 << 20, 1.0), Stage(96 << 20, 2.7), "test: fixed")


@pytest.mark.slow  # a split chain against eager: tests/test_budget.py's parts chain back by default
def test_resnet_plans_split_with_fx_reproduce_eager(recipes: Path) -> None:
    for budget in (460 << 20, 440 << 20):
        opts = Options(backend="onnxruntime", budget=budget, memory_override=FIXED)
        assert run_split(recipes / "resnet.toml", opts) == 2


def test_gpt2_and_unet_plans_split_with_fx_reproduce_eager(recipes: Path) -> None:
    assert (
        run_split(recipes / "gpt2.toml", Options(backend="onnxruntime", memory_override=FIXED)) == 1
    )
    opts = Options(backend="onnxruntime", budget=430 << 20, memory_override=FIXED)
    assert run_split(recipes / "unet.toml", opts) == 1


def test_scaled_seed_net_split_reproduces_eager(recipes: Path) -> None:
    recipe = recipes / "seed_small.toml"
    text = (recipes / "seed_net.toml").read_text()
    text = text.replace(
        'source = "models/seed_net.py:seed_net"',
        'source = "models/seed_net.py:seed_net"\nkwargs = { channels = 16, hidden = 64, spatial = 32 }',
    )
    recipe.write_text(text.replace("shape = [1, 1024, 224, 224]", "shape = [1, 16, 32, 32]"))
    tiny = MemoryModel(Stage(0, 1.0), Stage(0, 1.0), "test")
    assert run_split(recipe, Options(budget=60_000, memory_override=tiny)) == 1


@pytest.mark.slow
def test_full_seed_net_split_reproduces_eager(recipes: Path) -> None:
    assert run_split(recipes / "seed_net.toml", Options(budget=640 << 20)) == 1


def test_part_io_names_never_collide_with_the_part_s_own_op_names(tmp_path: Path) -> None:
    """Boundary tensors keep the whole model's node names ("add"); the exporter numbers a part's
    own ops afresh and may call one of them "add" too: ONNX Runtime refused such parts."""
    import onnxruntime as ort

    from trtbuild.model.partexport import _unique_io_names

    class TwoAdds(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + 1) + 2

    program = torch.onnx.export(TwoAdds(), (torch.ones(2),), dynamo=True, output_names=["add"])
    assert program is not None
    program.save(str(tmp_path / "clash.onnx"))
    with pytest.raises(Exception, match="add"):
        ort.InferenceSession(str(tmp_path / "clash.onnx"))
    _unique_io_names(program.model.graph)
    program.save(str(tmp_path / "fixed.onnx"))
    session = ort.InferenceSession(str(tmp_path / "fixed.onnx"))
    (out,) = session.run(["add"], {session.get_inputs()[0].name: np.ones(2, dtype=np.float32)})
    assert out.tolist() == [4.0, 4.0]
