"""Byte sizes as TensorRT tools write them: "512MiB", "2GiB", "1.5G", or plain bytes."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes in `value`; raises ValueError with what was expected."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(
            "expected a size like '2GiB', '512MiB', '1.5G' (a string) or a whole number of "
            f"bytes, got {value!r}"
        )
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"expected a positive number of bytes, got {value}")
        return value
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"expected a size like '2GiB', '512MiB', '1.5G' or a number of bytes, got {value!r}"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def format_size(num_bytes: float) -> str:
    """Human form with binary units, e.g. 1.50 GiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(num_bytes) >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{int(num_bytes)} B"
