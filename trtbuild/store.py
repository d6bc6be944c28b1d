"""The content-addressed store: cas/<sha256> blobs and ac/<action key>.json results.

Writes go to a temp file and are renamed into place; every blob is verified against its digest
when read; a corrupt entry is reported, removed and treated as a miss. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from trtbuild.errors import TrtbuildError

log = logging.getLogger("trtbuild")
README = """\
# trtbuild cache

Content-addressed store of trtbuild (https://github.com/ -- see the project README).
- cas/<sha256>: immutable blobs, verified against their digest on read.
- ac/<action key>.json: action results pointing at blobs.
Safe to delete; the next build fills it again.
"""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRTBUILD_CACHE", "cache")).resolve()


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            (root / "cas").mkdir(parents=True, exist_ok=True)
            (root / "ac").mkdir(parents=True, exist_ok=True)
            (root / "tmp").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrtbuildError(
                f"{root}: cannot create the cache directory: {exc.strerror}"
            ) from None
        readme = root / "README.md"
        if not readme.exists():
            _atomic_write(readme, README.encode(), root / "tmp")

    # ---------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> Path:
        return self.root / "cas" / digest

    def put_file(self, path: Path) -> str:
        """Copy `path` into the store; returns its sha256."""
        digest = sha256_file(path)
        dest = self.blob_path(digest)
        if not dest.exists():
            _atomic_copy(path, dest, self._tmp_path(), self.root)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        dest = self.blob_path(digest)
        if not dest.exists():
            _atomic_write(dest, data, self.root / "tmp", self.root)
        return digest

    def verified_blob(self, digest: str) -> Path | None:
        """The blob's path if present and intact; a corrupt blob is removed (a miss)."""
        path = self.blob_path(digest)
        if not path.is_file():
            return None
        if sha256_file(path) != digest:
            log.warning("cache: blob %s is corrupt; removed, will rebuild", digest[:12])
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # last use, for gc
        return path

    def export_blob(self, digest: str, dest: Path) -> None:
        """Copy a verified blob to `dest` atomically."""
        src = self.verified_blob(digest)
        if src is None:
            raise TrtbuildError(f"cache: blob {digest} vanished while publishing {dest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(src, dest, dest.with_name(f".{dest.name}.tmp{os.getpid()}"), dest.parent)

    # ---------------------------------------------------------------- action results

    def get_action(self, key: str) -> dict[str, Any] | None:
        """The recorded result of `key` if every blob it names is intact, else None."""
        path = self.root / "ac" / f"{key}.json"
        try:
            result: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("cache: action %s is unreadable; removed, will rebuild", key[:12])
            path.unlink(missing_ok=True)
            return None
        for digest in result.get("blobs", {}).values():
            if self.verified_blob(digest) is None:
                path.unlink(missing_ok=True)
                return None
        os.utime(path)
        return result

    def put_action(self, key: str, result: dict[str, Any]) -> None:
        """Record `result`; the first writer wins."""
        path = self.root / "ac" / f"{key}.json"
        if path.exists():
            return
        _atomic_write(
            path,
            json.dumps(result, indent=2, sort_keys=True).encode(),
            self.root / "tmp",
            self.root,
        )

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the lock of one action: look up, lock, look up again, build."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(exist_ok=True)
        with FileLock(str(lock_dir / f"{key[:16]}.lock")):
            yield

    # ---------------------------------------------------------------- maintenance

    def stats(self) -> dict[str, int]:
        blobs = [p for p in (self.root / "cas").iterdir() if p.is_file()]
        actions = [p for p in (self.root / "ac").iterdir() if p.suffix == ".json"]
        return {"blobs": len(blobs), "blob_bytes": sum(p.stat().st_size for p in blobs),
                "actions": len(actions)}  # fmt: skip

    def verify_all(self) -> list[str]:
        """Check every blob against its digest; corrupt ones are removed. Returns their digests."""
        bad = []
        for path in sorted((self.root / "cas").iterdir()):
            if path.is_file() and sha256_file(path) != path.name:
                log.warning("cache: blob %s is corrupt; removed", path.name[:12])
                path.unlink(missing_ok=True)
                bad.append(path.name)
        return bad

    def gc(self, max_size: int, keep: set[str]) -> list[str]:
        """Evict least recently used blobs until the store fits `max_size`; never those in `keep`.

        Actions whose blobs are gone are removed with them. Returns the evicted digests.
        """
        blobs = sorted(
            (p for p in (self.root / "cas").iterdir() if p.is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        total = sum(p.stat().st_size for p in blobs)
        evicted = []
        for path in blobs:
            if total <= max_size:
                break
            if path.name in keep:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            evicted.append(path.name)
        gone = set(evicted)
        for action in (self.root / "ac").glob("*.json"):
            try:
                blobs_of = json.loads(action.read_text()).get("blobs", {}).values()
            except (OSError, ValueError):
                action.unlink(missing_ok=True)
                continue
            if gone.intersection(blobs_of):
                action.unlink(missing_ok=True)
        return evicted

    def scratch(self) -> Path:
        """A fresh private directory for one action's intermediate files."""
        return Path(tempfile.mkdtemp(prefix=f"job-{time.time_ns()}-", dir=self.root / "tmp"))

    def _tmp_path(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        os.close(fd)
        return Path(name)


def _atomic_copy(src: Path, dest: Path, tmp: Path, where: Path) -> None:
    """Copy to `tmp`, then rename over `dest`: never a half-written file under the final name."""
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _store_error(where, exc) from None


def _atomic_write(dest: Path, data: bytes, tmp_dir: Path, root: Path | None = None) -> None:
    fd, name = tempfile.mkstemp(dir=tmp_dir)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(name, dest)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise _store_error(root or dest.parent, exc) from None


def atomic_write_text(dest: Path, text: str) -> None:
    """Publish a text file under its final name only once it is whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(dest, text.encode(), dest.parent)


def _store_error(where: Path, exc: OSError) -> TrtbuildError:
    return TrtbuildError(f"{where}: write failed: {exc.strerror or exc}; nothing was published")
