"""Export one part of a model to ONNX, loading only that part's weights (worker side)."""

from __future__ import annotations

import gc
import operator
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from trtbuild.errors import TrtbuildError
from trtbuild.model import frontend
from trtbuild.model.binding import exported_graph
from trtbuild.model.examples import traced_shape
from trtbuild.model.exporter import import_exporter
from trtbuild.model.exporterrors import explain, node_frames
from trtbuild.model.graph import SYMINT, OpGraph
from trtbuild.model.lazyweights import (
    WeightLoader,
    attach_lazy_weights,
    attr_name,
    meta_tensor,
    torch_dtype,
)
from trtbuild.model.partdims import SymbolicSizes, oblivious_sizes, size_node
from trtbuild.model.weights import WeightSource
from trtbuild.recipe.load import Recipe


def part_module(
    program: Any,
    ops: list[str],
    inputs: list[str],
    outputs: list[str],
    rename: dict[str, str],
    weights: dict[str, torch.Tensor],
    symints: dict[str, str] | None = None,
    dims: dict[str, list[int | str]] | None = None,
    device: str | None = None,
    sizes: SymbolicSizes | None = None,
) -> fx.GraphModule:
    """A GraphModule computing `outputs` from `inputs` with the part's ops and weights only.

    `rename` maps exported node names to OpGraph names (model inputs, weights); `symints` are
    inputs that are symbolic sizes, recomputed from the tensor inputs' shapes (`dims`), directly or from the model's symbols
    (`sizes`).
    Factory ops (arange, zeros, ...) and .to(device) were traced on the CPU; `device` moves them.
    """
    symints = symints or {}
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for name in inputs:
        if name not in symints:
            env[name] = graph.placeholder(name)
    for name, expr in symints.items():  # sizes come from a tensor input's shape, not an input
        env[name] = _size_of(graph, env, dims, expr, name, sizes)
    root = nn.Module()
    attrs: dict[str, str] = {}
    wanted = set(ops)
    for node in program.graph.nodes:
        if node.name not in wanted:
            continue
        for arg in node.all_input_nodes:
            key = rename.get(arg.name, arg.name)
            if key in env:
                continue
            if key not in weights:
                raise TrtbuildError(f"part is missing tensor {key!r} needed by op {node.name!r}")
            attr = attrs.setdefault(key, attr_name(key))
            root.register_buffer(attr, weights[key])
            env[key] = graph.get_attr(attr)
        copied = graph.node_copy(node, lambda a: env[rename.get(a.name, a.name)])
        env[rename.get(node.name, node.name)] = copied
        if device is not None:
            _move(copied, torch.device(device))
        for user in node.users:
            if user.target is operator.getitem:
                env[rename.get(user.name, user.name)] = graph.node_copy(
                    user, lambda a: env[rename.get(a.name, a.name)]
                )
    graph.output(tuple(env[name] for name in outputs))
    return fx.GraphModule(root, graph)


def _move(node: fx.Node, device: torch.device) -> None:
    """Every device argument of a copied node (factory ops, .to(device)) becomes `device`."""

    def move(arg: Any) -> Any:
        return device if isinstance(arg, torch.device) else arg

    node.args = fx.node.map_aggregate(node.args, move)
    node.kwargs = fx.node.map_aggregate(node.kwargs, move)


def _size_of(
    graph: fx.Graph,
    env: dict[str, fx.Node],
    dims: dict[str, list[int | str]] | None,
    expr: str,
    name: str,
    sizes: SymbolicSizes | None = None,
) -> fx.Node:
    """aten.sym_size of the first tensor input that has the symbolic dimension `expr` (or the
    expression computed from the inputs' dimensions that are its symbols)."""
    node = size_node(graph, env, dims or {}, expr, sizes)
    if node is not None:
        return node
    raise TrtbuildError(
        f"dynamic size {name} = {expr} is not a dimension of any input of this part"
    )


def meta_part_module(
    program: Any,
    graph: OpGraph,
    rename: dict[str, str],
    part: dict[str, Any],
    sizes: SymbolicSizes,
    device: str | None = None,
) -> tuple[fx.GraphModule, list[dict[str, Any]]]:
    """A part's GraphModule (trtbuild.orchestrate.parts.part_json) holding its weights as meta tensors, and
    its tensor inputs: the ONNX export and the check's reference both run from it."""
    tensors, symints = split_inputs(part["inputs"])
    module = part_module(
        program,
        part["ops"],
        [t["name"] for t in part["inputs"]],
        [t["name"] for t in part["outputs"]],
        rename,
        {n: meta_tensor(graph.weights[n]) for n in part["weights"]},
        symints,
        {t["name"]: t["shape"] for t in tensors},
        device=device,
        sizes=sizes,
    )
    return module, tensors


