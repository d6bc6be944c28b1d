"""Options: what a caller of trtbuild.build() chooses, and nothing a build finds or makes.

What a run finds (the lock as it was, memory.json as it was) and makes (the store, the executor)
is in trtbuild.orchestrate.context; nothing is written into Options during a build, so one Options can
serve any number of builds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trtbuild.cache.layout import project_root
from trtbuild.planner.plan import PROVE_SECONDS

if TYPE_CHECKING:
    from trtbuild.orchestrate.results import PartResult, TargetResult
    from trtbuild.planner.memory import MemoryModel

REMOTE_ENV = "TRTBUILD_REMOTE_CACHE"
RAY_ENV = "TRTBUILD_RAY_ADDRESS"
Report = Callable[[str], None]


@dataclass
class Options:
    backend: str | None = None
    budget: int | None = None
    out: Path = field(default_factory=lambda: project_root() / "build")
    cache: Path | None = None
    jobs: int = field(default_factory=lambda: auto_jobs())  # the memory gate still applies
    locked: bool = False
    release: bool = False
    sign: Path | None = None  # an Ed25519 key: sign the release provenance (signing.py)
    report: Report = lambda message: None
    on_plan: Callable[[TargetResult], None] = lambda t: None  # a target was (re-)planned
    on_part: Callable[[TargetResult, PartResult], None] = lambda t, p: None
    memory_override: MemoryModel | None = None
    prove_seconds: float = PROVE_SECONDS  # time to prove a heuristic plan's lower bound
    write_lock: bool = True  # False for `trtbuild verify`: rebuild without touching the lock
    # Fork torch jobs from one server process (see forkserver.py); TRTBUILD_FORK_SERVER=0: never.
    fork_server: bool = field(default_factory=lambda: os.environ.get("TRTBUILD_FORK_SERVER") != "0")
    # One trace per target: the graph job's process exports the parts from its own trace
    # (trtbuild.execution.follow); False (or TRTBUILD_ONE_TRACE=0): a new process traces again.
    one_trace: bool = field(default_factory=lambda: os.environ.get("TRTBUILD_ONE_TRACE") != "0")
    # Bazel HTTP cache behind the local one (remote.py); else the recipe's [cache] remote.
    remote_cache: str | None = field(default_factory=lambda: os.environ.get(REMOTE_ENV) or None)
    executor: str | None = None  # "local" or "ray"; None: the recipe's [executor] kind
    ray_address: str | None = field(default_factory=lambda: os.environ.get(RAY_ENV) or None)
    check: bool = True  # check every target's engines against its model (check.py)
    # Build only these models / precisions (run --model/--precision); None: every target. A
    # subset publishes its targets' folders but leaves the lock and provenance as they were: those
    # describe whole-recipe builds.
    models: list[str] | None = None
    precisions: list[str] | None = None
    disk_check: bool = True  # refuse a build whose disk estimate exceeds the free space (disk.py)

    def __post_init__(self) -> None:
        """Paths may be given as strings, as a notebook user writes them."""
        self.out = Path(self.out)
        self.cache = Path(self.cache) if self.cache is not None else None
        self.sign = Path(self.sign) if self.sign is not None else None

    @property
    def subset(self) -> bool:
        return self.models is not None or self.precisions is not None


def auto_jobs() -> int:
    """One job per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
