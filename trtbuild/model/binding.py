"""The model's interface: recipe inputs bound to forward()'s parameters by name, and the output
structure (tensor, tuple/list, dict, ModelOutput) with the names the engine gives its outputs.

Runs in worker processes only (it imports torch). The interface is recorded in the OpGraph
(`interface`) and published in engine.json, where trtbuild.load() rebuilds the structure:

    {"inputs": [...], "unread": ["mask"], "mutated": ["count"],
     "structure": {"tuple": [{"output": "output0"}, {"input": "x"}, {"none": true}]}}

A leaf is {"output": <engine output name>}, {"input": <recipe input name>} (passed through),
{"none": true} or {"const": value}; containers are {"tuple": [...]}, {"list": [...]} and
{"dict": [[key, node], ...]} (a ModelOutput comes back as a dict).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from trtbuild.errors import TrtbuildError
from trtbuild.model import hf
from trtbuild.model.graph import WRAPPED, OpGraph, from_exported, rename_map

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from trtbuild.recipe.schema import ModelSpec

LONE = "output"  # the name of a model's one output tensor


@dataclass(frozen=True)
class Binding:
    """How recipe inputs (in recipe order) are passed to forward(): by position or by name."""

    positional: list[str] = field(default_factory=list)
    keywords: list[tuple[str, str]] = field(default_factory=list)  # (parameter, recipe input)

    def call(self, model: nn.Module, values: dict[str, Any], extra: dict[str, Any]) -> Any:
        args = [values[n] for n in self.positional]
        return model(*args, **{p: values[n] for p, n in self.keywords}, **extra)


def bind(model: nn.Module, names: list[str], extra: dict[str, Any], where: str) -> Binding:
    """Bind recipe inputs `names` to `model.forward`'s parameters by name, before any export.

    Positional-or-keyword and keyword-only parameters take the input of their name; `**kwargs`
    takes any other; forward(*args) alone takes them all by position, in recipe order. Raises
    TrtbuildError (one line listing both sides) for an input forward does not take or a required
    parameter no input gives.
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return Binding(positional=list(names))
    kinds = {p.name: p.kind for p in params}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    shown = ", ".join(_show(p) for p in params)
    listing = f"recipe inputs ({', '.join(names)}); forward({shown})"
    unknown = [n for n in names if n not in named]
    if unknown and var_pos and not var_kw and not any(n in named for n in names):
        return Binding(positional=list(names))  # forward(*inputs): by position
    if unknown and not var_kw:
        raise TrtbuildError(
            f"{where}: forward() takes no parameter {unknown[0]!r}: {listing}; "
            "inputs are passed by name"
        )
    given = set(names) | set(extra)
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
    ]
    if missing:
        raise TrtbuildError(
            f"{where}: forward() needs {missing[0]!r}, which no recipe input gives: {listing}"
        )
    only = [n for n in names if kinds.get(n) is inspect.Parameter.POSITIONAL_ONLY]
    if only:  # positional-only: by position, so every earlier parameter must be an input too
        order = [p.name for p in params if p.kind is p.POSITIONAL_ONLY]
        last = max(order.index(n) for n in only)
        if not set(order[: last + 1]) <= set(names):
            raise TrtbuildError(
                f"{where}: positional-only parameters need every earlier one: {listing}"
            )
        positional = order[: last + 1]
        return Binding(positional, [(n, n) for n in names if n not in positional])
    return Binding(keywords=[(n, n) for n in names])


def _show(p: inspect.Parameter) -> str:
    if p.kind is p.VAR_POSITIONAL:
        return f"*{p.name}"
    if p.kind is p.VAR_KEYWORD:
        return f"**{p.name}"
    return p.name if p.default is p.empty else f"{p.name}=..."


def select(out: Any, names: list[str] | None, transformers: bool, where: str) -> Any:
    """The output the engine computes: `names` picks fields of a mapping (one: that tensor, more:
    a dict in that order); a transformers model without `outputs` gives its first field; any other
    model's output is kept whole. Floating-point tensors come out as float32."""
    if names or (transformers and isinstance(out, dict)):
        picked = hf.pick(out, names, where)
        out = picked[0] if len(picked) == 1 else dict(zip(names or [], picked))
    return pytree.tree_map(_float, out)


