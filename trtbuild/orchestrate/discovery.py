"""Actions whose inputs are found as they run (Bazel's discovered inputs, a compiler's depfile).

Their key cannot be known before they run: what model code reads is known only once it has run.
A manifest key of what is known before (the model spec, precision, toolchain, ...) lists the input
sets earlier runs recorded (trtbuild.release.inputs.Inputs), newest first; the result is stored
under the manifest and one input set, and a lookup takes the first set still true on disk. The
graph job and a calibration on samples a Python function yields are such actions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.cache.digests import DigestMemo, digest_json
from trtbuild.release.inputs import Inputs

if TYPE_CHECKING:
    from trtbuild.cache.store import Store

MAX_INPUT_SETS = 16  # input sets remembered per manifest, newest first


def result_key(prefix: str, manifest: str, inputs: Inputs) -> str:
    """The key of the result a run with `inputs` recorded under `manifest`."""
    return prefix + digest_json([manifest, inputs.digest()])


def lookup(
    store: Store, manifest: str, prefix: str, root: Path, memo: DigestMemo
) -> tuple[dict[str, Any], Inputs] | None:
    """The stored result whose recorded inputs are all unchanged (paths relative to `root`)."""
    for raw in _input_sets(store, manifest):
        inputs = Inputs.from_json(raw)
        if inputs.changes(root, memo, limit=1):
            continue
        entry = store.get_action(result_key(prefix, manifest, inputs))
        if entry is not None:
            return entry, inputs
    return None


def get_or_run(
    store: Store,
    manifest: str,
    prefix: str,
    root: Path,
    memo: DigestMemo,
    run: Callable[[], tuple[dict[str, Any], Inputs]],
) -> tuple[dict[str, Any], Inputs, bool]:
    """(the result, its inputs, whether it was cached): looked up, else looked up again under
    the manifest's lock, else `run()`, its result recorded with the inputs it found."""
    hit = lookup(store, manifest, prefix, root, memo)
    if hit is not None:
        return (*hit, True)
    with store.locked(manifest):
        hit = lookup(store, manifest, prefix, root, memo)
        if hit is not None:
            return (*hit, True)
        record, inputs = run()
        store.put_action(result_key(prefix, manifest, inputs), record)
        sets = [inputs.to_json(), *_input_sets(store, manifest)][:MAX_INPUT_SETS]
        store.put_action(manifest, {"input_sets": sets, "blobs": {}}, replace=True)
    return record, inputs, False


def _input_sets(store: Store, manifest: str) -> list[dict[str, Any]]:
    entry = store.get_action(manifest)
    return list(entry["input_sets"]) if entry else []
