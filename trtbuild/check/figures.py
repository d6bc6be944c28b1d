"""The check's figures in words: one line per target ("checked: worst rel_l2 3.6e-07 ...") and the
summary the lock, build.json and the report keep."""

from __future__ import annotations

from typing import Any


def message(figures: dict[str, Any], name: str) -> str:
    """One line: the first failing output, and the first part that deviates on its own."""
    bad = next((o for o in figures["outputs"] if not o["passed"]), None)
    if bad is None:
        return f"{name}: check passed"
    text = f"{name}: check failed: {_what(bad)}"
    for part in figures["parts"]:
        if not part["passed"]:
            first = next(f for f in part["figures"] if not f["passed"])
            return f"{text}; first deviating part: part {part['index']} {_what(first)}"
    return f"{text}; no part deviates on its own (errors add up along the chain)"


def _what(f: dict[str, Any]) -> str:
    shape = ", ".join(f"{n}={s}" for n, s in f["shape"].items())
    if "error" in f:
        return f"output {f['output']!r}: {f['error']} at shape {shape}"
    why = f"rel_l2 {f['rel_l2']:.3g}, max_abs {f['max_abs']:.3g}"
    if "ref_max_abs" in f:  # a reference near zero: its rel_l2 is noise, an `atol` says so
        why += f" (max |ref| {f['ref_max_abs']:.3g})"
    if f["nonfinite"]:  # the figures cover only the finite values: say so, or 0 reads as a match
        count = f"{f['nonfinite']} non-finite value" + ("s" if f["nonfinite"] > 1 else "")
        why = f"{count} (reference finite); the finite ones: {why}"
    elif f["outside"]:
        why = f"{f['outside']} value{'s' if f['outside'] > 1 else ''} beyond atol/rtol, {why}"
    return f"output {f['output']!r} {why} at shape {shape}"


def summary(check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lock's `check` table of a target: key, passed, worst rel_l2."""
    if check is None:
        return None
    return {"key": check["key"], "passed": check["passed"], "worst_rel_l2": check["worst_rel_l2"]}
