"""The graph job of an `onnx:<file>` source (worker side, no torch): the OpGraph, each
initializer's digest (streamed), and the files the graph depends on."""

from __future__ import annotations

from typing import Any

from trtbuild.model.onnxfile import external_files, load_graph, tensor_digest
from trtbuild.model.onnxgraph import model_file, onnx_graph
from trtbuild.recipe.load import Recipe


def graph_result(recipe: Recipe, model: str, peak: Any) -> dict[str, Any]:
    """What a graph job returns (trtbuild.execution.worker._graph) for an ONNX source; `peak()`
    gives this process's peak RSS so far (its base: the graph without weights)."""
    spec = recipe.model_spec(model)
    path = model_file(spec, recipe.root)
    proto = load_graph(path)
    where = f"{recipe.model_loc(model, 'source')}: model '{model}' ({path.name})"
    graph = onnx_graph(proto, spec, where)
    base = peak()
    by_name = {t.name: t for t in proto.graph.initializer}
    digests = {name: tensor_digest(by_name[name], path.parent) for name in sorted(graph.weights)}
    files = [path, *external_files(proto, path.parent)]
    files += [recipe.resolve(p) for p in spec.plugins]
    return {
        "graph": graph.to_json(),
        "digest": graph.digest(),
        "weight_digests": digests,
        "code_init": [],
        "base_bytes": base,
        "inputs": {"files": sorted(str(f) for f in files), "distributions": {}, "env": {}},
        "state_bytes": None,
    }
