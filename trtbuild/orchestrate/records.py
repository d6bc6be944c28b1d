"""Build records: one process as build.json records it, and the memory observations a target's build
adds to memory.json (the processes it ran; cached parts ran none)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from trtbuild.execution.executor import JobOutcome
from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.orchestrate.results import TargetResult
from trtbuild.planner.observations import Load, Observation


def process_record(
    kind: str, outcome: JobOutcome, load: Load, predicted: int, share: int
) -> dict[str, Any]:
    """One process as build.json records it; `load` is what its prediction was for."""
    result = {k: v for k, v in outcome.result.items() if k != "parts"}
    return {
        "kind": kind,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "predicted_peak_bytes": predicted,
        **asdict(load),  # weight_bytes, largest_bytes, ...: memory.Load.from_record
        "memory_limit_bytes": share,
        "private_peak_bytes": outcome.private_peak_bytes,
        "seconds": round(outcome.seconds, 3),
        "started": outcome.started,
        "ended": outcome.ended,
        "rss_samples": [list(point) for point in outcome.samples],  # for the build report
        **(
            {"node": outcome.node, "dispatch_seconds": outcome.dispatch_seconds}
            if outcome.node
            else {}
        ),
        **result,
    }


def observations(result: TargetResult, job: GraphResult) -> list[Observation]:
    """The processes this build ran (cached parts ran none; a shared export counts once)."""
    seen = []
    for part in result.parts:
        for p in [] if part.cached else part.record["processes"]:
            if p["kind"] == "export" and p.get("shared_by", [part.index])[0] != part.index:
                continue
            base = (job.base_bytes or 0) if p["kind"] == "export" else 0
            load = Load.from_record({"weight_bytes": part.record["weight_bytes"], **p})
            peak = p.get("export_peak_bytes") or p["peak_rss_bytes"]  # before the check's reference
            seen.append(Observation.of(p["kind"], result.backend, load, base, peak, job.digest))
    return seen
