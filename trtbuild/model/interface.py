"""What the user should know about a model's interface as the graph job found it (binding.py):
declared inputs forward() never reads, and buffers forward() updates (state an engine drops)."""

from __future__ import annotations

from typing import Any


def interface_notes(target: str, model: str, graph: dict[str, Any]) -> list[str]:
    """One line per unread input (a note) and per mutated buffer (a warning); `graph` is
    OpGraph.to_json() of the target."""
    interface = graph.get("interface", {})
    notes = [
        f"{target}: note: model {model!r} never reads input {name!r}; the engine takes it "
        "and ignores it"
        for name in interface.get("unread", [])
    ]
    notes += [
        f"{target}: warning: model {model!r} updates buffer {name!r} in forward(); the engine "
        "does not keep that state"
        for name in interface.get("mutated", [])
    ]
    return notes
