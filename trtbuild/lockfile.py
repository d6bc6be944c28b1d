"""The lock file: every input of a build pinned by digest, and the check of it against now.

Format (TOML, keys sorted, version 2), written next to the recipe as `<recipe>.lock`:

    [lock]          version, recipe name
    [invocation]    the command-line options that change outputs
    [toolchain]     Python, torch, onnx, onnxscript, onnx-ir and trtbuild versions
    [[file]]        path (relative to the recipe's folder), sha256: the recipe, weights, and every
                    file model code read (source, helpers, data), wherever it lives
    [[distribution]] name, version: installed packages model code imported
    [[env]]         name, sha256 of the value ("unset" if it was not set): variables model code read
    [[target]]      model, precision, backend, requested_backend, device (fingerprint), dir,
                    budget_bytes, boundary_bytes, graph_digest,
                    [[target.part]] index, key, engine, sha256, sidecars, peak_rss_bytes, fields

`staleness()` is the one answer to "is the last build still what a clean build would give?":
`run`'s no-op path, `run --locked` and `explain` all call it. It reads the lock, file stats,
the environment and package metadata: no torch, no onnx.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomli_w

from trtbuild.digests import DigestMemo
from trtbuild.inputs import Inputs, machine
from trtbuild.store import atomic_write_text
from trtbuild.toolchain import toolchain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCK_VERSION = 2


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock at `path`, or None when there is none (or an older or unreadable one)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
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


def inputs_section(inputs: Inputs) -> dict[str, list[dict[str, str]]]:
    """The [[file]], [[distribution]] and [[env]] tables of a lock."""
    return {
        "file": [{"path": p, "sha256": s} for p, s in sorted(inputs.files.items())],
        "distribution": [
            {"name": n, "version": v} for n, v in sorted(inputs.distributions.items())
        ],
        "env": [{"name": n, "sha256": d} for n, d in sorted(inputs.env.items())],
    }


def locked_inputs(lock: dict[str, Any]) -> Inputs:
    return Inputs(
        {e["path"]: e["sha256"] for e in lock.get("file", [])},
        {e["name"]: e["version"] for e in lock.get("distribution", [])},
        {e["name"]: e["sha256"] for e in lock.get("env", [])},
    )


def target_entry(lock: dict[str, Any] | None, model: str, precision: str) -> dict[str, Any]:
    for entry in (lock or {}).get("target", []):
        if entry["model"] == model and entry["precision"] == precision:
            return dict(entry)
    return {}


def staleness(
    lock: dict[str, Any] | None,
    invocation: dict[str, Any],
    memo: DigestMemo,
    root: Path,
    limit: int | None = 1,
) -> list[str]:
    """Why the lock no longer describes a clean build of now ([] = up to date).

    Inputs (files by content, distributions, environment), the machine (toolchain, each
    target's backend choice and device fingerprint), and every published output.
    `limit` stops at the first reasons found: the no-op path needs only one.
    """
    if lock is None:
        return ["no lock file"]
    reasons: list[str] = []
    if lock.get("invocation") != invocation:
        reasons.append("options changed")
    reasons += _machine_changes(lock)
    if limit is not None and len(reasons) >= limit:
        return reasons[:limit]
    reasons += locked_inputs(lock).changes(root, memo, limit)
    if limit is not None and len(reasons) >= limit:
        return reasons[:limit]
    reasons += _missing_outputs(lock, memo)
    return reasons if limit is None else reasons[:limit]


def _machine_changes(lock: dict[str, Any]) -> list[str]:
    from trtbuild.backends import resolve_backend

    tools = toolchain()
    if lock.get("toolchain") != tools:
        return ["toolchain changed " + _diff(lock.get("toolchain", {}), tools)]
    found = []
    devices: dict[str, dict[str, str]] = {}  # one fingerprint per backend (nvidia-smi is slow)
    for target in lock.get("target", []):
        backend = target["backend"]
        now = resolve_backend(target.get("requested_backend", backend))
        name = f"{target['model']}/{target['precision']}"
        if now != backend:
            found.append(f'{name}: backend "auto" now means {now}, was {backend}')
            continue
        if backend not in devices:
            devices[backend] = machine(backend)["device"]
        device = devices[backend]
        if target.get("device") != device:
            found.append(f"{name}: device changed " + _diff(target.get("device", {}), device))
    return found


def _diff(old: dict[str, str], new: dict[str, str]) -> str:
    changed = [
        f"{k} {old.get(k, '-')} -> {new.get(k, '-')}"
        for k in sorted({*old, *new})
        if old.get(k) != new.get(k)
    ]
    return f"({', '.join(changed)})"


def _missing_outputs(lock: dict[str, Any], memo: DigestMemo) -> list[str]:
    for target in lock.get("target", []):
        folder = Path(target["dir"])
        for part in target.get("part", []):
            for name, sha in {part["engine"]: part["sha256"], **part.get("sidecars", {})}.items():
                engine = folder / name
                if not engine.is_file() or memo.sha256(engine) != sha:
                    return [f"{engine} is missing or altered"]
        if not (folder / "engine.json").is_file():
            return [f"{folder}/engine.json is missing"]
    return []
