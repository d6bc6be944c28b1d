"""File operations under the cache: content digests, moving or copying into place, and linking a
blob out (a hard link, else a reflink, else a copy), and whether a process that owns scratch
still lives."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_or_copy(src: Path, dest: Path) -> None:
    try:
        os.replace(src, dest)  # job folders are in the store: a rename, no copy
    except OSError:
        import shutil  # imported where used: sha256_file is on the no-op path, copies are not

        shutil.copyfile(src, dest)


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def _link_or_copy(src: Path, dest: Path) -> str:
    with src.open("rb") as source, dest.open("wb") as target:
        try:
            fcntl.ioctl(target.fileno(), FICLONE, source.fileno())
            return "reflink"
        except OSError:
            pass
    dest.unlink()
    try:
        os.link(src, dest)
        return "hardlink"
    except OSError:
        import shutil

        shutil.copyfile(src, dest)
        return "copy"
