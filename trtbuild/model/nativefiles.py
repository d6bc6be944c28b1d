"""Files native code reads: what the kernel shows a process holding, mmap'd or open.

The depfile's audit hook (trtbuild.model.depfile) sees Python-level `open` only. Rust and C readers
(safetensors, numpy's and torch's loaders, any C extension) open files the interpreter never
hears of; /proc still shows them while they are held: `/proc/<pid>/maps` lists mmap'd files
(a safetensors table whose tensors are still alive, torch.load(mmap=True), numpy memmap) and
`/proc/<pid>/fd` the files open now. The executor's watcher samples a graph or state job this
way while it runs and the worker reads its own at the end (trtbuild.execution.worker), so a file held
until then is always seen; a read that ends between two samples may be missed, which is what
a model's `data` globs declare (trtbuild.recipe.schema).

Only model data counts: files outside the standard library, installed packages, trtbuild, the
exclusions (the cache, the weights folder) and never an executable or shared library (ELF).
No torch here: the orchestrator imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from trtbuild.model.depfile import file_kind

ELF_MAGIC = b"\x7fELF"
# The system's own data that every process maps (locales, time zones, the loader's cache):
# never a model's, wherever the interpreter is installed.
SYSTEM_ROOTS = ("/etc/", "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/share/", "/var/")


def held_files(pid: int | str = "self") -> set[str]:
    """Absolute paths of the regular files process `pid` has mapped or open now (Linux; empty
    elsewhere or once the process is gone)."""
    found: set[str] = set()
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    found.add(fields[5].rstrip("\n"))
    except OSError:
        pass
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        names = []
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed between the listing and the read
        if target.startswith("/"):
            found.add(target)
    return {f for f in found if not f.endswith(" (deleted)")}


def model_files(paths: Iterable[str], exclude: Iterable[Path]) -> list[str]:
    """The paths that are model data: inputs by content, as the depfile's files (sorted)."""
    skip = [str(Path(p).resolve()) for p in exclude]
    out = set()
    for raw in paths:
        path = os.path.realpath(raw)
        if file_kind(path) != "file" or file_kind(raw) != "file" or not os.path.isfile(path):
            continue
        if path.startswith(SYSTEM_ROOTS):
            continue
        if any(path == root or path.startswith(root + os.sep) for root in skip):
            continue
        if _is_binary_code(path):
            continue
        out.add(path)
    return sorted(out)


def _is_binary_code(path: str) -> bool:
    """An executable or shared library (the interpreter, libc, an extension): code, not data."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ELF_MAGIC
    except OSError:
        return True
