"""Checkpoints as people have them: one file, or a Hugging Face model folder, maybe sharded.

A `weights` path is one of
- a `.safetensors` file, or a `.pt`/`.pth`/`.bin` state dict (loaded with weights_only: no code);
- a `*.index.json` of a sharded checkpoint (`weight_map`: tensor name -> shard file);
- a model folder: its `model.safetensors.index.json`, `model.safetensors`,
  `pytorch_model.bin.index.json` or `pytorch_model.bin`, first found; a `config.json` beside
  them belongs to the checkpoint too (it is the model's shape).

Names. The model's state-dict names meet the stored names by one rule: as they are; else with
the leading component every model name shares removed (a wrapper's `m.`); else with the
checkpoint's most common leading component added (a task model's `model.`); else both. The first
that finds every tensor wins; if none does, the error names the first missing and unexpected
names. Only file layout and names here (no torch at import): the orchestrator pins the files.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbuild.errors import TrtbuildError

FOLDER_LAYOUTS = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")
SUFFIXES = (".safetensors", *STATE_DICT_SUFFIXES)


def entry_file(path: Path) -> Path:
    """The file that says what the checkpoint holds: the weights file, or the folder's index."""
    if path.is_dir():
        for name in FOLDER_LAYOUTS:
            if (path / name).is_file():
                return path / name
        raise TrtbuildError(
            f"{path}: field 'weights': expected a model folder with one of "
            f"{', '.join(FOLDER_LAYOUTS)}, found none"
        )
    if path.name.endswith(".index.json") or path.suffix in SUFFIXES:
        return path
    raise TrtbuildError(
        f"{path}: field 'weights': expected a .safetensors, .pt or .bin file, an .index.json "
        f"or a model folder, got {path.name}"
    )


def shard_map(path: Path) -> dict[str, Path]:
    """Stored tensor name -> the file that holds it."""
    entry = entry_file(path)
    if not entry.name.endswith(".index.json"):
        return {}  # one file: names come from the file itself (see Checkpoint.names)
    try:
        weight_map = json.loads(entry.read_text())["weight_map"]
        assert isinstance(weight_map, dict)
    except (OSError, ValueError, KeyError, AssertionError):
        raise TrtbuildError(
            f"{entry}: expected a checkpoint index (JSON with a 'weight_map' of name -> shard)"
        ) from None
    return {name: entry.parent / shard for name, shard in weight_map.items()}


def checkpoint_files(path: Path) -> list[Path]:
    """Every file the checkpoint is made of, as the lock pins them (config.json included)."""
    entry = entry_file(path)
    files = {entry, *shard_map(path).values()}
    if path.is_dir() and (path / "config.json").is_file():
        files.add(path / "config.json")
    return sorted(files)


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header, offset of the data) of a safetensors file; a broken one is a one-line error."""
    with path.open("rb") as handle:
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(min(length, 100 << 20)))
            assert isinstance(header, dict)
        except (struct.error, ValueError, AssertionError):
            raise TrtbuildError(
                f"{path}: field 'weights': expected a safetensors file, but its header is not valid"
            ) from None
    header.pop("__metadata__", None)
    return header, 8 + length


def safetensors_digests(path: Path) -> dict[str, str]:
    """Per-tensor sha256 straight from the file's byte ranges: no tensors built."""
    header, base = safetensors_header(path)
    out = {}
    with path.open("rb") as handle:
        for name, info in sorted(header.items()):
            start, end = info["data_offsets"]
            handle.seek(base + start)
            digest = hashlib.sha256(json.dumps([info["dtype"], info["shape"]]).encode())
            remaining = end - start
            while remaining:
                chunk = handle.read(min(remaining, 1 << 22))
                digest.update(chunk)
                remaining -= len(chunk)
            out[name] = digest.hexdigest()
    return out


