"""Discovered inputs: what model code actually touched while it was imported, built and exported.

Worker side, like a compiler writing a depfile. While `recording()` is active, a Python audit hook
notes every file opened for reading and every module imported, and a recording `os.environ`
notes every environment variable that model code reads (os.environ[...], .get, os.getenv).
`classify()` then sorts what was touched into the three kinds of input the lock pins:

- files, by content: model code and its helpers wherever they live (also outside the recipe's
  folder, also editable installs), and data files the model reads;
- distributions, by name and version: installed packages (site-packages) whose modules were
  loaded (not those whose metadata a scan read; never pip, setuptools or wheel);
- environment variables read by model code, by the digest of their value (never the value).

The interpreter's standard library and trtbuild itself are not inputs of a model: they are pinned
by the toolchain (Python and trtbuild versions) that every key already holds.
"""

from __future__ import annotations

import importlib.metadata
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from trtbuild.cache.digests import env_digest

_IGNORED_ROOTS = ("/proc/", "/sys/", "/dev/")
_TRTBUILD_DIR = str(Path(__file__).resolve().parents[1]) + os.sep  # the trtbuild package


@dataclass
class Touched:
    """Raw observations of one recording: absolute paths, module files, variable names."""

    files: set[str] = field(default_factory=set)
    env: dict[str, str | None] = field(default_factory=dict)


_active: Touched | None = None
_hook_installed = False
_baseline: frozenset[str] | None = None


def set_baseline(modules: Iterable[str]) -> None:
    """Modules a fresh worker has before recording; others loaded earlier count as recorded.

    The fork server imports torch.export's machinery ahead of any job; a graph job forked from
    it must still report those modules, as a fresh worker importing them in the job would.
    """
    global _baseline
    _baseline = frozenset(modules)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    touched = _active
    if touched is None:
        return
    if event == "open":
        path, mode, flags = args[0], args[1], args[2]
        reading = (
            "r" in mode if isinstance(mode, str) else (flags or 0) & os.O_ACCMODE != os.O_WRONLY
        )
        if isinstance(path, str | bytes) and reading:
            touched.files.add(os.path.abspath(os.fsdecode(path)))
    elif event == "import" and len(args) > 1 and isinstance(args[1], str):
        touched.files.add(os.path.abspath(args[1]))  # extension modules found by path


class _RecordingEnviron(os._Environ):
    """os.environ that notes the variables model code reads (see _from_model_code)."""

    def __getitem__(self, key: str) -> str:
        try:
            value: str = super().__getitem__(key)
        except KeyError:
            _note_env(key, None)
            raise
        _note_env(key, value)
        return value


def _note_env(key: str, value: str | None) -> None:
    touched = _active
    if touched is not None and key not in touched.env and _from_model_code(sys._getframe(2)):
        touched.env[key] = value


def _from_model_code(frame: FrameType | None) -> bool:
    """The nearest caller outside the standard library is model code (not a package, not us)."""
    while frame is not None:
        file = frame.f_code.co_filename
        if not _is_stdlib(file):
            return _kind(file) == "file"
        frame = frame.f_back
    return False


@contextmanager
def recording() -> Iterator[Touched]:
    """Record what the code run inside the block touches."""
    global _active, _hook_installed
    if not _hook_installed:  # audit hooks cannot be removed: one hook, switched by _active
        sys.addaudithook(_audit)
        _hook_installed = True
    previous_class = os.environ.__class__
    touched = Touched()
    _active = touched
    os.environ.__class__ = _RecordingEnviron
    before = set(sys.modules) if _baseline is None else set(_baseline)
    try:
        yield touched
    finally:
        _active = None
        os.environ.__class__ = previous_class
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None)
            if isinstance(file, str) and os.path.isabs(file):  # torch.classes: "_classes.py"
                touched.files.add(file)


# ------------------------------------------------------------------------- classification


