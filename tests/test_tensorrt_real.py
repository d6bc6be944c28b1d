"""Real TensorRT engines for every recipe: `pytest -m tensorrt` on a machine with TensorRT and a GPU.

Skipped (not faked) everywhere else: TensorRT cannot be installed where trtbuild is developed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import trtbuild
from trtbuild.backends.tensorrt import TensorRTBackend
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.load import load_recipe

pytestmark = pytest.mark.tensorrt
REASON = TensorRTBackend().available()
RECIPES = sorted(p.name for p in (Path(__file__).parent.parent / "recipes").glob("*.toml"))
TOLERANCE = {"fp32": 1e-2, "fp16": 5e-2, "bf16": 1e-1}  # TF32 and reduced-precision tactics


@pytest.mark.skipif(REASON is not None, reason=f"TensorRT unavailable: {REASON}")
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_and_matches_pytorch(recipes: Path, name: str) -> None:
    recipe = recipes / name
    result = build(recipe, Options(backend="tensorrt"))
    spec_by_name = {m.name: m for m in load_recipe(recipe).schema.model}
    for target in result.targets:
        assert all(p.peak_rss_bytes <= target.budget_bytes for p in target.parts)
        spec = spec_by_name[target.model]
        shape = spec.inputs[0].opt_shape
        x = (
            torch.randint(0, 100, shape)
            if spec.inputs[0].dtype.startswith("int")
            else torch.randn(shape)
        )
        with torch.no_grad():
            ref = eager_model(load_recipe(recipe), spec, target.precision)(x)
        out = trtbuild.load(target.dir)(x)
        assert (
            float((out.float() - ref.float()).norm() / ref.float().norm())
            < TOLERANCE[target.precision]
        )
