"""Where everything lives in a cache directory: the one module that knows its file names.

    cas/<sha256>        immutable blobs (engines, ONNX files, graphs), read-only
    ac/<key>.json       action results naming blobs, each bound to its key by an HMAC
    mac.key             this cache's HMAC secret (mode 0600 directory entry, made once)
    locks/<key>.lock    one lock per action while it is being built
    tmp/<pid>-...       job folders and temporary files; the pid says whose
    digests.json        file digests by stat (a speed-up only: DigestMemo)
    memory.json         measured process peaks the memory model is fitted to
    roots/<hash>        the path of a lock file a build wrote: `cache gc` keeps what it names
    README.md           what this directory is

Light on purpose (no third-party import): the no-op path reads `digests` through it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

README = """\
# trtbuild cache

Content-addressed store of trtbuild (https://github.com/ -- see the project README).
- cas/<sha256>: immutable blobs, verified against their digest on read.
- ac/<action key>.json: action results pointing at blobs, each bound to its key by an HMAC
  with the secret in mac.key.
Safe to delete; the next build fills it again.
"""


def default_cache_dir() -> Path:
    """$TRTBUILD_CACHE, else cache/ at the project root (project_root)."""
    env = os.environ.get("TRTBUILD_CACHE")
    return Path(env).resolve() if env else project_root() / "cache"


def project_root(start: Path | None = None) -> Path:
    """The folder default outputs go to: the nearest one up from `start` (the working folder)
    that holds `.git`, else `start` itself. As cargo puts target/ at its workspace's root, a run
    from a subfolder (`cd recipes && trtbuild run resnet.toml`) uses the project's cache/ and
    build/, not a second pair inside the subfolder."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return here


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    @property
    def cas(self) -> Path:
        return self.root / "cas"

    @property
    def ac(self) -> Path:
        return self.root / "ac"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def mac_key(self) -> Path:
        return self.root / "mac.key"

    @property
    def digests(self) -> Path:
        return self.root / "digests.json"

    @property
    def memory(self) -> Path:
        return self.root / "memory.json"

    @property
    def roots(self) -> Path:
        return self.root / "roots"

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    def blob(self, digest: str) -> Path:
        return self.cas / digest

    def action(self, key: str) -> Path:
        return self.ac / f"{key}.json"
