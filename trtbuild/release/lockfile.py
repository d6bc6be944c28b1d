"""The lock file: every input of a build pinned by digest, and the check of it against now.

Format (TOML, keys sorted, version 2), written next to the recipe as `<recipe>.lock`:

    [lock]          version, recipe name
    [invocation]    the command-line options that change outputs
    [toolchain]     Python, torch, onnx, onnxscript, onnx-ir and trtbuild versions
    [[file]]        path (relative to the recipe's folder), sha256: the recipe, weights, and every
                    file model code read (source, helpers, data), wherever it lives
    [[distribution]] name, version: installed packages model code imported
    [[env]]         name, sha256 of the value ("unset" if it was not set): variables model code read
    [[glob]]        pattern, matches: each glob of the recipe (a model's data, its calibration and
                    check samples) and the files it matched, so a new match is a change
    [[target]]      model, precision, backend, requested_backend, device (fingerprint), dir,
                    budget_bytes, boundary_bytes, graph_digest,
                    [[target.part]] index, key, engine, sha256, sidecars, peak_rss_bytes, fields
                    [target.check] key, passed, worst_rel_l2 (the accuracy check; a failed one is
                    stale: the next run reports it again)
                    [target.calibration] key, sha256, method, samples (int8/fp8: the table its
                    engines were quantized with; its sample files are [[file]] entries)

`staleness()` is the one answer to "is the last build still what a clean build would give?":
`run`'s no-op path, `run --locked` and `explain` all call it. It reads the lock, file stats,
the environment and package metadata: no torch, no onnx.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtbuild.cache.atomic import write_text
from trtbuild.cache.digests import DigestMemo
from trtbuild.release.inputs import Inputs, glob_changes, machine
from trtbuild.release.toolchain import toolchain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOCK_VERSION = 2


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_suffix(".lock")


@dataclass(frozen=True)
class LockedPart:
    index: int
    key: str  # the action key
    engine: str  # file name in the target's folder
    sha256: str
    sidecars: dict[str, str]  # file name -> sha256 of files the engine reads beside it
    peak_rss_bytes: int
    fields: dict[str, str]  # action field -> digest: why a part was rebuilt

    def outputs(self) -> dict[str, str]:
        """file name -> sha256 of everything this part published."""
        return {self.engine: self.sha256, **self.sidecars}


@dataclass(frozen=True)
class LockedTarget:
    model: str
    precision: str
    backend: str
    requested_backend: str
    device: dict[str, str]  # the fingerprint the engines were built for
    dir: str
    budget_bytes: int
    boundary_bytes: int
    graph_digest: str
    memory: dict[str, Any] | None  # the memory model it was planned with (memory.pinned)
    parts: list[LockedPart]
    kind: str | None = None  # the device kind it was built for; absent: the building machine's
    check: dict[str, Any] | None = None  # key, passed, worst_rel_l2 (check.py); absent: unchecked
    calibration: dict[str, Any] | None = None  # int8/fp8: key, sha256, method, samples of its table

    @property
    def slot(self) -> str:
        return self.precision if self.kind is None else f"{self.precision}@{self.kind}"

    @property
    def name(self) -> str:
        return f"{self.model}/{self.slot}"


@dataclass(frozen=True)
class Lock:
    """Every input of a build, pinned: written by publish.py, read by everything else."""

    recipe: str
    invocation: dict[str, Any]
    toolchain: dict[str, str]
    inputs: Inputs
    targets: list[LockedTarget]
    globs: dict[str, list[str]] = field(default_factory=dict)  # pattern -> its matches

    def target(self, model: str, precision: str, kind: str | None = None) -> LockedTarget | None:
        wanted = (model, precision, kind)
        return next((t for t in self.targets if (t.model, t.precision, t.kind) == wanted), None)

    def to_toml(self) -> dict[str, Any]:
        """The one writer of the format in the module docstring."""
        return {
            "lock": {"version": LOCK_VERSION, "recipe": self.recipe},
            "invocation": self.invocation,
            "toolchain": self.toolchain,
            "file": [{"path": p, "sha256": d} for p, d in sorted(self.inputs.files.items())],
            "distribution": [
                {"name": n, "version": v} for n, v in sorted(self.inputs.distributions.items())
            ],
            "env": [{"name": n, "sha256": d} for n, d in sorted(self.inputs.env.items())],
            "target": [_target_toml(t) for t in self.targets],
            "glob": [{"pattern": p, "matches": m} for p, m in sorted(self.globs.items())],
        }

    @classmethod
    def from_toml(cls, data: dict[str, Any]) -> Lock:
        """The one reader: KeyError, TypeError or ValueError on anything but that format."""
        if data["lock"]["version"] != LOCK_VERSION:
            raise ValueError(f"lock version {data['lock']['version']}, not {LOCK_VERSION}")
        inputs = Inputs(
            {e["path"]: e["sha256"] for e in data["file"]},
            {e["name"]: e["version"] for e in data["distribution"]},
            {e["name"]: e["sha256"] for e in data["env"]},
        )
        targets = [
            LockedTarget(
                **{k: t[k] for k in _TARGET_SCALARS},
                device=dict(t["device"]),
                memory=t.get("memory"),
                parts=[LockedPart(**p) for p in t.get("part", [])],
                kind=t.get("kind"),
                check=t.get("check"),
                calibration=t.get("calibration"),
            )
            for t in data["target"]
        ]
        globs = {e["pattern"]: list(e["matches"]) for e in data.get("glob", [])}
        recipe, invocation, tools = data["lock"]["recipe"], data["invocation"], data["toolchain"]
        return cls(recipe, invocation, tools, inputs, targets, globs)


_TARGET_SCALARS = (
    "model",
    "precision",
    "backend",
    "requested_backend",
    "dir",
    "budget_bytes",
    "boundary_bytes",
    "graph_digest",
)


def _target_toml(target: LockedTarget) -> dict[str, Any]:
    entry = {k: getattr(target, k) for k in _TARGET_SCALARS}
    entry["device"] = target.device
    if target.kind is not None:
        entry["kind"] = target.kind
    if target.memory is not None:
        entry["memory"] = target.memory
    if target.check is not None:
        entry["check"] = target.check
    if target.calibration is not None:
        entry["calibration"] = target.calibration
    entry["part"] = [asdict(p) for p in target.parts]
    return entry


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`, or None when there is none (or an older or unreadable one)."""
    try:
        return Lock.from_toml(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):  # TOMLDecodeError is a ValueError
        return None