def split_inputs(part_inputs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A part's tensor inputs, and its symbolic-size inputs (name -> expression)."""
    tensors = [t for t in part_inputs if t["dtype"] != SYMINT]
    return tensors, {t["name"]: t["shape"][0] for t in part_inputs if t["dtype"] == SYMINT}


# program, its OpGraph, rename map, WeightSource, code constants, symbolic sizes (partdims)
Prepared = tuple[Any, OpGraph, dict[str, str], Any, dict[str, torch.Tensor], SymbolicSizes]


def prepare(
    recipe: Recipe,
    model_name: str,
    precision: str,
    graph_digest: str,
    state: Path | None = None,
    trace: tuple[Any, OpGraph, dict[str, str]] | None = None,
) -> Prepared:
    """One export of the model on fake weights, and where its real weights come from: the
    program, its OpGraph, the rename map, the WeightSource, the code constants and the sizes
    of its dynamic dimensions.

    `state`: the model's own state (a StateJob's safetensors) when the recipe names no weights.
    `trace`: the graph job's program, OpGraph and rename map, when this process ran it (one
    trace per target: trtbuild.execution.follow); else the model is exported here again.
    """
    spec = recipe.model_spec(model_name)
    if trace is None:
        _, program = frontend.export_model(recipe, spec, precision)
        graph, rename = exported_graph(program, spec)
    else:
        program, graph, rename = trace
    if graph.digest() != graph_digest:
        raise TrtbuildError(
            f"model '{model_name}' changed while it was being built (graph digest differs); run again"
        )
    # The factory runs again here (and in the graph job) on the meta device: one that loads a
    # checkpoint itself reads it again, transiently (measured); its weights come from `state`.
    source = WeightSource(recipe, spec, frontend.build_model(recipe, spec, "fp32").model, state)
    names, traced = [i.name for i in spec.inputs], [traced_shape(i) for i in spec.inputs]
    sizes = SymbolicSizes(program, names, traced)  # each part exported at the model's trace
    return program, graph, rename, source, frontend.code_constants(program), sizes


def export_parts(
    recipe: Recipe,
    model_name: str,
    parts: list[tuple[dict[str, Any], Path]],
    opset: int,
    prepared: Prepared,
) -> list[dict[str, Any]]:
    """Write each part's ONNX, one after another, from one export of the whole model (prepare).

    The graph is exported with fake weights; each ONNX initializer is then a lazy tensor that
    loads its one weight (safetensors slice, mmap'd state dict entry, seeded module init, or a
    code constant) when the file is written. Peak memory is the process cost plus about one
    tensor, whatever the number of parts.
    """
    program, graph, rename, source, constants, sizes = prepared
    where = f"{recipe.path}: model '{model_name}'"
    import_exporter()  # one operator registry for all the parts (trtbuild.model.exporter)
    out = []
    for part, onnx_path in parts:
        with oblivious_sizes(sizes.small_sizes()):
            out.append(
                _export_one(
                    program, graph, rename, source, constants, part, onnx_path, opset, sizes, where
                )
            )
        gc.collect()  # the previous part's ONNX model is garbage: free it before the next
    return out


def _export_one(
    program: Any,
    graph: OpGraph,
    rename: dict[str, str],
    source: Any,
    constants: dict[str, torch.Tensor],
    part: dict[str, Any],
    onnx_path: Path,
    opset: int,
    sizes: SymbolicSizes,
    where: str = "",
) -> dict[str, Any]:
    names = list(part["weights"])
    module, tensors = meta_part_module(program, graph, rename, part, sizes, device="meta")
    # Example sizes at the recipe's opt shapes, each dynamic dimension over the range its
    # expression takes (partdims): a part works for every shape the recipe declares.
    args = tuple(sizes.example_tensor(t["shape"], torch_dtype(t["dtype"])) for t in tensors)
    dynamic = sizes.dynamic_shapes([t["shape"] for t in tensors])
    try:
        onnx_program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            optimize=False,
            verbose=False,
            input_names=[t["name"] for t in tensors],
            output_names=[t["name"] for t in part["outputs"]],
            dynamic_shapes=dynamic,
        )
    except Exception as exc:  # the exporter refused the part: a user error, not trtbuild's
        traces = {n.name: n.meta.get("stack_trace") or "" for n in program.graph.nodes}
        frames = node_frames(str(exc), traces)
        names = [t["name"] for t in tensors]
        raise explain(exc, f"{where}: ONNX export of part failed", names, frames) from None
    assert onnx_program is not None
    _unique_io_names(onnx_program.model.graph)
    loader = WeightLoader(
        source, {n: torch_dtype(graph.weights[n].dtype) for n in names}, constants
    )
    attached = attach_lazy_weights(onnx_program.model, loader)
    onnx_program.save(str(onnx_path), external_data=True)
    return {
        "weights_loaded": sorted(loader.loaded),
        "weight_bytes_loaded": loader.bytes_loaded,
        "checkpoint_files_opened": loader.files_opened(),
        "initializers": attached,
    }


def _unique_io_names(graph: Any) -> None:
    """Rename inner values that carry a name of the part's inputs or outputs.

    Those names come from the whole model's graph ("add_9"); the exporter numbers the part's own
    ops afresh, so one of them may be called "add_9" too, and ONNX names must be unique.
    """
    io = {v.name: v for v in [*graph.inputs, *graph.outputs]}
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name in io and io[value.name] is not value:
                value.name = f"{value.name}__inner_{node.name}"
