"""`trtbuild verify build/<recipe>/provenance.json`: are these the engines the recipe builds?

Two checks per artifact named in the provenance statement: the published file still has the
recorded sha256, and a rebuild from scratch (an empty temporary cache and output folder) gives
the same bytes (`--no-rebuild` skips the second). ONNX Runtime engines must match byte for byte.
A signed statement (provenance.dsse.json, signing.py) has its signature checked first, with
`--public-key`: nothing in it is trusted before that.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtbuild.cache.files import sha256_file
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.build import Options, build
from trtbuild.release import signing

# TensorRT engines are not bit-reproducible in general (tactic timing): an engine whose bytes
# differ still verifies when its layer JSON (the engine inspector's tactics) matches. Timing
# caches are updated by every build: they are reported, never a failure.
TACTICS_SUFFIX = ".layers.json"
INFORMATIONAL_SUFFIXES = (".timing.cache",)


@dataclass(frozen=True)
class ArtifactCheck:
    name: str
    recorded: str
    published: str | None  # sha256 of the file in the build folder, None if missing
    rebuilt: str | None
    tactics_match: bool = False  # for a TensorRT engine whose bytes differ
    rebuild: bool = True  # False: only the published file was checked

    @property
    def ok(self) -> bool:
        if self.published != self.recorded:
            return False
        if not self.rebuild:
            return True
        if self.rebuilt == self.recorded or self.name.endswith(INFORMATIONAL_SUFFIXES):
            return True
        return self.rebuilt is not None and self.tactics_match

    def describe(self) -> str:
        if self.ok and not self.rebuild:
            return f"{self.name}: matches (published; not rebuilt)"
        if self.ok and self.rebuilt != self.recorded:
            why = "tactics match (layer JSON)" if self.tactics_match else "informational"
            return f"{self.name}: matches (published); rebuilt bytes differ, {why}"
        if self.ok:
            return f"{self.name}: matches (published and rebuilt)"
        problems = []
        if self.published is None:
            problems.append("published file is missing")
        elif self.published != self.recorded:
            problems.append(
                f"published file was altered ({self.recorded[:12]} -> {self.published[:12]})"
            )
        if self.rebuild and self.rebuilt is None:
            problems.append("the rebuild did not produce it")
        elif self.rebuild and self.rebuilt is not None and self.rebuilt != self.recorded:
            problems.append(f"rebuild differs ({self.recorded[:12]} -> {self.rebuilt[:12]})")
        return f"{self.name}: MISMATCH: " + "; ".join(problems)


def verify(
    provenance: str | Path,
    report: Any = print,
    public_key: Path | None = None,
    rebuild: bool = True,
) -> list[ArtifactCheck]:
    path = Path(provenance)
    statement = read_statement(path, public_key, report)
    try:
        params = statement["predicate"]["buildDefinition"]["externalParameters"]
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
        recipe = Path(params["recipe_path"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrtbuildError(f"{path}: not a trtbuild provenance statement ({exc})") from None
    published = {name: _sha_or_none(path.parent / name) for name in subjects}
    if not rebuild:
        return [
            ArtifactCheck(name, recorded, published[name], None, rebuild=False)
            for name, recorded in sorted(subjects.items())
        ]
    for line in changed_inputs(statement, recipe.parent):  # why a rebuild would differ
        report(line)
    with tempfile.TemporaryDirectory(prefix="trtbuild-verify-") as tmp:
        report(f"rebuilding {recipe} in an empty cache ({tmp})")
        opts = Options(
            backend=None if params["backend"] == "recipe" else params["backend"],
            budget=params["budget"] or None,
            out=Path(tmp) / "build",
            cache=Path(tmp) / "cache",
            release=bool(params.get("release")),
            write_lock=False,
        )
        result = build(recipe, opts)
    rebuilt: dict[str, str] = {}
    layers_of: dict[str, str] = {}
    for t in result.targets:
        for p in t.parts:
            prefix = f"{t.name}/"
            rebuilt[prefix + p.engine] = p.sha256
            for name, sha in p.sidecars.items():
                rebuilt[prefix + name] = sha
                if name.endswith(TACTICS_SUFFIX):
                    layers_of[prefix + p.engine] = prefix + name
    return compare(subjects, published, rebuilt, layers_of)


def changed_inputs(statement: Any, root: Path) -> list[str]:
    """One line per input file the statement records (resolvedDependencies, relative to the
    recipe's folder `root`) whose content is not the recorded one now, or that is gone."""
    lines = []
    for dependency in statement["predicate"]["buildDefinition"].get("resolvedDependencies", []):
        uri, recorded = dependency.get("uri", ""), dependency.get("digest", {}).get("sha256", "")
        if not uri.startswith("file:"):
            continue
        name = uri.removeprefix("file:")
        now = _sha_or_none(root / name)
        if now != recorded:
            was = f"{recorded[:12]} -> {now[:12] if now else 'gone'}"
            lines.append(f"input {name} changed since the build ({was}): the rebuild uses it")
    return lines


def compare(
    subjects: dict[str, str],
    published: dict[str, str | None],
    rebuilt: dict[str, str],
    layers_of: dict[str, str],
) -> list[ArtifactCheck]:
    """One check per recorded artifact. An engine whose rebuilt bytes differ still verifies when
    its layer JSON (engine inspector: layers and tactics) was rebuilt identical to the recorded one."""
    checks = []
    for name, recorded in sorted(subjects.items()):
        layers = layers_of.get(name)
        tactics = (
            layers is not None and layers in subjects and rebuilt.get(layers) == subjects[layers]
        )
        checks.append(ArtifactCheck(name, recorded, published[name], rebuilt.get(name), tactics))
    return checks


def read_statement(path: Path, public_key: Path | None, report: Any = print) -> Any:
    """The provenance statement at `path`; from a DSSE envelope only once its signature verifies."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrtbuildError(f"{path}: not a trtbuild provenance statement ({exc})") from None
    if not signing.is_envelope(data):
        if public_key is not None:
            raise TrtbuildError(f"{path}: not signed; --public-key checks a .dsse.json envelope")
        return data
    payload = signing.open_envelope(path, data, public_key)
    report(f"{path.name}: signature verifies with {public_key}")
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise TrtbuildError(f"{path}: the signed payload is not JSON ({exc})") from None


def _sha_or_none(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None
