"""Cache upkeep for `trtbuild cache stats|verify|gc`: counts, a full verification, and LRU
eviction that never counts or evicts what it cannot free (sizes in bytes)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store

log = logging.getLogger("trtbuild")


@dataclass(frozen=True)
class GcResult:
    """What `gc` did: evicted digests, bytes freed, bytes the cache still holds of its own,
    and bytes of blobs kept because they are also published files or named by a kept lock."""

    evicted: list[str]
    freed_bytes: int
    own_bytes: int
    held_bytes: int


def stats(store: Store) -> dict[str, int]:
    blobs = [p for p in store.layout.cas.iterdir() if p.is_file()]
    actions = [p for p in store.layout.ac.iterdir() if p.suffix == ".json"]
    return {
        "blobs": len(blobs),
        "blob_bytes": sum(p.stat().st_size for p in blobs),
        "actions": len(actions),
    }


def verify_all(store: Store) -> list[str]:
    """Check every blob against its digest and every action against its key and blobs.

    What fails is removed (a miss next time); returns one line per problem found.
    """
    bad = []
    for path in sorted(store.layout.cas.iterdir()):
        if path.is_file() and sha256_file(path) != path.name:
            log.warning("cache: blob %s is corrupt; removed", path.name[:12])
            path.unlink(missing_ok=True)
            bad.append(f"blob {path.name}: content does not match its digest")
    for path in sorted(store.layout.ac.glob("*.json")):
        if store._local_action(path.stem) is None:
            bad.append(f"action {path.stem}: altered, unreadable or names a missing blob")
    return bad


def gc(store: Store, max_size: int, keep: set[str]) -> GcResult:
    """Evict least recently used blobs until the cache's own bytes fit `max_size`.

    Never evicts a blob in `keep`, nor one that is also a published file (a hard link: its
    bytes stay on disk whatever the cache does), and counts neither as the cache's own.
    Action entries that name an evicted blob go with it, so `verify_all` passes afterwards.
    """
    blobs = sorted(
        (p for p in store.layout.cas.iterdir() if p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    own = [p for p in blobs if p.stat().st_nlink == 1 and p.name not in keep]
    total = sum(p.stat().st_size for p in own)
    held = sum(p.stat().st_size for p in blobs) - total
    evicted, freed = [], 0
    for path in own:
        if total <= max_size:
            break
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        total, freed = total - size, freed + size
        evicted.append(path.name)
    gone = set(evicted)
    for action in store.layout.ac.glob("*.json"):
        try:
            named = json.loads(action.read_text())["entry"].get("blobs", {}).values()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            action.unlink(missing_ok=True)
            continue
        if gone.intersection(named):
            action.unlink(missing_ok=True)
    return GcResult(evicted, freed, total, held)
