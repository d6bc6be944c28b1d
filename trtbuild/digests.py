"""File digests memoised by (path, size, mtime_ns, inode), like git's index."""

from __future__ import annotations

import json
import os
from pathlib import Path

from trtbuild.store import sha256_file


def stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class DigestMemo:
    """sha256 of files; unchanged files (same stat) are never read again."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def sha256(self, file: Path) -> str:
        file = file.resolve()
        key = stat_key(file)
        entry = self.entries.get(str(file))
        if entry is not None and entry.get("stat") == key:
            return str(entry["sha256"])
        digest = sha256_file(file)
        self.entries[str(file)] = {"stat": key, "sha256": digest}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.entries, sort_keys=True))
        os.replace(tmp, self.path)
        self.dirty = False