def _dirs(*paths: str | None) -> tuple[str, ...]:
    return tuple(sorted({str(Path(p).resolve()) + os.sep for p in paths if p}, key=len))


_SITE = _dirs(
    *site.getsitepackages(),
    site.getusersitepackages(),
    sysconfig.get_path("purelib"),
    sysconfig.get_path("platlib"),
)
_STDLIB = _dirs(
    sysconfig.get_path("stdlib"),
    sysconfig.get_path("platstdlib"),
    os.path.join(sys.base_prefix, "lib"),
    os.path.join(sys.base_exec_prefix, "lib"),
)


def _site_dir(file: str) -> str | None:
    return next((d for d in reversed(_SITE) if file.startswith(d)), None)


def _is_stdlib(file: str) -> bool:
    if file.startswith("<") or file.startswith(_TRTBUILD_DIR):
        return True  # frozen modules and trtbuild's own frames are never model code
    return _site_dir(file) is None and file.startswith(_STDLIB)


def _kind(file: str) -> str:
    """ "ignore" | "site" (an installed distribution's file) | "file" (an input by content)."""
    if file.startswith(_IGNORED_ROOTS) or file.startswith(_TRTBUILD_DIR):
        return "ignore"
    if "__pycache__" in file or file.endswith(".pyc"):
        return "ignore"  # derived from a source file that is an input itself
    if _site_dir(file) is not None:
        return "site"
    if file.startswith(_STDLIB):
        return "ignore"
    return "file"


def file_kind(file: str) -> str:
    """ "ignore" (stdlib, trtbuild, /proc, bytecode), "site" (installed) or "file" (by content)."""
    return _kind(file)


@dataclass(frozen=True)
class Discovered:
    """Inputs as the lock pins them: absolute file paths, distributions, variable digests."""

    files: list[str]
    distributions: dict[str, str]  # name -> version
    env: dict[str, str]  # name -> env_digest(value)

    def to_json(self, files: list[str] | None = None) -> dict[str, Any]:
        """As a job's result carries them ("inputs"); `files`: these instead of self.files."""
        chosen = self.files if files is None else files
        return {"files": chosen, "distributions": self.distributions, "env": self.env}


PACKAGING_TOOLS = frozenset({"pip", "setuptools", "wheel"})  # install code, never model code


def classify(touched: Touched, exclude: list[Path]) -> Discovered:
    """Sort observations into inputs; files under `exclude` (cache, scratch) are not inputs.

    A distribution is an input when a module it installed was loaded, never because its
    metadata was read: importing torch or transformers scans every distribution's entry points,
    which says nothing of what the model computes. Packaging tools are never inputs."""
    skip = [str(p.resolve()) for p in exclude]
    files, dists = set(), {}
    owners = _owners()
    for raw in touched.files:
        kind = _kind(raw)
        resolved = os.path.realpath(raw)
        if kind == "ignore" or _under(resolved, skip) or not os.path.isfile(resolved):
            continue
        if _is_metadata(Path(raw).parent.name):
            continue
        site_dir = _site_dir(raw)
        if kind == "site" and site_dir is not None:
            top = Path(raw[len(site_dir) :]).parts[0]
            dist = owners.get(top.split(".")[0])
            if dist is not None:
                if dist not in dists and dist not in PACKAGING_TOOLS:  # one read per distribution
                    dists[dist] = importlib.metadata.version(dist)
                continue
        files.add(resolved)  # a file nobody installed: by content
    env = {name: env_digest(value) for name, value in touched.env.items()}
    return Discovered(sorted(files), dict(sorted(dists.items())), dict(sorted(env.items())))


def _is_metadata(folder: str) -> bool:
    """A distribution's metadata folder (`name-1.2.dist-info`, an egg-info)."""
    return folder.endswith((".dist-info", ".egg-info"))


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _owners() -> dict[str, str]:
    """Top-level import name -> the distribution that installed it."""
    return {top: dists[0] for top, dists in importlib.metadata.packages_distributions().items()}