def _float(value: Any) -> Any:
    if (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.dtype != torch.float32
    ):
        return value.float()
    return value


def exported_graph(program: ExportedProgram, spec: ModelSpec) -> tuple[OpGraph, dict[str, str]]:
    """The OpGraph of an export, its output tensors named for the user, with its interface; and
    the map of exported node names to OpGraph names (partexport copies nodes by it)."""
    input_names = [i.name for i in spec.inputs]
    lone = spec.outputs[0] if spec.outputs and len(spec.outputs) == 1 else LONE
    names, structure = _outputs(program, input_names, lone)
    graph = from_exported(program, input_names, names)
    read = {t for op in graph.ops for t in op.inputs} | set(_passed(structure))
    graph.interface = {
        "inputs": input_names,
        "unread": [n for n in input_names if n not in read],
        "mutated": _mutated(program),
        "structure": structure,
    }
    return graph, rename_map(program, input_names, names)


def _mutated(program: ExportedProgram) -> list[str]:
    """Buffers forward() writes: the functional signature's buffers_to_mutate, and the in-place
    ops (add_, copy_, index_put_ ...) of a training-IR export that write a buffer."""
    sig = program.graph_signature
    buffers = sig.inputs_to_buffers
    found = set(sig.buffers_to_mutate.values())
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for i, arg in enumerate(schema.arguments):
            info = arg.alias_info
            if info is None or not info.is_write:
                continue
            value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
            if isinstance(value, torch.fx.Node) and value.name in buffers:
                found.add(buffers[value.name])
    return sorted(b.removeprefix(WRAPPED) for b in found)


def _outputs(
    program: ExportedProgram, input_names: list[str], lone: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """(exported node name -> public name, the output structure)."""
    from torch.export.graph_signature import OutputKind, TensorArgument

    sig = program.graph_signature
    users = [s.arg for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT]
    rename = rename_map(program, input_names)
    taken = {n.name for n in program.graph.nodes if n.op != "output"}
    taken |= set(input_names) | set(rename.values())
    names: dict[str, str] = {}
    leaves = iter(users)

    def leaf(path: list[str]) -> dict[str, Any]:
        arg = next(leaves)
        if not isinstance(arg, TensorArgument):
            value = getattr(arg, "value", None)
            if value is None or isinstance(value, (bool, int, float, str)):
                return {"none": True} if value is None else {"const": value}
            raise TrtbuildError(f"the model's output {_path(path, lone)} is not a tensor ({arg})")
        name = arg.name
        if rename.get(name) in input_names:
            return {"input": rename[name]}
        if name in rename:
            raise TrtbuildError(
                f"the model's output {_path(path, lone)} is its tensor {rename[name]!r} (a weight "
                "or constant), not computed from the inputs"
            )
        public = _path(path, lone)
        if name not in names and (public not in taken or public == name):
            names[name] = public
            taken.add(public)
        return {"output": names.get(name, name)}

    def walk(spec: Any, path: list[str]) -> dict[str, Any]:
        if spec.is_leaf():
            return leaf(path)
        children = spec.children()
        context = spec.context
        if isinstance(context, list) and len(context) == len(children):
            keys = [str(k) for k in context]
            return {"dict": [[k, walk(c, [*path, k])] for k, c in zip(keys, children)]}
        kind = "list" if issubclass(spec.type, list) else "tuple"
        return {kind: [walk(c, [*path, str(i)]) for i, c in enumerate(children)]}

    structure = walk(program.call_spec.out_spec, [])
    return names, structure


def _path(path: list[str], lone: str) -> str:
    """output0 for position 0, the key for a dict field, output0_1 nested; `lone`: no path."""
    if not path:
        return lone
    head = f"output{path[0]}" if path[0].isdigit() else path[0]
    return "_".join([head, *path[1:]])


def _passed(node: Any) -> list[str]:
    """Recipe inputs a structure passes through as outputs."""
    if isinstance(node, dict):
        if "input" in node:
            return [node["input"]]
        return [n for v in node.values() for n in _passed(v)]
    if isinstance(node, list):
        return [n for v in node for n in _passed(v)]
    return []
