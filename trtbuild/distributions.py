"""Versions of installed distributions, read from their metadata folders' names.

A wheel installs `<name>-<version>.dist-info` with its name escaped (PyPA "Recording installed
projects": lowercase, runs of `-_.` as `_`), so one listing of each `sys.path` folder gives every
version, where importlib.metadata would import email's parsers and scan every folder again per
name (the no-op run calls this for its toolchain, its backends and its distributions). A listing
is reused while its folder's mtime stays: installing, removing or upgrading a distribution
changes the folder. A legacy `<name>.egg-info` (no version in its name) is read for its
`Version:` line. A name no folder lists is absent: asking importlib.metadata instead would import
it (17 ms) for every backend that is not installed (tensorrt, on most machines).
"""

from __future__ import annotations

import os
import re
import sys

ABSENT = "absent"
_listings: dict[str, tuple[int, dict[str, str]]] = {}  # folder -> (mtime_ns, name -> version)


def version(name: str) -> str:
    """The installed version of distribution `name`, or "absent"."""
    wanted = _escaped(name)
    for folder in sys.path:
        found = _listing(folder or ".").get(wanted)
        if found is not None:
            return found
    return ABSENT


def _escaped(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _pkg_info(path: str) -> str | None:
    """The `Version:` of an egg-info (a folder holding PKG-INFO, or the file itself)."""
    file = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _listing(folder: str) -> dict[str, str]:
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return {}
    cached = _listings.get(folder)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    found: dict[str, str] = {}
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    for entry in names:
        for suffix in (".dist-info", ".egg-info"):
            if entry.endswith(suffix):
                name, _, rest = entry[: -len(suffix)].partition("-")
                version = rest.split("-py")[0] if rest else _pkg_info(os.path.join(folder, entry))
                if version:
                    found.setdefault(_escaped(name), version)
    _listings[folder] = (mtime, found)
    return found
