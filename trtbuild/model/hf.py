"""Hugging Face `transformers` models as a recipe source, no wrapper code needed.

    source = "transformers:LlamaForCausalLM"        # any model class, or an Auto class
    config = { hidden_size = 256, ... }              # inline; or "config.json" / a model folder;
                                                     # default: the weights folder's config.json
    outputs = ["logits"]                             # default: the first field of the output

Inputs are passed by their recipe names as keyword arguments (input_ids, attention_mask, ...);
the model runs without a KV cache. Runs in worker processes only (it imports transformers).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.load import Recipe
from trtbuild.recipe.schema import ModelSpec


def build(recipe: Recipe, spec: ModelSpec) -> nn.Module:
    """The model, constructed from its config (weights come later, from the checkpoint)."""
    import transformers

    name = spec.source.partition(":")[2]
    cls = getattr(transformers, name, None)
    if cls is None:
        raise TrtbuildError(
            f"{recipe.model_loc(spec.name, 'source')}: field 'source': transformers "
            f"{transformers.__version__} has no class {name!r}"
        )
    config = load_config(recipe, spec, cls)
    if name.startswith("Auto"):
        return cls.from_config(config, **spec.kwargs)
    return cls(config, **spec.kwargs)


def load_config(recipe: Recipe, spec: ModelSpec, cls: Any) -> Any:
    import transformers

    where = recipe.model_loc(spec.name, "config")
    config = spec.config
    if config is None:
        folder = recipe.resolve(spec.weights) if isinstance(spec.weights, str) else None
        if folder is None or not (folder / "config.json").is_file():
            raise TrtbuildError(
                f"{where}: field 'config' is required for a transformers source (an inline table, "
                "a config.json, or weights = a model folder that has one)"
            )
        config = str(folder)
    if isinstance(config, str):
        path = recipe.resolve(config)
        loader = getattr(cls, "config_class", None) or transformers.AutoConfig
        try:
            return loader.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TrtbuildError(f"{path}: field 'config': {_first_line(exc)}") from None
    values = dict(config)
    model_type = values.pop("model_type", None)
    try:
        if model_type is not None:
            return transformers.AutoConfig.for_model(model_type, **values)
        config_class = getattr(cls, "config_class", None)
        if config_class is None:
            raise TrtbuildError(
                f"{where}: field 'config': expected a model_type key for {spec.source} "
                "(an Auto class does not say which model it is)"
            )
        return config_class(**values)
    except (ValueError, TypeError) as exc:
        raise TrtbuildError(f"{where}: field 'config': {_first_line(exc)}") from None


def call_kwargs(model: nn.Module) -> dict[str, Any]:
    """Fixed keyword arguments: no KV cache (an engine computes the whole sequence)."""
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


def pick(out: Any, names: list[str] | None, where: str) -> tuple[Any, ...]:
    """The chosen fields of a ModelOutput / dict (default: its first), as a tuple of tensors."""
    if not isinstance(out, dict):
        if names:
            raise TrtbuildError(
                f"{where}: field 'outputs': the model returns {type(out).__name__}, not a "
                "mapping with named fields"
            )
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    chosen = names or [next(iter(out))]
    missing = [n for n in chosen if out.get(n) is None]
    if missing:
        raise TrtbuildError(
            f"{where}: field 'outputs': the model's output has no {missing[0]!r} "
            f"(it has {', '.join(k for k, v in out.items() if v is not None)})"
        )
    return tuple(out[n] for n in chosen)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
