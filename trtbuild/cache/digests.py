"""Digests: canonical JSON, environment values, and files memoised by their stat like git's index.

The stat memo keys on (size, mtime_ns, ctime_ns, inode): `touch -r` can restore a file's mtime
after rewriting it, but not its ctime, which only the kernel sets. A memo made with
`trust_stat=False` (release builds, verify) re-hashes every file it is asked about.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from trtbuild.cache.atomic import write_bytes
from trtbuild.cache.files import sha256_file
from trtbuild.errors import TrtbuildError


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def digest_json(value: object) -> str:
    """sha256 of canonical JSON: the one way trtbuild hashes structured values."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def env_digest(value: str | None) -> str:
    """What the lock records of an environment variable: a digest, never the value."""
    if value is None:
        return "unset"
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class DigestMemo:
    """sha256 of files; unchanged files (same stat) are not read again unless told not to trust."""

    def __init__(self, path: Path | None, trust_stat: bool = True) -> None:
        self.path = path
        self.trust_stat = trust_stat
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
        if (
            entry is not None
            and entry.get("stat") == key
            and (self.trust_stat or entry.get("fresh"))
        ):
            return str(entry["sha256"])
        digest = sha256_file(file)
        # "fresh": hashed by this memo; an untrusting memo still reads each file only once.
        self.entries[str(file)] = {"stat": key, "sha256": digest, "fresh": True}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        entries = {k: {"stat": v["stat"], "sha256": v["sha256"]} for k, v in self.entries.items()}
        with contextlib.suppress(
            TrtbuildError
        ):  # a memo is only a speed-up: never a reason to fail
            write_bytes(self.path, json.dumps(entries, sort_keys=True).encode())
        self.dirty = False
