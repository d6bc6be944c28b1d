"""`trtbuild cache stats|gc|verify`: look after the content-addressed store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trtbuild.cache import upkeep
from trtbuild.cli.common import size_arg
from trtbuild.errors import TrtbuildError
from trtbuild.recipe.sizes import format_size


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("cache", help="cache statistics, garbage collection, verification")
    parser.add_argument("action", choices=["stats", "gc", "verify"])
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache directory (default: $TRTBUILD_CACHE or ./cache)",
    )
    parser.add_argument(
        "--max-size", help="gc: shrink the cache to this size, least recently used first"
    )
    parser.add_argument(
        "--keep",
        nargs="*",
        type=Path,
        default=[],
        help="gc: lock files or provenance.json whose artifacts are never evicted",
    )
    parser.add_argument(
        "--ignore-locks",
        action="store_true",
        help="gc: may also evict what the lock files of earlier builds with this cache name",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trtbuild.cache.layout import default_cache_dir
    from trtbuild.cache.store import Store

    store = Store((args.cache or default_cache_dir()).resolve())
    if args.action == "stats":
        stats = upkeep.stats(store)
        print(
            f"{stats['blobs']} blobs, {format_size(stats['blob_bytes'])}; {stats['actions']} actions in {store.root}"
        )
    elif args.action == "verify":
        bad = upkeep.verify_all(store)
        for line in bad:
            print(f"removed: {line}")
        if bad:
            raise TrtbuildError(f"cache verify: {len(bad)} corrupt entries found and removed")
        print("every blob matches its digest and every action its key")
    else:
        if not args.max_size:
            raise TrtbuildError("cache gc: --max-size is required (e.g. --max-size 10GiB)")
        orphans = store.clean_orphans()
        if orphans:
            print(f"removed {len(orphans)} folder(s) and file(s) left by killed runs")
        roots = [] if args.ignore_locks else store.roots()
        done = upkeep.gc(store, max_size(args.max_size), referenced([*args.keep, *roots]))
        print(
            f"evicted {len(done.evicted)} blob(s), freed {done.freed_bytes} bytes "
            f"({format_size(done.freed_bytes)}); the cache now holds {format_size(done.own_bytes)} "
            f"of its own and {format_size(done.held_bytes)} that published files or "
            f"{len(roots) + len(args.keep)} kept lock(s) share"
        )
    return 0


def max_size(text: str) -> int:
    """--max-size in bytes; 0 empties the cache of everything gc may evict."""
    return 0 if text.strip() == "0" else size_arg(text, "--max-size")


def referenced(paths: list[Path]) -> set[str]:
    """sha256 of every artifact a lock file or provenance statement names."""
    from trtbuild.release.lockfile import read_lock

    keep: set[str] = set()
    for path in paths:
        if path.suffix == ".json":
            try:
                statement = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise TrtbuildError(f"{path}: cannot read provenance: {exc}") from None
            keep |= {s["digest"]["sha256"] for s in statement.get("subject", [])}
            continue
        lock = read_lock(path)
        if lock is None:
            raise TrtbuildError(f"{path}: not a trtbuild lock file")
        for target in lock.targets:
            for part in target.parts:
                keep |= set(part.outputs().values())
    return keep
