"""How a model's state-dict names meet a checkpoint's: one rule, one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtbuild.errors import TrtbuildError
from trtbuild.model.checkpoint import name_map

CKPT = Path("llama-ckpt")
STORED = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]


def test_names_as_they_are() -> None:
    assert name_map(CKPT, STORED, STORED, {}) == {n: n for n in STORED}


def test_a_wrapper_prefix_is_removed() -> None:
    """A user's wrapper keeps the model as `m`: its names all start with `m.`."""
    wanted = ["m." + n for n in STORED]
    assert name_map(CKPT, wanted, STORED, {}) == dict(zip(wanted, STORED))


def test_the_checkpoint_prefix_is_added() -> None:
    """LlamaModel (no head) reads the `model.` tensors of a LlamaForCausalLM checkpoint."""
    wanted = ["embed_tokens.weight", "norm.weight"]
    assert name_map(CKPT, wanted, STORED, {}) == dict(zip(wanted, STORED[:2]))


def test_a_tied_tensor_may_be_stored_under_either_name() -> None:
    tied = {
        "lm_head.weight": ["model.embed_tokens.weight", "lm_head.weight"],
        "model.embed_tokens.weight": ["model.embed_tokens.weight", "lm_head.weight"],
    }
    stored = ["model.embed_tokens.weight", "model.norm.weight"]
    assert name_map(CKPT, STORED, stored, tied)["lm_head.weight"] == "model.embed_tokens.weight"


def test_no_rule_fits_names_the_first_missing_and_unexpected() -> None:
    with pytest.raises(TrtbuildError) as err:
        name_map(CKPT, [*STORED, "model.layers.0.mlp.weight"], [*STORED, "transformer.h.0.w"], {})
    message = str(err.value)
    assert message.startswith(
        "llama-ckpt: checkpoint has no tensor for 'model.layers.0.mlp.weight'"
    )
    assert "first unexpected: 'transformer.h.0.w'" in message
    assert "\n" not in message
