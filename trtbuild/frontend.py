"""Model import and export on the meta device, and lazy per-tensor weight loading.

Runs inside worker processes only (it imports torch); the orchestrator never imports it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trtbuild.errors import TrtbuildError
from trtbuild.recipe import InputSpec, ModelSpec, RandomInit, Recipe

if TYPE_CHECKING:
    from torch.export import ExportedProgram

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INPUT_DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
}  # fmt: skip
RANDOM_INIT_SCHEME = 1  # bump when the seeded init below changes its bytes


def import_factory(recipe: Recipe, source: str) -> Callable[..., nn.Module]:
    """ "file.py:factory" (relative to the recipe) or "package.module:factory"."""
    module_ref, _, attr = source.rpartition(":")
    if module_ref.endswith(".py"):
        path = recipe.resolve(module_ref)
        if not path.is_file():
            raise TrtbuildError(f"{recipe.path}: field 'model.source': file {path} not found")
        name = "trtbuild_models_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise TrtbuildError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
            finally:
                sys.path.remove(str(path.parent))
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise TrtbuildError(
                f"{recipe.path}: field 'model.source': cannot import {module_ref}: {exc}"
            ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrtbuildError(f"{recipe.path}: field 'model.source': {source} has no callable {attr}")
    return factory


class PrecisionWrapper(nn.Module):
    """Runs the model at `dtype` while inputs and outputs keep the dtypes the recipe declares."""

    model: nn.Module

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> Any:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        out = self.model(*cast)
        if isinstance(out, torch.Tensor):
            return out.float() if out.is_floating_point() else out
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def build_model(recipe: Recipe, spec: ModelSpec, precision: str, device: str) -> PrecisionWrapper:
    """The wrapped model in eval mode; on "meta" it holds no weight bytes."""
    factory = import_factory(recipe, spec.source)
    try:
        with torch.device(device):
            model = factory(**spec.kwargs)
    except TrtbuildError:
        raise
    except Exception as exc:
        raise TrtbuildError(
            f"{recipe.model_loc(spec.name, 'source')}: model '{spec.name}': factory {spec.source} raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise TrtbuildError(
            f"{recipe.path}: model '{spec.name}': {spec.source} did not return an nn.Module"
        )
    return PrecisionWrapper(model.eval(), PRECISION_DTYPES[precision]).eval()


def example_inputs(inputs: list[InputSpec], device: str) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.empty(i.opt_shape, dtype=INPUT_DTYPES[i.dtype], device=device) for i in inputs
    )


def dynamic_shapes(inputs: list[InputSpec]) -> tuple[tuple[dict[int, Any] | None, ...]] | None:
    """torch.export dims for the recipe's {min, opt, max} shapes."""
    if not any(i.dynamic for i in inputs):
        return None
    dims: list[dict[int, Any] | None] = []
    for spec in inputs:
        shape = spec.shape
        if not spec.dynamic:
            dims.append(None)
            continue
        assert not isinstance(shape, list)
        dims.append({
            axis: torch.export.Dim(f"{spec.name}_{axis}", min=lo, max=hi)
            for axis, (lo, hi) in enumerate(zip(shape.min, shape.max)) if lo != hi
        })  # fmt: skip
    return (tuple(dims),)  # forward(*inputs): one entry, the tuple of inputs


