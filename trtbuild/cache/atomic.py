"""Atomic writes: a file appears under its final name only once it is whole.

Every file trtbuild writes outside a job's own folder (cache entries, the lock, provenance,
engine.json, the digest memo, memory.json) goes through here.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from trtbuild.errors import TrtbuildError, disk_full, is_disk_full


def tmp_prefix() -> str:
    """A name prefix that says which process made a temporary file (see Store.clean_orphans)."""
    return f"{os.getpid()}-{time.time_ns()}-"


def write_bytes(
    dest: Path, data: bytes, tmp_dir: Path | None = None, where: Path | None = None
) -> None:
    """Write `data` to a temporary file in `tmp_dir` (default: beside `dest`), rename it over
    `dest`; on failure nothing is left behind and the error names `where` (default: the folder)."""
    fd, name = tempfile.mkstemp(prefix=f".{tmp_prefix()}", dir=tmp_dir or dest.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, dest)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise write_error(where or dest.parent, exc, dest) from None


def write_text(dest: Path, text: str) -> None:
    """Publish a text file under its final name only once it is whole (folders made as needed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(dest, text.encode())


def swap_dir(new: Path, final: Path) -> None:
    """Put the whole folder `new` where `final` is (two renames: a reader sees the old or the new
    one), then remove the old one."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    import shutil  # not on the no-op path

    shutil.rmtree(old, ignore_errors=True)


def write_error(where: Path, exc: OSError, path: Path | None = None) -> TrtbuildError:
    """The error of a failed write under `where`; a full disk names `path` (the file) if given."""
    if is_disk_full(exc):
        return disk_full(path or where, exc)
    return TrtbuildError(f"{where}: write failed: {exc.strerror or exc}; nothing was published")
