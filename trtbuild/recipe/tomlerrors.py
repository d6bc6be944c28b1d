"""Where a recipe mistake is: a pydantic error located in the TOML text, as one line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def describe(path: Path, text: str, exc: ValidationError) -> str:
    err = min(exc.errors(), key=_rank)  # a union reports every member; say the telling one
    loc = tuple(p for p in err["loc"] if not _is_union_tag(p))
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    at = where(path, text, loc)
    if err["type"] == "extra_forbidden":
        return f"{at}: unknown key '{field}'"
    if err["type"] == "missing":
        return f"{at}: field '{field}' is required"
    got = err.get("input")
    got_text = f", got {got!r}" if not isinstance(got, dict | list) else ""
    message = err["msg"].removeprefix("Value error, ")
    return f"{at}: field '{field}': {message}{got_text if 'got' not in message else ''}"


def _rank(err: Any) -> int:
    kind = err["type"]
    if kind == "extra_forbidden":
        return 0
    if kind.endswith("_type") or kind == "missing":
        return 2
    return 1


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the tried member of a union into the location; users never wrote it."""
    return isinstance(part, str) and (
        part in {"RandomInit", "DynamicShape", "str"} or any(c in part for c in "[]()")
    )


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=")


def where(path: Path, text: str, loc: tuple[Any, ...]) -> str:
    line = _line_of(text, loc)
    return f"{path}:{line}" if line else str(path)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best line for a pydantic error location: the deepest key path the TOML text spells."""
    lines: dict[tuple[Any, ...], int] = {}
    counters: dict[tuple[Any, ...], int] = {}
    table: tuple[Any, ...] = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            parts = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
            if header.group(1) == "[[":
                array = (*_index_parents(parts[:-1], counters), parts[-1])
                counters[array] = counters.get(array, -1) + 1
                table = (*array, counters[array])
            else:
                table = _index_parents(parts, counters)
            lines.setdefault(table, number)
            continue
        key = _KEY.match(raw)
        if key:
            path = (*table, *(p.strip().strip("\"'") for p in key.group(1).split(".")))
            lines.setdefault(path, number)
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in lines:
            return lines[loc[:depth]]
    return None


def _index_parents(parts: tuple[str, ...], counters: dict[tuple[Any, ...], int]) -> tuple[Any, ...]:
    """("model", "inputs") -> ("model", 2, "inputs"): the latest entry of each array of tables."""
    out: tuple[Any, ...] = ()
    for part in parts:
        out = (*out, part)
        if out in counters:
            out = (*out, counters[out])
    return out
