"""A cache shared by machines, over Bazel's HTTP cache protocol, behind the local store.

    GET/PUT/HEAD {url}/cas/<sha256>   blobs (engines, ONNX files)
    GET/PUT/HEAD {url}/ac/<key>       action entries: {"key": <key>, "entry": <the local entry>}

what bazel-remote serves, or nginx with WebDAV `PUT` (`create_full_put_path on`). The store asks
here on a local miss and uploads what it records (store.py); nothing else talks to the server.

Trust: what the remote serves is checked as a local entry is, but for the HMAC (its secret is one
cache's own): an entry must name its own key and only well-formed digests, and every blob is
checked against its digest before it enters the local cache. Who may write to the remote cache is
trusted, as Bazel trusts its remote cache.

Faults: a server that is down, slow (TIMEOUT) or failing (5xx) costs one warning line; the run
goes on with the local cache only. Refused credentials (401, 403) are an error: a cache a user
asked for and cannot use is a mistake to fix, not to build around.

Credentials come from the URL's user info (HTTP basic) or TRTBUILD_REMOTE_CACHE_HEADER
(`Name: value`, e.g. `Authorization: Bearer ...`); `RemoteCache.url`, the only form ever printed
or recorded, has neither.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO

from trtbuild.errors import TrtbuildError, disk_full, is_disk_full

log = logging.getLogger("trtbuild")
HEADER_ENV = "TRTBUILD_REMOTE_CACHE_HEADER"
TIMEOUT_ENV = "TRTBUILD_REMOTE_CACHE_TIMEOUT"
TIMEOUT = 10.0  # seconds per connect and per read: a slow cache must not stall a build
CHUNK = 1 << 20
DIGEST = re.compile(r"^[0-9a-f]{64}$")


def redacted(url: str) -> str:
    """The URL without user info, query or fragment: how a remote cache is named in messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def has_credentials(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.username is not None or parts.password is not None


class RemoteCache:
    """One remote cache for a run; thread-safe (one connection per request)."""

    def __init__(self, url: str, header: str | None = None, timeout: float | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TrtbuildError(
                f"remote cache: expected an http:// or https:// URL, got {redacted(url)!r}"
            )
        self.url = redacted(url)
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        header = os.environ.get(HEADER_ENV) if header is None else header
        if header:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise TrtbuildError(f"{HEADER_ENV}: expected 'Name: value', got no ':'")
            self.headers[name.strip()] = value.strip()
        self.timeout = (
            timeout if timeout is not None else float(os.environ.get(TIMEOUT_ENV, TIMEOUT))
        )
        self.down: str | None = None  # why the server is no longer asked, once it failed
        self._lock = threading.Lock()

    def check(self) -> None:
        """Ask once before the run: refused credentials fail here, before any job starts; a
        cache that is down is said once and not asked again."""
        self._status("HEAD", "ac/" + "0" * 64)

    # ---------------------------------------------------------------- blobs

    def has_blob(self, digest: str) -> bool:
        return self._status("HEAD", f"cas/{digest}")

    def fetch_blob(self, digest: str, dest: Path) -> bool:
        """Download blob `digest` into `dest`; False on a miss or when it is not that digest."""
        response = self._open("GET", f"cas/{digest}")
        if response is None:
            return False
        sha = hashlib.sha256()
        try:
            with response, dest.open("wb") as out:
                while chunk := response.read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            if is_disk_full(exc):  # this disk, not the server: the build could not go on either
                raise disk_full(dest, exc) from None
            self._give_up(f"GET /cas/{digest[:12]}: {exc}")
            return False
        if sha.hexdigest() != digest:
            log.warning(
                "remote cache %s: blob %s does not match its digest; ignored, will build it",
                self.url,
                digest[:12],
            )
            return False
        return True

    def put_blob(self, digest: str, path: Path) -> None:
        """Upload a blob unless the server already has it."""
        if self.has_blob(digest):
            return
        with path.open("rb") as body:
            self._status("PUT", f"cas/{digest}", body, path.stat().st_size)

    # ---------------------------------------------------------------- action entries

    def get_action(self, key: str) -> dict[str, Any] | None:
        """The entry recorded under `key`, if it names that key and well-formed blob digests."""
        response = self._open("GET", f"ac/{key}")
        if response is None:
            return None
        try:
            with response:
                data = json.loads(response.read())
            entry: dict[str, Any] = data["entry"]
            blobs = entry.get("blobs", {})
            valid = data["key"] == key and all(DIGEST.match(str(d)) for d in blobs.values())
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            valid = False
        except http.client.HTTPException as exc:
            self._give_up(f"GET /ac/{key[:12]}: {exc}")
            return None
        if not valid:
            log.warning("remote cache %s: entry %s is malformed; ignored", self.url, key[:12])
            return None
        return entry

    def has_action(self, key: str) -> bool:
        return self._status("HEAD", f"ac/{key}")

    def put_action(self, key: str, entry: dict[str, Any]) -> None:
        body = json.dumps({"entry": entry, "key": key}, sort_keys=True).encode()
        self._status("PUT", f"ac/{key}", body, len(body))

    # ---------------------------------------------------------------- HTTP

    def _status(
        self, method: str, path: str, body: bytes | BinaryIO | None = None, length: int = 0
    ) -> bool:
        """Whether the request succeeded (2xx); a miss, an error or a down server is False."""
        response = self._open(method, path, body, length)
        if response is None:
            return False
        with response:
            response.read()
        return True

    def _open(
        self, method: str, path: str, body: bytes | BinaryIO | None = None, length: int = 0
    ) -> http.client.HTTPResponse | None:
        if self.down is not None:
            return None
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Length"] = str(length)
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(
            f"{self.url}/{path}", data=body, headers=headers, method=method
        )
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(
                request, timeout=self.timeout
            )
            return response
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                return None
            if exc.code in (401, 403):
                raise TrtbuildError(
                    f"remote cache {self.url}: credentials refused (HTTP {exc.code} on {method} "
                    f"/{path.split('/')[0]}/...): check the user info in its URL or {HEADER_ENV}"
                ) from None
            self._give_up(f"HTTP {exc.code} on {method} /{path.split('/')[0]}/...")
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            self._give_up(str(reason) or type(reason).__name__)
        return None

    def _give_up(self, reason: str) -> None:
        """Stop asking the server for the rest of the run; say so once."""
        with self._lock:
            if self.down is not None:
                return
            self.down = reason
        log.warning(
            "remote cache %s is unavailable (%s); building with the local cache only",
            self.url,
            reason,
        )
