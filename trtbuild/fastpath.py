"""The no-op check: is the last build still current? Reads the lock file and file stats only.

Imports nothing heavy (no torch, onnx, pydantic, networkx or rich), so that an up-to-date
`trtbuild run` costs a fraction of `import torch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trtbuild.digests import DigestMemo
from trtbuild.manifest import Staleness, check_lock, lock_path, read_lock
from trtbuild.toolchain import toolchain


def invocation(backend: str | None, budget: int | None, out: Path, release: bool) -> dict[str, Any]:
    """The command-line options that change outputs; the lock pins them.

    Paths stay as given (relative to the working directory), so a lock file can be committed.
    """
    return {"backend": backend or "recipe", "budget": budget or 0, "out": str(out),
            "release": release}  # fmt: skip


def staleness(recipe_path: Path, options: dict[str, Any], cache_dir: Path) -> Staleness:
    """Staleness(None) when every input, option and output still matches the lock."""
    memo = DigestMemo(cache_dir / "digests.json")
    lock = read_lock(lock_path(recipe_path))
    result = check_lock(lock, options, toolchain(), memo, recipe_path.resolve().parent)
    if cache_dir.is_dir():
        memo.save()
    return result
