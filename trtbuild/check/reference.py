"""The check's reference (worker side): the model at fp32, run part by part on the check inputs.

It runs the target's own part graphs (the ops its engines were exported from) op by op, every
sample at once: each weight is loaded at fp32 when its first op runs and dropped after its last,
each tensor dropped after its last use, so the process holds about one weight and the live
activations, never a whole part. Every dtype argument that is the target's precision (fp16,
bf16) becomes float32, so an fp16 overflow of the engine is not in the reference too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from trtbuild.check import data as checkdata
from trtbuild.model.frontend import PRECISION_DTYPES
from trtbuild.model.lazyweights import torch_dtype, weight_name
from trtbuild.model.partexport import Prepared, meta_part_module


def compute(
    prepared: Prepared,
    precision: str,
    request: dict[str, Any],
    root: Path,
) -> dict[str, Any]:
    """Write the reference file `request["path"]` for `request["parts"]` (every part, in order;
    trtbuild.orchestrate.parts.part_json) from an export of the model (partexport.prepare)."""
    program, graph, rename, source, constants, sizes = prepared
    samples = checkdata.make_samples(request["samples"], root)
    target = PRECISION_DTYPES[precision]
    parts = request["parts"]
    wanted_later = checkdata.read_later(
        [[t["name"] for t in p["inputs"]] for p in parts], request["outputs"]
    )
    writer = checkdata.Writer(Path(request["path"]))
    dtypes = {i["name"]: i["dtype"] for i in request["samples"]["inputs"]}
    live: list[dict[str, torch.Tensor]] = []
    for k, sample in enumerate(samples):
        env = {}
        for name, array in sample.items():
            writer.add(checkdata.key(k, name), array)
            env[name] = torch.from_numpy(array).to(torch_dtype(dtypes[name]))
        live.append(env)
    loaded = 0
    try:
        for index, part in enumerate(parts):
            module, tensors = meta_part_module(program, graph, rename, part, sizes)

            def load(names: list[str]) -> dict[str, torch.Tensor]:
                """One op's weights at once (a seeded init makes a module's tensors together)."""
                stored = [n for n in names if n not in constants]
                found = {**(source.load(stored) if stored else {}), **constants}
                return {
                    n: found[n].float() if found[n].is_floating_point() else found[n] for n in names
                }

            outs, count = run_graph(
                module.graph, load, target, [[env[t["name"]] for t in tensors] for env in live]
            )
            loaded += count
            for k, env in enumerate(live):
                for t, value in zip(part["outputs"], outs[k]):
                    env[t["name"]] = value
                    if isinstance(
                        value, torch.Tensor
                    ):  # a symbolic size: from a shape, no engine's
                        writer.add(checkdata.key(k, t["name"]), _numpy(value))
                for name in [n for n in env if n not in wanted_later[index]]:
                    del env[name]  # no later part reads it: free it
    finally:
        writer.close()
    return {"samples": len(samples), "weights_loaded": loaded}


def run_graph(
    graph: fx.Graph,
    load: Any,
    target: torch.dtype,
    inputs: list[list[torch.Tensor]],
    observe: Callable[[fx.Node, list[Any]], None] | None = None,
) -> tuple[list[list[torch.Tensor]], int]:
    """Run `graph` on every sample at once (per sample: its input tensors); each weight loaded
    once, at its first use, and every value dropped after its last use. `observe(node, values)`
    sees every op's value in each sample (calibration statistics) before it can be dropped."""
    last: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for arg in node.all_input_nodes:
            last[arg] = node
    frees: dict[fx.Node, list[fx.Node]] = {}
    for value, user in last.items():
        frees.setdefault(user, []).append(value)
    env: dict[fx.Node, list[Any]] = {}
    placeholders = iter(range(len(inputs[0])))
    loaded, results = 0, []
    for node in graph.nodes:
        if node.op == "placeholder":
            i = next(placeholders)
            env[node] = [sample[i] for sample in inputs]
        elif node.op == "get_attr":
            if node not in env:  # with the other weights its first op reads, not yet loaded
                first = next(iter(node.users), node)
                group = [n for n in first.all_input_nodes if n.op == "get_attr" and n not in env]
                group = group if node in group else [node]
                weights = load([weight_name(str(n.target)) for n in group])
                for n in group:
                    env[n] = [weights[weight_name(str(n.target))]] * len(inputs)
                loaded += len(group)
                del weights
        elif node.op == "call_function":
            args, kwargs = _fp32(node.args, target), _fp32(node.kwargs, target)
            call: Any = node.target
            env[node] = [
                call(*_values(args, env, k), **_values(kwargs, env, k)) for k in range(len(inputs))
            ]
            if observe is not None:
                observe(node, env[node])
        elif node.op == "output":
            results = [list(_values(node.args[0], env, k)) for k in range(len(inputs))]
        else:
            raise AssertionError(f"unexpected node {node.op} in a part graph")
        for value in frees.get(node, []):
            env.pop(value, None)
    return results, loaded


def _values(arg: Any, env: dict[fx.Node, list[Any]], k: int) -> Any:
    """`arg` with every node replaced by its value in sample `k`."""

    def value(node: fx.Node) -> Any:
        return env[node][k]

    return fx.node.map_arg(arg, value)


def _fp32(value: Any, target: torch.dtype) -> Any:
    def swap(arg: Any) -> Any:
        return torch.float32 if isinstance(arg, torch.dtype) and arg == target else arg

    return fx.node.map_aggregate(value, swap) if target != torch.float32 else value


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach()
    return (value.float() if value.is_floating_point() else value).contiguous().numpy()
