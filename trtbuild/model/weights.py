"""Weights by the model's own state-dict names: seeded init, or a checkpoint, one tensor at a time.

Runs inside worker processes only (it imports torch). Seeded init materialises only the modules
that own the asked-for tensors, with a per-module seed, so any process gets the same bytes; a
checkpoint opens only the shards that hold them (trtbuild.model.checkpoint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from trtbuild.model.checkpoint import Checkpoint, name_map
from trtbuild.recipe.load import Recipe
from trtbuild.recipe.schema import ModelSpec, RandomInit

RANDOM_INIT_SCHEME = 1  # bump when the seeded init below changes its bytes


def checkpoint_names(model: nn.Module) -> list[str]:
    """The tensors a checkpoint holds: parameters (every tied alias) and persistent buffers."""
    return list(model.state_dict(keep_vars=True))


def tied_names(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter, first name first (the one torch.export keeps)."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def module_seed(seed: int, module_name: str) -> int:
    digest = hashlib.sha256(f"trtbuild-init:{RANDOM_INIT_SCHEME}:{seed}:{module_name}".encode())
    return int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1)


def random_init(
    model: nn.Module, names: Iterable[str], seed: int, ties: list[list[str]] | None = None
) -> dict[str, torch.Tensor]:
    """Seeded per-module init: a module's tensors get the same bytes in any process.

    Only the modules that own `names` are materialised, so a part loads only its own weights.
    A tied tensor is initialised by the module of its first name, whichever alias is asked for.
    `ties`: the model's tied_names, when the caller knows them (a part's lazy initializers ask
    for one tensor at a time).
    """
    groups = tied_names(model) if ties is None else ties
    canonical = {alias: group[0] for group in groups for alias in group}
    wanted = {name: canonical.get(name, name) for name in names}
    owners: dict[str, nn.Module] = {}
    for source in set(wanted.values()):
        owner = source.rpartition(".")[0]
        owners[owner] = model.get_submodule(owner) if owner else model
    found: dict[str, torch.Tensor] = {}
    for owner_name in sorted(owners):
        module = owners[owner_name]
        kept = dict(module._parameters), dict(module._buffers)
        module.to_empty(device="cpu", recurse=False)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator, the one init on the CPU draws from: torch.manual_seed also
            # seeds every other device's, 1 ms a call (measured), and sets the same CPU state.
            torch.default_generator.manual_seed(module_seed(seed, owner_name))
            with torch.no_grad():
                _reset(module)
        prefix = f"{owner_name}." if owner_name else ""
        for local, tensor in [
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        ]:
            found[prefix + local] = tensor.detach()
        # The caller holds what it asked for; the model gets its own tensors back, so that a
        # tie (one Parameter under two names) still holds for the next call.
        module._parameters.update(kept[0])
        module._buffers.update(kept[1])
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


class WeightSource:
    """A model's checkpoint tensors by its own state-dict names: seeded init, a checkpoint, or
    (no `weights` in the recipe) the model's own state: the state job's file `state`, else the
    factory run here with real parameters (trtbuild.model.ownstate)."""

    def __init__(
        self, recipe: Recipe, spec: ModelSpec, model: nn.Module, state: Path | None = None
    ) -> None:
        self.recipe, self.spec, self.model = recipe, spec, model
        self.ties = tied_names(model)
        self.checkpoint: Checkpoint | None = None
        if isinstance(spec.weights, str):
            self.checkpoint = Checkpoint.open(recipe.resolve(spec.weights))
        elif spec.weights is None and state is not None:
            self.checkpoint = Checkpoint.open(state)
        self._names: dict[str, str] | None = None
        self._own: dict[str, torch.Tensor] | None = None

    def stored_names(self) -> dict[str, str]:
        """Model name -> stored name, for every tensor a checkpoint of this model holds."""
        assert self.checkpoint is not None
        if self._names is None:
            aliases = {alias: group for group in self.ties for alias in group}
            self._names = name_map(
                self.checkpoint.path, checkpoint_names(self.model), self.checkpoint.names(), aliases
            )
        return self._names

    def load(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The named tensors, and nothing else (only the shards that hold them are opened)."""
        if isinstance(self.spec.weights, RandomInit):
            return random_init(self.model, names, self.spec.weights.seed, self.ties)
        if self.checkpoint is None:  # the model's own state, made here
            from trtbuild.model.ownstate import own_model

            if self._own is None:
                own = own_model(self.recipe, self.spec)
                self._own = {k: v.detach() for k, v in own.state_dict(keep_vars=True).items()}
            return {n: self._own[n] for n in names}
        stored = self.stored_names()
        tensors = self.checkpoint.load({stored[n] for n in names})
        return {n: tensors[stored[n]] for n in names}

    def code_init(self) -> list[str]:
        """Seeded-init tensors whose values the model's own code decides: their module's
        `reset_parameters` is not torch's. Their described digest says nothing of that code, so
        the graph job mixes the digest of the model's inputs into it (graphjob.py)."""
        if not isinstance(self.spec.weights, RandomInit):
            return []
        return _code_init(self.model, self.ties)

    def digests(self) -> dict[str, str]:
        """sha256 per checkpoint tensor by model name; random init is described, not made."""
        if isinstance(self.spec.weights, RandomInit):
            return _init_digests(self.model, self.ties, self.spec.weights.seed)
        if self.checkpoint is None:  # the model's own state: its state job digests it
            return {}
        by_stored = self.checkpoint.digests()
        return {name: by_stored[s] for name, s in self.stored_names().items()}


def load_weights(
    recipe: Recipe, spec: ModelSpec, model: nn.Module, names: list[str]
) -> dict[str, torch.Tensor]:
    """The named tensors (state-dict names of the user's model), and nothing else."""
    return WeightSource(recipe, spec, model).load(names)


def _code_init(model: nn.Module, groups: list[list[str]]) -> list[str]:
    canonical = {alias: group[0] for group in groups for alias in group}
    out = []
    for name, _ in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]:
        owner = canonical.get(name, name).rpartition(".")[0]
        reset = getattr(model.get_submodule(owner) if owner else model, "reset_parameters", None)
        if callable(reset) and not getattr(reset, "__module__", "").startswith("torch."):
            out.append(name)  # trtbuild's own default init (_reset) is pinned by the toolchain
    return out


def _init_digests(model: nn.Module, groups: list[list[str]], seed: int) -> dict[str, str]:
    canonical = {alias: group[0] for group in groups for alias in group}
    out = {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    for name, tensor in named:
        source = canonical.get(name, name)
        owner = source.rpartition(".")[0]
        cls = type(model.get_submodule(owner) if owner else model).__qualname__
        desc = [RANDOM_INIT_SCHEME, seed, source, cls, list(tensor.shape), str(tensor.dtype)]
        out[name] = hashlib.sha256(json.dumps(desc).encode()).hexdigest()
    return out