def export_meta(
    recipe: Recipe, spec: ModelSpec, precision: str
) -> tuple[PrecisionWrapper, ExportedProgram]:
    """torch.export on the meta device: the whole graph, no weight bytes."""
    model = build_model(recipe, spec, precision, "meta")
    model.model.to(PRECISION_DTYPES[precision])
    try:
        program = torch.export.export(
            model, example_inputs(spec.inputs, "meta"), dynamic_shapes=dynamic_shapes(spec.inputs)
        )
    except Exception as exc:
        raise TrtbuildError(
            f"{recipe.path}: model '{spec.name}': torch.export failed: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return model, program


def eager_model(recipe: Recipe, spec: ModelSpec, precision: str) -> PrecisionWrapper:
    """The whole model with its weights, as PyTorch runs it: the reference for checks and tests."""
    wrapper = build_model(recipe, spec, precision, "meta")
    names = [n for n, _ in [*wrapper.model.named_parameters(), *wrapper.model.named_buffers()]]
    state = load_weights(recipe, spec, wrapper.model, names)
    fresh = build_model(recipe, spec, precision, "meta")
    for group in tied_names(fresh.model):  # tied weights are loaded once, assigned to each name
        for alias in group[1:]:
            state[alias] = state[group[0]]
    fresh.model.load_state_dict(state, assign=True, strict=False)
    fresh.model.to(PRECISION_DTYPES[precision])
    return fresh


def tied_names(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter, first name first (the one torch.export keeps)."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


# ---------------------------------------------------------------- weights


def module_seed(seed: int, module_name: str) -> int:
    digest = hashlib.sha256(f"trtbuild-init:{RANDOM_INIT_SCHEME}:{seed}:{module_name}".encode())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def random_init(model: nn.Module, names: Iterable[str], seed: int) -> dict[str, torch.Tensor]:
    """Seeded per-module init: a module's tensors get the same bytes in any process.

    Only the modules that own `names` are materialised, so a part loads only its own weights.
    A tied tensor is initialised by the module of its first name, whichever alias is asked for.
    """
    canonical = {alias: group[0] for group in tied_names(model) for alias in group}
    wanted = {name: canonical.get(name, name) for name in names}
    owners: dict[str, nn.Module] = {}
    for source in set(wanted.values()):
        owner = source.rpartition(".")[0]
        owners[owner] = model.get_submodule(owner) if owner else model
    found: dict[str, torch.Tensor] = {}
    for owner_name in sorted(owners):
        module = owners[owner_name]
        module.to_empty(device="cpu", recurse=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(module_seed(seed, owner_name))
            with torch.no_grad():
                _reset(module)
        prefix = f"{owner_name}." if owner_name else ""
        for local, tensor in [
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ]:
            found[prefix + local] = tensor.detach()
        module.to_empty(device="meta", recurse=False)  # the caller holds what it asked for
    return {name: found[source] for name, source in wanted.items()}


def _reset(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    for _, param in module.named_parameters(recurse=False):
        nn.init.normal_(param, std=0.02)
    for _, buf in module.named_buffers(recurse=False):
        buf.zero_()


def load_weights(
    recipe: Recipe, spec: ModelSpec, model: nn.Module, names: list[str]
) -> dict[str, torch.Tensor]:
    """The named tensors (state-dict names of the user's model), and nothing else."""
    if isinstance(spec.weights, RandomInit):
        return random_init(model, names, spec.weights.seed)
    path = weights_path(recipe, spec)
    aliases = {alias: group for group in tied_names(model) for alias in group}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = _stored_names(path, set(handle.keys()), names, aliases)
            return {n: handle.get_tensor(keys[n]) for n in names}
    state = load_state_dict(path)
    keys = _stored_names(path, set(state), names, aliases)
    return {n: state[keys[n]] for n in names}


def load_state_dict(path: Path) -> dict[str, Any]:
    """A .pt/.pth state dict, memory-mapped; only plain tensors (weights_only): no code runs."""
    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # UnpicklingError for objects weights_only refuses, RuntimeError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrtbuildError(
            f"{path}: field 'weights': expected a state dict of tensors that torch.load(weights_only=True) "
            f"accepts, but it failed: {first}"
        ) from None
    if not isinstance(state, dict):
        raise TrtbuildError(
            f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}"
        )
    return state


def weights_path(recipe: Recipe, spec: ModelSpec) -> Path:
    assert isinstance(spec.weights, str)
    path = recipe.resolve(spec.weights)
    if not path.is_file():
        raise TrtbuildError(
            f"{recipe.path}: model '{spec.name}': field 'weights': file {path} not found"
        )
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise TrtbuildError(
            f"{recipe.path}: model '{spec.name}': field 'weights': expected a .safetensors or .pt file, got {path.name}"
        )
    return path


def _stored_names(
    path: Path, available: set[str], names: Iterable[str], aliases: dict[str, list[str]]
) -> dict[str, str]:
    """The name each wanted tensor has in the file (a tied tensor may be saved under any alias)."""
    out, missing = {}, []
    for name in names:
        stored = next((a for a in aliases.get(name, [name]) if a in available), None)
        if stored is None:
            missing.append(name)
        else:
            out[name] = stored
    if missing:
        raise TrtbuildError(
            f"{path}: weights file has no tensor {missing[0]!r} ({len(missing)} missing)"
        )
    return out


def weight_digests(recipe: Recipe, spec: ModelSpec, model: nn.Module) -> dict[str, str]:
    """sha256 per state-dict tensor; random init is described, not materialised."""
    groups = tied_names(model)
    if isinstance(spec.weights, RandomInit):
        canonical = {alias: group[0] for group in groups for alias in group}
        out = {}
        named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
        for name, tensor in named:
            source = canonical.get(name, name)
            owner = source.rpartition(".")[0]
            cls = type(model.get_submodule(owner) if owner else model).__qualname__
            desc = [RANDOM_INIT_SCHEME, spec.weights.seed, source, cls, list(tensor.shape),
                    str(tensor.dtype)]  # fmt: skip
            out[name] = hashlib.sha256(json.dumps(desc).encode()).hexdigest()
        return out
    path = weights_path(recipe, spec)
    if path.suffix == ".safetensors":
        digests = safetensors_digests(path)
    else:
        state = load_state_dict(path)
        digests = {k: tensor_digest(v) for k, v in state.items() if isinstance(v, torch.Tensor)}
    for group in groups:  # every alias of a tied tensor gets the digest of the stored one
        stored = next((digests[a] for a in group if a in digests), None)
        if stored is not None:
            digests.update(dict.fromkeys(group, stored))
    return digests


def tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
    head = json.dumps([str(tensor.dtype), list(tensor.shape)]).encode()
    return hashlib.sha256(head + flat.tobytes()).hexdigest()


def safetensors_digests(path: Path) -> dict[str, str]:
    """Per-tensor sha256 straight from the file's byte ranges: no torch tensors built."""
    out = {}
    with path.open("rb") as handle:
        try:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(header_len, 100 << 20)))
            assert isinstance(header, dict)
        except (struct.error, ValueError, AssertionError):
            raise TrtbuildError(
                f"{path}: field 'weights': expected a safetensors file, but its header is not valid"
            ) from None
        base = 8 + header_len
        for name, info in sorted(header.items()):
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            handle.seek(base + start)
            digest = hashlib.sha256(json.dumps([info["dtype"], info["shape"]]).encode())
            remaining = end - start
            while remaining:
                chunk = handle.read(min(remaining, 1 << 22))
                digest.update(chunk)
                remaining -= len(chunk)
            out[name] = digest.hexdigest()
    return out
