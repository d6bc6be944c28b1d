"""The no-op check: is the last build still current? Reads the lock, file stats and metadata.

Imports nothing heavy (no torch, onnx, pydantic, networkx or rich), so that an up-to-date
`trtbuild run` costs a fraction of `import torch`. The check itself is trtbuild.release.lockfile's
`staleness()`, the same one `--locked` and `explain` use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtbuild.cache.digests import DigestMemo
from trtbuild.cache.layout import CacheLayout, project_root
from trtbuild.release.lockfile import lock_path, read_lock, staleness


def invocation(
    backend: str | None, budget: int | None, out: Path, release: bool, check: bool = True
) -> dict[str, Any]:
    """The command-line options that change outputs; the lock pins them.

    The output folder is relative to the project root where it lies under it (layout.project_root),
    so a lock file can be committed.
    `--no-check` is pinned too: a checked run after an unchecked one checks.
    """
    root = project_root()
    resolved = out.resolve()
    return {
        "backend": backend or "recipe",
        "budget": budget or 0,
        "out": str(resolved.relative_to(root) if resolved.is_relative_to(root) else out),
        "release": release,
        **({} if check else {"check": False}),
    }


def stale(
    recipe_path: Path, options: dict[str, Any], cache_dir: Path, trust_stat: bool = True
) -> str | None:
    """None when every input, option, machine fact and output still matches the lock."""
    memo = DigestMemo(CacheLayout(cache_dir).digests, trust_stat)
    lock = read_lock(lock_path(recipe_path))
    reasons = staleness(lock, options, memo, recipe_path.resolve().parent)
    if cache_dir.is_dir():
        memo.save()
    return reasons[0] if reasons else None