def write_lock(path: Path, lock: Lock) -> None:
    import tomli_w  # not on the no-op path, which only reads locks

    write_text(
        path,
        "# Written by trtbuild: every input of the build, pinned by digest.\n"
        + tomli_w.dumps(_sorted(lock.to_toml())),
    )


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


UNSAID = {"check": True}  # options an invocation records only when not at their default


def _said(name: str, value: Any) -> str:
    """An option's value as a user would say it: budget 0 is the recipe's own."""
    return "the recipe's" if name == "budget" and value == 0 else repr(value)


def staleness(
    lock: Lock | None,
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
    was, now = {**UNSAID, **lock.invocation}, {**UNSAID, **invocation}
    reasons += [
        f"option {name} changed ({_said(name, was.get(name))} -> {_said(name, now.get(name))})"
        for name in sorted({*was, *now})
        if was.get(name) != now.get(name)
    ]
    reasons += _machine_changes(lock)
    if limit is not None and len(reasons) >= limit:
        return reasons[:limit]
    reasons += lock.inputs.changes(root, memo, limit)
    reasons += glob_changes(lock.globs, root)
    if limit is not None and len(reasons) >= limit:
        return reasons[:limit]
    reasons += [
        f"{t.name}: check failed" for t in lock.targets if t.check and not t.check["passed"]
    ]
    reasons += _missing_outputs(lock, memo)
    return reasons if limit is None else reasons[:limit]


def _machine_changes(lock: Lock) -> list[str]:
    from trtbuild.backends import resolve_backend

    tools = toolchain()
    if lock.toolchain != tools:
        return ["toolchain changed " + _diff(lock.toolchain, tools)]
    found = []
    devices: dict[tuple[str, str | None], dict[str, str]] = {}  # nvidia-smi is slow: once each
    for target in lock.targets:
        now = resolve_backend(target.requested_backend)
        if now != target.backend:
            found.append(f'{target.name}: backend "auto" now means {now}, was {target.backend}')
            continue
        if (target.backend, target.kind) not in devices:
            devices[target.backend, target.kind] = machine(target.backend, target.kind)["device"]
        device = devices[target.backend, target.kind]
        if target.device != device:
            found.append(f"{target.name}: device changed " + _diff(target.device, device))
    return found


def _diff(old: dict[str, str], new: dict[str, str]) -> str:
    changed = [
        f"{k} {old.get(k, '-')} -> {new.get(k, '-')}"
        for k in sorted({*old, *new})
        if old.get(k) != new.get(k)
    ]
    return f"({', '.join(changed)})"


def _missing_outputs(lock: Lock, memo: DigestMemo) -> list[str]:
    for target in lock.targets:
        folder = Path(target.dir)
        for part in target.parts:
            for name, sha in part.outputs().items():
                engine = folder / name
                if not engine.is_file() or memo.sha256(engine) != sha:
                    return [f"{engine} is missing or altered"]
        if not (folder / "engine.json").is_file():
            return [f"{folder}/engine.json is missing"]
    return []
