"""`trtbuild run --json`: every target with its engine paths (also on a no-op), the processes that
ran in this run (their RSS samples stay in build.json), small enough to pipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

BRIEF = ("kind", "peak_rss_bytes", "predicted_peak_bytes", "memory_limit_bytes", "seconds", "node")


def as_json(result: Any) -> dict[str, Any]:
    """What `run --json` prints after a build: per target its engines (paths a script can use)
    and, per part, the processes that ran in this run (their RSS samples stay in build.json)."""
    return {
        "ok": True,
        "up_to_date": result.up_to_date,
        "notes": result.notes,
        "targets": [
            {
                "model": t.model,
                "precision": t.precision,
                "kind": t.kind,
                "backend": t.backend,
                "dir": str(t.dir),
                "engines": [str(t.dir / p.engine) for p in t.parts],
                "budget_bytes": t.budget_bytes,
                "boundary_bytes": t.plan.boundary_bytes,
                "failed": t.failed,
                "check": t.check,
                "parts": [
                    {
                        "key": p.key,
                        "cached": p.cached,
                        "peak_rss_bytes": p.peak_rss_bytes,
                        "seconds": p.seconds,
                        "sha256": p.sha256,
                        "engine": p.engine,
                        "processes": [] if p.cached else [_brief(q) for q in p.record["processes"]],
                    }
                    for p in t.parts
                ],
            }
            for t in result.targets
        ],
    }


def _brief(process: dict[str, Any]) -> dict[str, Any]:
    return {k: process[k] for k in BRIEF if k in process}


def locked_json(args: argparse.Namespace) -> dict[str, Any]:
    """`run --json` on the no-op path: the targets and engines as the lock pins them."""
    from trtbuild.release.lockfile import lock_path, read_lock

    lock = read_lock(lock_path(Path(args.recipe)))
    assert lock is not None  # the no-op path found it current
    return {
        "ok": True,
        "up_to_date": True,
        "notes": ["up to date"],
        "targets": [
            {
                "model": t.model,
                "precision": t.precision,
                "kind": t.kind,
                "backend": t.backend,
                "dir": t.dir,
                "engines": [str(Path(t.dir) / p.engine) for p in t.parts],
                "budget_bytes": t.budget_bytes,
                "boundary_bytes": t.boundary_bytes,
                "parts": [
                    {"key": p.key, "cached": True, "sha256": p.sha256, "engine": p.engine}
                    for p in t.parts
                ],
            }
            for t in lock.targets
        ],
    }
