"""The content-addressed store: cas/<sha256> blobs and ac/<action key>.json results.

Writes go to a temp file and are renamed into place; every blob is verified against its digest
when read (once per process: what it hashed, it trusts while the file's inode and mtime are the
same); a corrupt entry is reported, removed and treated as a miss. No pickle anywhere.

An action entry is bound to its key and its contents by an HMAC-SHA256 with a secret of this
cache (`mac.key`, made once, mode 0600): an entry edited to name another blob, or copied under
another key, is a miss that is reported, never an engine served for the wrong inputs.
Temporary files and job folders under tmp/ carry the pid of the process that made them, so
the next run (and `cache gc`) removes those whose process is gone.

With a remote cache (remote.py) the local store stays in front of it: a local miss asks the
remote, whose blobs and entry are checked and then stored here as if built here (the entry gets
this cache's HMAC); what this machine records is uploaded after it is stored locally.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from trtbuild.cache.atomic import tmp_prefix, write_bytes, write_error
from trtbuild.cache.files import _alive, _link_or_copy, _move_or_copy, sha256_file
from trtbuild.cache.layout import README, CacheLayout
from trtbuild.errors import TrtbuildError

if TYPE_CHECKING:
    from trtbuild.cache.remote import RemoteCache

log = logging.getLogger("trtbuild")


class Store:
    def __init__(self, root: Path, remote: RemoteCache | None = None) -> None:
        self.root = root
        self.remote = remote
        self.fetched: set[str] = set()  # action keys this run took from the remote cache
        # Blobs this process hashed, by (size, inode, mtime): a run publishing what it just
        # built does not read 650 MB (GPT-2 small) twice more to verify them (0.3 s each time)
        self._hashed: dict[str, tuple[int, int, int]] = {}
        self.layout = layout = CacheLayout(root)
        try:
            for folder in (layout.cas, layout.ac, layout.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrtbuildError(
                f"{root}: cannot create the cache directory: {exc.strerror}"
            ) from None
        if not layout.readme.exists():
            write_bytes(layout.readme, README.encode(), layout.tmp)

    # ---------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> Path:
        return self.layout.blob(digest)

    def put_file(self, path: Path) -> str:
        """Move `path` (a file this run made) into the store, read-only; returns its sha256."""
        digest = sha256_file(path)
        dest = self.blob_path(digest)
        if not dest.exists():
            _seal(lambda tmp: _move_or_copy(path, tmp), self._tmp_path(), dest, self.root)
            self._hashed[digest] = _identity(dest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        dest = self.blob_path(digest)
        if not dest.exists():
            _seal(lambda tmp: tmp.write_bytes(data), self._tmp_path(), dest, self.root)
        return digest

    def verified_blob(self, digest: str) -> Path | None:
        """The blob's path if present and intact; a corrupt blob is removed (a miss)."""
        path = self.blob_path(digest)
        if not path.is_file():
            return None
        if self._hashed.get(digest) != _identity(path) and sha256_file(path) != digest:
            log.warning("cache: blob %s is corrupt; removed, will rebuild", digest[:12])
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # last use, for gc
        self._hashed[digest] = _identity(path)
        return path

    def export_blob(self, digest: str, dest: Path) -> str:
        """Publish a verified blob at `dest` atomically, without a second copy where possible.

        A reflink (copy-on-write clone) where the filesystem has one; else a hard link to the
        read-only blob, so a published engine costs no disk of its own; a copy as the last resort
        (another filesystem). Returns how: "reflink", "hardlink" or "copy". A user who makes a
        hard-linked file writable and edits it alters the blob too: the next read of the blob
        checks its digest, so the edit is detected and the blob rebuilt, never served.
        """
        src = self.verified_blob(digest)
        if src is None:
            raise TrtbuildError(f"cache: blob {digest} vanished while publishing {dest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            how = _link_or_copy(src, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(dest.parent, exc, dest) from None
        return how

    # ---------------------------------------------------------------- action results

    def get_action(self, key: str) -> dict[str, Any] | None:
        """The recorded result of `key` if it is authentic and every blob it names is intact:
        from this cache, else from the remote one (then kept here)."""
        local = self._local_action(key)
        if local is not None or self.remote is None:
            return local
        return self._fetch_action(key, self.remote)

    def where(self, key: str) -> str | None:
        """ "local", "remote" or None: where the result of `key` is, without downloading it."""
        if self._local_action(key) is not None:
            return "local"
        if self.remote is not None and self.remote.has_action(key):
            return "remote"
        return None

    def _fetch_action(self, key: str, remote: RemoteCache) -> dict[str, Any] | None:
        entry = remote.get_action(key)
        if entry is None:
            return None
        for digest in entry.get("blobs", {}).values():
            if self.verified_blob(digest) is not None:
                continue
            tmp = self._tmp_path()
            try:
                if not remote.fetch_blob(digest, tmp):
                    return None
                _seal(lambda t: None, tmp, self.blob_path(digest), self.root)
            finally:
                tmp.unlink(missing_ok=True)
        self._write_action(key, entry)
        self.fetched.add(key)
        return entry

    def _local_action(self, key: str) -> dict[str, Any] | None:
        path = self.layout.action(key)
        try:
            data = json.loads(path.read_text())
            result: dict[str, Any] = data["entry"]
            authentic = hmac.compare_digest(str(data["mac"]), self._mac(key, result))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("cache: action %s is unreadable; removed, will rebuild", key[:12])
            path.unlink(missing_ok=True)
            return None
        if not authentic:
            log.warning(
                "cache: action %s does not match its key (altered?); removed, will rebuild",
                key[:12],
            )
            path.unlink(missing_ok=True)
            return None
        for digest in result.get("blobs", {}).values():
            if self.verified_blob(digest) is None:
                path.unlink(missing_ok=True)
                return None
        os.utime(path)
        return result

    def put_action(self, key: str, result: dict[str, Any], replace: bool = False) -> None:
        """Record `result`; the first writer wins unless `replace` (manifests, under a lock)."""
        path = self.layout.action(key)
        if path.exists() and not replace:
            return
        self._write_action(key, result)
        if self.remote is not None:  # blobs first: an entry is never served before its blobs
            for digest in result.get("blobs", {}).values():
                self.remote.put_blob(digest, self.blob_path(digest))
            self.remote.put_action(key, result)

    def _write_action(self, key: str, result: dict[str, Any]) -> None:
        data = {"entry": result, "key": key, "mac": self._mac(key, result)}
        encoded = json.dumps(data, indent=1, sort_keys=True).encode()
        write_bytes(self.layout.action(key), encoded, self.layout.tmp, self.root)

    def _mac(self, key: str, result: dict[str, Any]) -> str:
        payload = json.dumps([key, result], sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._secret(), payload, hashlib.sha256).hexdigest()

    def _secret(self) -> bytes:
        path = self.layout.mac_key
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        tmp = self._tmp_path()
        try:
            tmp.write_bytes(os.urandom(32))
            os.link(tmp, path)  # atomic and exclusive: of two first runs, one secret wins
        except FileExistsError:
            pass
        except OSError as exc:
            raise write_error(self.root, exc, path) from None
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_bytes()

    @contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the lock of one action: look up, lock, look up again, build."""
        lock_dir = self.layout.locks
        lock_dir.mkdir(exist_ok=True)
        with FileLock(str(lock_dir / f"{key}.lock")):
            yield

    def get_or_run(
        self, key: str, run: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], bool]:
        """(the action's record, whether it was cached): looked up, else looked up again under
        the action's lock (another run may have made it meanwhile), else `run()` and recorded."""
        record = self.get_action(key)
        if record is not None:
            return record, True
        with self.locked(key):
            record = self.get_action(key)
            if record is not None:
                return record, True
            record = run()
            self.put_action(key, record)
        return record, False

    def add_root(self, lock_file: Path) -> None:
        """Remember a lock file a build wrote: `cache gc` keeps the blobs it names."""
        path = lock_file.resolve()
        self.layout.roots.mkdir(exist_ok=True)
        name = hashlib.sha256(str(path).encode()).hexdigest()[:24]
        write_bytes(self.layout.roots / name, str(path).encode(), self.layout.tmp, self.root)

    def roots(self) -> list[Path]:
        """The lock files builds with this cache wrote that still exist (gone ones are forgotten)."""
        found = []
        for entry in sorted(self.layout.roots.glob("*")) if self.layout.roots.is_dir() else []:
            path = Path(entry.read_text())
            if path.is_file():
                found.append(path)
            else:
                entry.unlink(missing_ok=True)
        return found

    def scratch(self) -> Path:
        """A fresh private directory for one action's intermediate files."""
        return Path(tempfile.mkdtemp(prefix=tmp_prefix(), dir=self.layout.tmp))

    def _tmp_path(self) -> Path:
        fd, name = tempfile.mkstemp(prefix=tmp_prefix(), dir=self.layout.tmp)
        os.close(fd)
        return Path(name)

    def clean_orphans(self) -> list[str]:
        """Remove what killed runs left in tmp/: entries whose process is gone."""
        removed = []
        for entry in (self.layout.tmp).iterdir():
            pid = entry.name.lstrip(".").split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed


def _seal(fill: Callable[[Path], object], tmp: Path, dest: Path, root: Path) -> None:
    """Fill `tmp`, make it read-only and rename it to `dest`; on failure nothing is left behind."""
    try:
        fill(tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(root, exc, dest) from None


def _identity(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_ino, stat.st_mtime_ns
