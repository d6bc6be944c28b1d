"""The state job's file: a valid safetensors file of the model's own state, a tie once."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from trtbuild.model.checkpoint import safetensors_digests
from trtbuild.model.ownstate import own_model, write_state
from trtbuild.recipe.load import load_recipe

MODELS = Path(__file__).resolve().parent / "models"


def test_state_file_holds_the_factory_state_once_per_tensor(tmp_path: Path) -> None:
    shutil.copy(MODELS / "inputs_tied.py", tmp_path / "inputs_tied.py")
    (tmp_path / "t.toml").write_text(
        '[recipe]\nname = "t"\n[[model]]\nname = "m"\nsource = "inputs_tied.py:tied"\n'
        '[[model.inputs]]\nname = "ids"\nshape = [2]\ndtype = "int64"\n'
    )
    recipe = load_recipe(tmp_path / "t.toml")
    spec = recipe.schema.model[0]
    out = tmp_path / "state.safetensors"
    written = write_state(recipe, spec, out)
    stored = load_file(str(out))
    assert sorted(stored) == ["embed.weight", "mask", "scale", "view"]  # head.weight: its tie
    model = own_model(recipe, spec)  # seeded with 0 again: the same values
    for name, tensor in stored.items():
        expected = model.state_dict()[name]
        assert tensor.dtype == expected.dtype and torch.equal(tensor, expected), name
    assert written["digests"] == safetensors_digests(out)
    assert written["bytes"] == sum(t.numel() * t.element_size() for t in stored.values())
