"""A recipe's glob patterns (a model's `data`, its calibration and check samples): the files they
match, relative to the recipe's folder, `**` recursive. Light: the no-op path reads the lock's
[[glob]] entries through it."""

from __future__ import annotations

import glob
from pathlib import Path


def matching_files(pattern: str, root: Path) -> list[Path]:
    """The files (not folders) `pattern` matches under `root`, sorted, as glob gives them."""
    return sorted(
        p for p in map(Path, glob.glob(str(root / pattern), recursive=True)) if p.is_file()
    )
