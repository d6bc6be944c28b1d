"""What a build produced, per part and per target: the records publishing and the CLI read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.planner import Plan
from trtbuild.planner.memory import MemoryModel
from trtbuild.recipe.schema import slot


@dataclass
class PartResult:
    index: int
    key: str
    cached: bool
    peak_rss_bytes: int
    seconds: float
    sha256: str
    engine: str
    sidecars: dict[str, str]  # file name -> sha256 of files the engine reads beside it
    fields: dict[str, str]
    record: dict[str, Any]
    reason: str = "cached"  # why it was (re)built, or that the cache had it


@dataclass(kw_only=True)
class TargetResult:
    model: str
    precision: str
    backend: str
    dir: Path
    budget_bytes: int
    plan: Plan
    graph_job: GraphResult
    requested_backend: str
    parts: list[PartResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what happened: re-plans after overruns
    memory: MemoryModel | None = None  # the memory model the plan was made with (the lock pins it)
    kind: str | None = None  # the device kind it was built for (recipe.Target.kind)
    check: dict[str, Any] | None = None  # the accuracy check's record (check.py); None: skipped
    disk: dict[str, Any] | None = None  # the disk estimate it was checked with (disk.DiskNeed)
    calibration: dict[str, Any] | None = None  # int8/fp8: its table (calibration.Calibration)

    @property
    def failed(self) -> str | None:
        """Why the target FAILED (its check), or None."""
        if self.check is not None and not self.check["passed"]:
            return str(self.check["message"])
        return None

    @property
    def slot(self) -> str:
        return slot(self.precision, self.kind)

    @property
    def name(self) -> str:
        return f"{self.model}/{self.slot}"


@dataclass
class BuildResult:
    """What a build did. `targets`: the targets it planned (none on a no-op: nothing ran);
    `outputs`: every published target folder of the recipe (trtbuild.load() takes one), on a
    no-op too, from the lock."""

    up_to_date: bool
    targets: list[TargetResult]
    seconds: float
    notes: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
