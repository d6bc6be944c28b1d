"""Everything an engine depends on, and the one function that says whether it changed.

Two kinds of facts decide whether a published engine is still what a clean build would give:

- the model's inputs (`Inputs`): files by content (the recipe, weights, model code and every
  helper or data file it read, wherever it lives), installed distributions by version, and the
  environment variables model code read, by digest. The graph job discovers them
  (trtbuild.model.depfile); paths are kept relative to the recipe's folder, so two checkouts with the
  same content agree, and keys hash content, never absolute paths.
- the machine (`machine()`): the toolchain versions and the backend's device fingerprint.

`run`'s no-op check, `run --locked`, `explain` and the action keys all read these from here.
Nothing in this module imports torch, onnx or pydantic: the no-op check must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbuild.cache.digests import DigestMemo, digest_json, env_digest
from trtbuild.distributions import version
from trtbuild.release.toolchain import toolchain


@dataclass(frozen=True)
class Inputs:
    """Discovered inputs of one model: what its code touched, pinned by content."""

    files: dict[str, str] = field(default_factory=dict)  # path relative to the recipe -> sha256
    distributions: dict[str, str] = field(default_factory=dict)  # name -> version
    env: dict[str, str] = field(default_factory=dict)  # name -> digest of the value, or "unset"

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"files": self.files, "distributions": self.distributions, "env": self.env}

    @classmethod
    def from_json(cls, data: dict[str, dict[str, str]]) -> Inputs:
        return cls(dict(data["files"]), dict(data["distributions"]), dict(data["env"]))

    def digest(self) -> str:
        """What goes into action keys: contents and relative locations, never absolute paths."""
        return digest_json(self.to_json())

    def changes(self, root: Path, memo: DigestMemo, limit: int | None = None) -> list[str]:
        """What differs between these recorded inputs and the disk and environment now."""
        found: list[str] = []
        for rel, sha in self.files.items():
            path = root / rel
            if not path.is_file():
                found.append(f"{rel} is missing")
            elif memo.sha256(path) != sha:
                found.append(f"{rel} changed")
            if limit is not None and len(found) >= limit:
                return found
        for name, was in self.distributions.items():
            now = version(name)
            if now != was:
                found.append(f"distribution {name} changed ({was} -> {now})")
        for name, digest in self.env.items():
            if env_digest(os.environ.get(name)) != digest:
                found.append(f"environment variable {name} changed")
        return found


def discovered(raw: dict[str, Any], root: Path, memo: DigestMemo) -> Inputs:
    """Inputs from a graph job's depfile (absolute paths) for the recipe whose folder is `root`."""
    files = {relative(Path(p), root): memo.sha256(Path(p)) for p in raw["files"]}
    return Inputs(dict(sorted(files.items())), dict(raw["distributions"]), dict(raw["env"]))


def glob_matches(pattern: str, root: Path) -> list[str]:
    """The files `pattern` (relative to the recipe's folder `root`, `**` recursive) matches,
    relative to `root`, sorted: what a [[glob]] entry records."""
    from trtbuild.recipe.globs import matching_files  # not on a no-op without globs

    return sorted(os.path.relpath(f, root) for f in matching_files(pattern, root))


def glob_changes(globs: dict[str, list[str]], root: Path) -> list[str]:
    """Why recorded glob matches (pattern -> files, glob_matches) are not those of now."""
    reasons = []
    for pattern, was in globs.items():
        now = glob_matches(pattern, root)
        if now != was:
            new, gone = sorted(set(now) - set(was)), sorted(set(was) - set(now))
            said = [
                *(["new: " + ", ".join(new)] if new else []),
                *(["gone: " + ", ".join(gone)] if gone else []),
            ]
            reasons.append(f"files matching {pattern!r} changed ({'; '.join(said)})")
    return reasons


def relative(path: Path, root: Path) -> str:
    """`path` relative to the recipe's folder (with ../ where it lies outside): portable."""
    return os.path.relpath(path.resolve(), root)


def machine(backend: str, kind: str | None = None) -> dict[str, dict[str, str]]:
    """The facts of this machine that shape an engine built with `backend`; for a device `kind`
    (built where a node offers it: executor.py) the kind stands for this machine's device.

    The one definition: action keys ("toolchain", "device"), the lock, the no-op check and
    explain all call this, so they cannot disagree about what changed.
    """
    from trtbuild.backends import backend_class

    device = backend_class(backend).fingerprint()
    if kind is not None:  # the backend's version stays: every node runs the same (README)
        device = {k: v for k, v in device.items() if k in ("backend", backend)} | {"device": kind}
    return {"toolchain": toolchain(), "device": device}
