"""Action keys: what goes into the cache key of one part, listed field by field.

key = sha256(canonical JSON of KEY_FIELDS). Each field is also hashed on its own and recorded in
the lock file, so `trtbuild explain` can say which field changed.

A key says what the part *is*, not where it came from: the model's code and data files are not
in it. They are inputs of the graph job, which runs again when one changes; a part whose
subgraph and weights come out the same is then a cache hit (early cutoff, as in Shake, Buck2
and Bazel). Everything the code decides reaches the key through the subgraph (ops, arguments,
shapes, dtypes), the weights' digests (a checkpoint's bytes, the values code makes, or seeded
init described together with the code that runs it: trtbuild.model.weights) and the io names.
"""

from __future__ import annotations

from typing import Any

from trtbuild.cache.digests import digest_json as digest
from trtbuild.model.graph import OpGraph
from trtbuild.planner import Part

KEY_SCHEMA = 3  # 3: no "inputs" field (early cutoff)
KEY_FIELDS = (
    "schema",  # trtbuild's key schema version
    "graph",  # the part's ops: targets, arguments, edges, shapes, dtypes
    "weights",  # sha256 of every weight the part holds
    "io",  # names, shapes and dtypes of the part's inputs and outputs
    "precision",
    "settings",  # every backend setting (opset, builder options, workspace, ...)
    "toolchain",  # torch, onnx, onnxscript, trtbuild and backend versions
    "device",  # backend's device fingerprint (CPU ISA; GPU, compute capability, driver)
)


def part_fields(
    graph: OpGraph,
    part: Part,
    weight_digests: dict[str, str],
    precision: str,
    settings: dict[str, Any],
    machine: dict[str, dict[str, str]],
    ranges: dict[str, list[list[int]]] | None = None,
) -> dict[str, Any]:
    """The key fields of one part; `machine` is trtbuild.release.inputs.machine(backend).

    `ranges`: the recipe's [min, opt, max] of each dynamic model input. A part with a dynamic
    dimension is exported and built for them (partdims.py), so they are in its "io"; a static
    part's key does not carry them.
    """
    ops = []
    for name in part.ops:
        op = graph.op(name)
        ops.append(
            {
                "name": op.name,
                "target": op.target,
                "args": op.args,
                "inputs": op.inputs,
                "weights": op.weights,
                "outputs": [[t.name, t.shape, t.dtype] for t in op.outputs],
            }
        )
    io: dict[str, Any] = {
        "inputs": [[t.name, t.shape, t.dtype] for t in part.inputs],
        "outputs": [[t.name, t.shape, t.dtype] for t in part.outputs],
    }
    if ranges and any(isinstance(d, str) for t in part.inputs for d in t.shape):
        io["ranges"] = ranges
    return {
        "schema": KEY_SCHEMA,
        "graph": ops,
        "weights": {w: weight_digests[w] for w in sorted(part.weights)},
        "io": io,
        "precision": precision,
        "settings": settings,
        "toolchain": machine["toolchain"],
        "device": machine["device"],
    }


def action_key(fields: dict[str, Any]) -> str:
    assert tuple(fields) == KEY_FIELDS, f"key fields out of order: {tuple(fields)}"
    return digest(fields)


WEIGHT = "weights/"  # per-weight entries (weight_digests): explain names the weight that changed


def field_digests(fields: dict[str, Any]) -> dict[str, str]:
    """Each key field's digest (16 hex digits): what the lock records per part."""
    return {name: digest(value)[:16] for name, value in fields.items()}


def weight_digests(fields: dict[str, Any]) -> dict[str, str]:
    """Each weight's digest as `weights/<name>` (16 hex digits): kept in the part's cache record,
    not the lock (a ResNet's 534 weights made its lock 32 KB and the no-op parse it)."""
    return {WEIGHT + name: d[:16] for name, d in fields["weights"].items()}


def explain(old: dict[str, str] | None, new: dict[str, str]) -> str:
    """Why a part would be rebuilt, from the per-field digests of the lock and of now: the
    fields that changed, and for weights the names of those that changed (when the lock has them)."""
    if old is None:
        return "would build: not in the lock file"
    changed = []
    for k in new:
        if k.startswith(WEIGHT) or old.get(k) == new[k]:
            continue
        names = [
            n.removeprefix(WEIGHT)
            for n in sorted({*old, *new})
            if n.startswith(WEIGHT) and old.get(n) != new.get(n)
        ]
        if k == "weights" and names and any(n.startswith(WEIGHT) for n in old):
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            changed.append(f"weights changed ({shown})")
        else:
            changed.append(f"{k} changed ({old.get(k, '-')[:8]} -> {new[k][:8]})")
    return "would rebuild: " + ", ".join(changed) if changed else "up to date"
