"""Every declared shape works: dynamic dimensions, derived ones (a stride-2 convolution's
(H - 1) // 2 + 1, a sliced sequence's S - 1) and a dynamic batch at opt = 1, in one engine and
split into parts, compared with the eager model at min, opt, max and between."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trtbuild
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.load import load_recipe

from .conftest import SPLITTING

MODELS = Path(__file__).resolve().parent / "models" / "dynamic_convnet.py"


def recipe(
    tmp_path: Path, factory: str, inputs: str, budget: str = "8GiB", kwargs: str = "{}"
) -> Path:
    """A one-model recipe over tests/models/dynamic_convnet.py with seeded weights."""
    path = tmp_path / f"{factory}.toml"
    path.write_text(
        f'[recipe]\nname = "{factory}"\n\n[defaults]\nbackend = "onnxruntime"\n'
        f'precisions = ["fp32"]\n[defaults.budget]\nhost_memory = "{budget}"\n\n'
        f'[[model]]\nname = "{factory}"\nsource = "{MODELS}:{factory}"\nkwargs = {kwargs}\n'
        'weights = { init = "random", seed = 7 }\n' + inputs
    )
    return path


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


def check(path: Path, target_dir: Path, shapes: list[tuple[int, ...]], ints: int = 0) -> None:
    """The engines and the eager model agree at every shape (fp32: rel. error < 1e-4)."""
    r = load_recipe(path)
    spec = r.schema.model[0]
    spec = r.model_spec(spec.name)
    eager = eager_model(r, spec, "fp32")
    engine = trtbuild.load(target_dir)
    torch.manual_seed(0)
    for shape in shapes:
        x = torch.randint(0, ints, shape) if ints else torch.randn(shape)
        with torch.no_grad():
            want = eager(x)
        got = engine(x)
        assert got.shape == want.shape, shape
        assert rel_error(got, want) < 1e-4, shape


CONV_INPUTS = (
    '[[model.inputs]]\nname = "x"\n'
    "shape = { min = [1, 3, 8, 8], opt = [1, 3, 32, 24], max = [2, 3, 64, 64] }\n"
)
CONV_SHAPES = [(1, 3, 8, 8), (1, 3, 32, 24), (2, 3, 64, 64), (1, 3, 17, 9), (2, 3, 45, 62)]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_dynamic_height_and_width_work_over_the_declared_range(tmp_path: Path, split: bool) -> None:
    # 47 KB of weights, counted 20000x by SPLITTING: two or more parts under 600 MiB.
    path = recipe(
        tmp_path, "dynamic_convnet", CONV_INPUTS, "600MiB" if split else "8GiB", "{ channels = 64 }"
    )
    opts = Options(memory_override=SPLITTING) if split else Options()
    (target,) = build(path, opts).targets
    assert (len(target.parts) >= 2) == split
    check(path, target.dir, CONV_SHAPES)


SEQ_INPUTS = (
    '[[model.inputs]]\nname = "ids"\ndtype = "int64"\n'
    "shape = { min = [1, 2], opt = [2, 16], max = [4, 64] }\n"
)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_a_derived_sequence_length_works_over_the_declared_range(
    tmp_path: Path, split: bool
) -> None:
    path = recipe(
        tmp_path, "derived_length", SEQ_INPUTS, "600MiB" if split else "8GiB", "{ width = 64 }"
    )
    opts = Options(memory_override=SPLITTING) if split else Options()
    (target,) = build(path, opts).targets
    assert (len(target.parts) >= 2) == split
    check(path, target.dir, [(1, 2), (2, 16), (4, 64), (3, 5), (1, 40)], ints=50)


BATCH_INPUTS = (
    '[[model.inputs]]\nname = "x"\nshape = { min = [1, 96], opt = [1, 96], max = [8, 96] }\n'
)


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_a_dynamic_batch_with_opt_1_works_at_1_3_and_8(tmp_path: Path, split: bool) -> None:
    path = recipe(
        tmp_path, "batch_mlp", BATCH_INPUTS, "1GiB" if split else "8GiB", "{ width = 96 }"
    )
    opts = Options(memory_override=SPLITTING) if split else Options()
    (target,) = build(path, opts).targets
    assert (len(target.parts) >= 2) == split
    check(path, target.dir, [(1, 96), (3, 96), (8, 96)])


def test_a_size_the_model_fixes_is_one_error_line_not_an_internal_error(tmp_path: Path) -> None:
    """nn.Linear(C * 6 * 8) over a dynamic H: the recipe's range cannot hold; exit 1, one line."""
    inputs = (
        '[[model.inputs]]\nname = "x"\n'
        "shape = { min = [1, 4, 4, 8], opt = [1, 4, 6, 8], max = [1, 4, 8, 8] }\n"
    )
    path = recipe(tmp_path, "fixed_length", inputs)
    run = subprocess.run(
        [sys.executable, "-m", "trtbuild", "run", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, run.stderr
    assert "fixed_length" in errors[0] and "internal" not in errors[0], errors[0]


@pytest.mark.slow  # a regression of two models sharing a cache; the default run builds each kind
def test_plan_and_run_agree_in_a_cache_another_model_shares(tmp_path: Path) -> None:
    """`plan` at a budget just above the smallest feasible one, then `run` at it, in a cache
    where another model of the same op graph was built first, with an edit between them that
    leaves the graph as it was (the graph job runs again): one base, the same parts."""
    from trtbuild.orchestrate.planning import plan_targets

    inputs = '[[model.inputs]]\nname = "x"\nshape = [1, 2048]\n'
    model_file = tmp_path / "models" / "mlp_models.py"
    model_file.parent.mkdir()
    model_file.write_text(MODELS.read_text())
    (tmp_path / "other").mkdir()
    other = recipe(tmp_path / "other", "batch_mlp", inputs, kwargs="{ width = 2048 }")
    other.write_text(other.read_text().replace("seed = 7", "seed = 8"))
    path = recipe(tmp_path, "batch_mlp", inputs, kwargs="{ width = 2048 }")
    for r in (other, path):
        r.write_text(r.read_text().replace(str(MODELS), str(model_file)))
    # Plain processes, as at the small budget below (a forked graph job peaks ~10 MiB lower).
    (built_other,) = build(
        other, Options(fork_server=False, out=tmp_path / "other" / "build")
    ).targets
    (first,) = plan_targets(path, Options(budget=8 << 30))
    budget = first.plan.min_feasible_budget_bytes + (256 << 10)
    (planned,) = plan_targets(path, Options(budget=budget))
    assert len(planned.plan.parts) >= 2
    model_file.write_text(model_file.read_text() + "\n# an edit that leaves the graph as it was\n")
    (built,) = build(path, Options(budget=budget)).targets
    assert built.graph_job.digest == planned.job.digest == built_other.graph_job.digest
    assert built.graph_job.base_bytes == planned.job.base_bytes == built_other.graph_job.base_bytes
    assert [p.ops for p in built.plan.parts] == [p.ops for p in planned.plan.parts]
    assert not built.notes  # no re-plan


def test_a_changed_range_rebuilds_the_parts_it_reaches(tmp_path: Path) -> None:
    """A part is exported for the recipe's ranges: a new max is a new engine, not a cached one
    that fails past the old max."""
    path = recipe(tmp_path, "batch_mlp", BATCH_INPUTS, kwargs="{ width = 96 }")
    build(path)
    path.write_text(path.read_text().replace("max = [8, 96]", "max = [16, 96]"))
    (target,) = build(path).targets
    assert target.parts and not any(p.cached for p in target.parts)
    check(path, target.dir, [(1, 96), (16, 96)])


def test_dynamic_sizes_are_named_after_the_recipes_input_and_axis(tmp_path: Path) -> None:
    """Plans say "x.2" (input x, axis 2) and derived sizes in those names, never torch's "s21"."""
    import re

    from trtbuild.orchestrate.planning import plan_targets

    path = recipe(tmp_path, "dynamic_convnet", CONV_INPUTS, "600MiB", "{ channels = 64 }")
    (planned,) = plan_targets(path, Options(memory_override=SPLITTING))
    the_plan, graph = planned.plan, planned.graph
    assert graph.inputs[0].shape == ["x.0", 3, "x.2", "x.3"]
    texts = [str(d) for op in graph.ops for t in op.outputs for d in t.shape]
    texts += [str(d) for p in the_plan.parts for t in p.inputs for d in t.shape]
    assert any("x.2" in t and t != "x.2" for t in texts)  # a derived size: (x.2 - 1)//2 + 1
    assert not [t for t in texts if re.search(r"\bs\d+\b", t)]
