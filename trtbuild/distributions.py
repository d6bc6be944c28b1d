"""Versions of installed distributions, read from their metadata folders' names.

A wheel installs `<name>-<version>.dist-info` with its name escaped (PyPA "Recording installed
projects": lowercase, runs of `-_.` as `_`), so one listing of each `sys.path` folder gives every
version, where importlib.metadata would import email's parsers and scan every folder again per
name (the no-op run calls this for its toolchain, its backends and its distributions). A listing
is reused while its folder's mtime stays: installing, removing or upgrading a distribution
changes the folder. Names the listing does not find (an egg-info, an odd layout) are asked of
importlib.metadata.
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
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ABSENT


def _escaped(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


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
        if entry.endswith(".dist-info"):
            name, _, rest = entry[: -len(".dist-info")].partition("-")
            if rest:
                found.setdefault(_escaped(name), rest)
    _listings[folder] = (mtime, found)
    return found
