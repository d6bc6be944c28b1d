"""No `weights` in the recipe: what is built is the model as its factory returns it.

A factory that loads its own checkpoint is built with those weights (not random ones); one that
only initialises is built with torch's init seeded with 0. The state job that captures it is
measured, recorded in build.json, and refused in one line when the budget cannot hold it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch

import trtbuild
from tests.conftest import SPLITTING
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.planning import plan_targets

MODELS = Path(__file__).resolve().parent / "models"
RECIPE = """[recipe]
name = "own"
[defaults]
backend = "onnxruntime"
[defaults.budget]
host_memory = "1GiB"
[[model]]
name = "loaded"
source = "inputs_loaded.py:loaded"
[[model.inputs]]
name = "x"
shape = [2, 16]
[[model]]
name = "initialised"
source = "inputs_loaded.py:initialised"
[[model.inputs]]
name = "x"
shape = [2, 16]
"""


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def _project(root: Path, text: str = RECIPE) -> Path:
    root.mkdir(exist_ok=True)
    shutil.copy(MODELS / "inputs_loaded.py", root / "inputs_loaded.py")
    (root / "own.toml").write_text(text)
    return root / "own.toml"


def _save_checkpoint(root: Path, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        **{"a.weight": (64, 16), "a.bias": (64,), "mid.weight": (64, 64), "mid.bias": (64,)},
        **{"b.weight": (8, 64), "b.bias": (8,)},
    }
    state = {name: torch.randn(shape, generator=gen) for name, shape in shapes.items()}
    torch.save(state, root / "inputs_loaded.pt")


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"copy_{abs(hash(path))}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_factory_state_is_what_gets_built(tmp_path: Path) -> None:
    """Before: random weights (rel. err ~1) for a factory that loads its own checkpoint."""
    recipe = _project(tmp_path / "proj")
    _save_checkpoint(recipe.parent, seed=1)
    # 20000 x 23 KB of weights over 420 MiB: several parts, each streaming its slice
    opts = Options(memory_override=SPLITTING, budget=420 << 20)
    result = build(recipe, opts)
    user = _module(recipe.parent / "inputs_loaded.py")
    x = torch.randn(2, 16)
    loaded = trtbuild.load(Path("build/own/loaded/fp32"))
    assert loaded.parts >= 2
    with torch.no_grad():
        assert rel_error(loaded(x), user.loaded()(x)) < 1e-5
        torch.manual_seed(0)
        initialised = user.initialised()
        assert (
            rel_error(trtbuild.load(Path("build/own/initialised/fp32"))(x), initialised(x)) < 1e-5
        )
    record = json.loads(Path("build/own/loaded/fp32/build.json").read_text())["state_process"]
    assert record["peak_rss_bytes"] > 0 and record["predicted_peak_bytes"] > 0
    assert record["weight_bytes"] == (64 * 16 + 64 + 64 * 64 + 64 + 8 * 64 + 8) * 4
    print("state job:", {k: v for k, v in record.items() if k != "rss_samples"})
    assert not any(p.cached for t in result.targets for p in t.parts)

    _save_checkpoint(recipe.parent, seed=2)  # the factory's own checkpoint changed: rebuilt
    assert not build(recipe, opts).up_to_date
    with torch.no_grad():
        fresh = trtbuild.load(Path("build/own/loaded/fp32"))(x)
        assert rel_error(fresh, _module(recipe.parent / "inputs_loaded.py").loaded()(x)) < 1e-5


def test_plan_of_a_model_without_weights_prints_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`plan` holds no weights: a model whose factory makes its own (no `weights`) has no weight
    digests before its state job has run; plan's disk estimate crashed on them (exit 3)."""
    from trtbuild.cli import main

    recipe = _project(tmp_path / "proj")
    _save_checkpoint(recipe.parent, seed=1)
    for fmt in ("text", "json"):
        assert main(["plan", str(recipe), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "loaded/fp32" in out and '"disk"' in out


def test_budget_that_cannot_hold_the_state_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = RECIPE[: RECIPE.index('[[model]]\nname = "initialised"')]
    text = text.replace('source = "inputs_loaded.py:loaded"', 'source = "inputs_loaded.py:wide"')
    recipe = _project(tmp_path / "proj", text)
    with (recipe.parent / "inputs_loaded.py").open("a") as module:
        module.write(
            "\n\nclass Wide(nn.Module):\n"
            "    def __init__(self) -> None:\n"
            "        super().__init__()\n"
            "        self.layers = nn.Sequential(\n"
            "            nn.Linear(16, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 8)\n"
            "        )\n\n"
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
            "        return self.layers(x)\n\n\n"
            "def wide() -> nn.Module:\n"
            "    return Wide()\n"
        )
    (planned,) = plan_targets(recipe, Options(budget=64 << 30))  # measures the process cost
    base, weights = planned.job.base_bytes, planned.job.state_bytes
    assert base and weights and weights > 64 << 20
    budget = base + weights  # the graph job fits; the factory's state (2x weights) does not
    # plan said the budget was feasible, and run refused it: plan counts the state job too
    from trtbuild.cli import main
    from trtbuild.recipe.sizes import format_size

    state, parts = planned.state_peak_bytes, planned.plan.min_feasible_budget_bytes
    assert state is not None and state > budget and state > parts  # the state job decides
    assert main(["plan", str(recipe), "--budget", str(max(parts, budget))]) == 0
    text = capsys.readouterr().out
    assert f"Smallest feasible budget: {format_size(max(state, parts))}" in text, text
    assert "a state job first, predicted" in text
    with pytest.raises(TrtbuildError) as caught:
        build(recipe, Options(budget=budget))
    message = str(caught.value)
    assert "\n" not in message
    assert "model 'loaded'" in message and "'weights'" in message and "stream" in message


def test_explain_knows_the_factorys_own_weights(tmp_path: Path) -> None:
    """Before: `explain` on a recipe without `weights` was an internal error (KeyError); then,
    once any input of the factory changed (a comment), it said every part "would build: the
    model's own weights are not in the cache" while `run` rebuilt nothing, and gave that same
    reason for a changed checkpoint or forward. It runs the state job as it runs graph jobs."""
    from trtbuild.orchestrate.explain import explain

    recipe = _project(tmp_path / "proj")
    _save_checkpoint(recipe.parent, seed=1)
    before = explain(recipe)
    assert any("would build: not in the lock file" in line for line in before), before
    build(recipe)
    assert all(line.endswith("up to date") for line in explain(recipe)), explain(recipe)
    code = recipe.parent / "inputs_loaded.py"
    code.write_text(code.read_text() + "\n# a comment: the same model\n")
    edited = explain(recipe)
    assert any(line.startswith("changed: ") and "inputs_loaded.py" in line for line in edited)
    parts = [line for line in edited if " part " in line]
    assert parts and all(line.endswith(": up to date") for line in parts), edited
    rerun = build(recipe)  # what explain said is what run does
    assert all(p.cached for t in rerun.targets for p in t.parts)
    _save_checkpoint(recipe.parent, seed=2)
    after = explain(recipe)
    assert any(line.startswith("changed: ") and "inputs_loaded.pt" in line for line in after), after
    assert any(
        line.startswith("loaded/fp32 part 0: would rebuild: weights changed (a.bias")
        for line in after
    ), after
    assert any(line == "initialised/fp32 part 0: up to date" for line in after), after
