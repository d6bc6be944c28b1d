"""The lock file (every input pinned by digest) and the provenance manifest (in-toto / SLSA v1).

Reading the lock and checking it against the disk must stay cheap: no torch, no onnx.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from trtbuild.digests import DigestMemo
from trtbuild.store import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCK_VERSION = 1
STATEMENT = "https://in-toto.io/Statement/v1"
SLSA = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/trtbuild/trtbuild/build/v1"


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


def read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return data if data.get("lock", {}).get("version") == LOCK_VERSION else None


def write_lock(path: Path, lock: dict[str, Any]) -> None:
    atomic_write_text(
        path,
        "# Written by trtbuild: every input of the build, pinned by digest.\n"
        + tomli_w.dumps(_sorted(lock)),
    )


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def file_entry(path: Path, memo: DigestMemo, root: Path) -> dict[str, Any]:
    return {"path": relative(path, root), "sha256": memo.sha256(path)}


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


@dataclass(frozen=True)
class Staleness:
    reason: str | None  # None: up to date


def check_lock(lock: dict[str, Any] | None, invocation: dict[str, Any], tools: dict[str, str],
               memo: DigestMemo, root: Path) -> Staleness:  # fmt: skip
    """Whether the lock still describes the disk: inputs unchanged, every output present."""
    if lock is None:
        return Staleness("no lock file")
    if lock.get("invocation") != invocation:
        return Staleness("options changed")
    if lock.get("toolchain") != tools:
        return Staleness("toolchain changed")
    for entry in lock.get("file", []):
        path = root / entry["path"]
        if not path.is_file():
            return Staleness(f"{entry['path']} is missing")
        if memo.sha256(path) != entry["sha256"]:
            return Staleness(f"{entry['path']} changed")
    for target in lock.get("target", []):
        for part in target.get("part", []):
            files = {part["engine"]: part["sha256"], **part.get("sidecars", {})}
            for name, sha in files.items():
                engine = Path(target["dir"]) / name
                if not engine.is_file() or memo.sha256(engine) != sha:
                    return Staleness(f"{engine} is missing or altered")
        if not (Path(target["dir"]) / "engine.json").is_file():
            return Staleness(f"{target['dir']}/engine.json is missing")
    return Staleness(None)


def provenance(recipe_name: str, subjects: list[tuple[str, str]], params: dict[str, Any],
               tools: dict[str, str], deps: list[dict[str, Any]], byproducts: list[dict[str, Any]],
               started: str, finished: str) -> dict[str, Any]:  # fmt: skip
    """An in-toto Statement with a SLSA Provenance v1 predicate; subjects are the engines."""
    return {
        "_type": STATEMENT,
        "subject": [{"name": name, "digest": {"sha256": sha}} for name, sha in subjects],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"recipe": recipe_name, **params},
                "internalParameters": {"toolchain": tools},
                "resolvedDependencies": [
                    {"uri": f"file:{d['path']}", "digest": {"sha256": d["sha256"]}} for d in deps
                ],
            },
            "runDetails": {
                "builder": {"id": f"trtbuild@{tools.get('trtbuild', 'dev')}"},
                "metadata": {"startedOn": started, "finishedOn": finished},
                "byproducts": byproducts,
            },
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