def name_map(
    path: Path, wanted: list[str], stored: Iterable[str], aliases: dict[str, list[str]]
) -> dict[str, str]:
    """Model name -> stored name for every wanted tensor, by the rule in the module docstring.

    `aliases`: names that share one tensor (tied weights); any one of them may be the stored one.
    """
    available = set(stored)
    firsts = {n.partition(".")[0] for n in wanted}
    strip = f"{next(iter(firsts))}." if len(firsts) == 1 and all("." in n for n in wanted) else ""
    common = Counter(n.partition(".")[0] for n in available if "." in n).most_common(1)
    add = f"{common[0][0]}." if common else ""
    rules: list[Callable[[str], str]] = [lambda n: n]
    if strip:
        rules.append(lambda n: n.removeprefix(strip))
    if add:
        rules.append(lambda n: add + n)
        if strip:
            rules.append(lambda n: add + n.removeprefix(strip))
    best: tuple[dict[str, str], list[str]] | None = None
    for rule in rules:
        found, missing = {}, []
        for name in wanted:
            hit = next((rule(a) for a in aliases.get(name, [name]) if rule(a) in available), None)
            if hit is None:
                missing.append(name)
            else:
                found[name] = hit
        if not missing:
            return found
        if best is None or len(missing) < len(best[1]):
            best = (found, missing)
    assert best is not None
    found, missing = best
    unexpected = sorted(available - set(found.values()))
    extra = (
        f"; first unexpected: {unexpected[0]!r} ({len(unexpected)} unexpected)"
        if unexpected
        else ""
    )
    raise TrtbuildError(
        f"{path}: checkpoint has no tensor for {missing[0]!r} ({len(missing)} missing){extra}"
    )


@dataclass
class Checkpoint:
    """The stored tensors of one checkpoint; opens a shard only when one of its tensors is read."""

    path: Path
    shards: dict[str, Path]  # stored name -> file (empty: one file)
    opened: set[Path] = field(default_factory=set)
    states: dict[Path, dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Path) -> Checkpoint:
        return cls(path, shard_map(path))

    @property
    def files(self) -> list[Path]:
        """The tensor files (index and config excluded)."""
        return sorted(set(self.shards.values())) or [entry_file(self.path)]

    def file_of(self, stored: str) -> Path:
        return self.shards.get(stored) or entry_file(self.path)

    def names(self) -> set[str]:
        if self.shards:
            return set(self.shards)
        return set(_file_names(self.files[0]))

    def digests(self) -> dict[str, str]:
        """sha256 per stored tensor, read from every file of the checkpoint."""
        out: dict[str, str] = {}
        for file in self.files:
            if file.suffix == ".safetensors":
                out.update(safetensors_digests(file))
            else:
                state = self._state(file)
                out.update({k: tensor_digest(v) for k, v in state.items() if hasattr(v, "shape")})
        return out

    def load(self, stored: Iterable[str]) -> dict[str, Any]:
        """The stored tensors (torch), opening only the files that hold them."""
        by_file: dict[Path, list[str]] = {}
        for name in stored:
            by_file.setdefault(self.file_of(name), []).append(name)
        out: dict[str, Any] = {}
        for file, names in by_file.items():
            self.opened.add(file)
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), framework="pt") as handle:
                    out.update({n: handle.get_tensor(n) for n in names})
            else:
                state = self._state(file)
                out.update({n: state[n] for n in names})
        return out

    def _state(self, file: Path) -> dict[str, Any]:
        if file not in self.states:
            self.states[file] = load_state_dict(file)
        return self.states[file]


def _file_names(file: Path) -> list[str]:
    if file.suffix == ".safetensors":
        return list(safetensors_header(file)[0])
    return list(load_state_dict(file))


def load_state_dict(path: Path) -> dict[str, Any]:
    """A .pt/.pth/.bin state dict, memory-mapped; only plain tensors (weights_only): no code runs."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # UnpicklingError for objects weights_only refuses, RuntimeError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrtbuildError(
            f"{path}: field 'weights': expected a state dict of tensors that torch.load(weights_only=True) "
            f"accepts, but it failed: {first}"
        ) from None
    if not isinstance(state, dict):
        raise TrtbuildError(
            f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}"
        )
    return state


def tensor_digest(tensor: Any) -> str:
    """sha256 of a torch tensor's dtype, shape and bytes."""
    flat = tensor.detach().contiguous().reshape(-1).view(-1).cpu()
    import torch

    raw = flat.view(torch.uint8).numpy().tobytes()
    head = json.dumps([str(tensor.dtype), list(tensor.shape)]).encode()
    return hashlib.sha256(head + raw).hexdigest()
