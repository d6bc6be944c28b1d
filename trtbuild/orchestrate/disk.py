"""Disk as a resource: the bytes a build writes, per filesystem, against the space that is free.

From what the plan knows (each part's weight bytes, at the target's precision):

    scratch   the cache's tmp/: one export process writes every part's ONNX with its weights
              (~ its weight bytes) before the first engine is built; removed once the last is
              stored, so it is held at the same time as the engines
    cache     cas/: each engine with its weights sidecar (~ its weight bytes: an engine holds the
              weights at the target precision)
    outputs   the published folder: hard links (or reflinks) to the cache's blobs on the cache's
              filesystem (no bytes of their own, st_dev equal), copies on another

A part already in the local cache needs none of it (but its copy into an output folder on another
filesystem); one in the remote cache needs its download, not its scratch. The ONNX graph, the
JSON records and the check's reference are small beside the weights and are not counted.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.cache.store import Store
from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import OpGraph
from trtbuild.orchestrate import actions, quantize
from trtbuild.orchestrate.graphjob import GraphResult
from trtbuild.orchestrate.partspec import backend_settings, part_fields
from trtbuild.orchestrate.statejob import cached_weights
from trtbuild.planner import Plan
from trtbuild.recipe.load import Recipe, Target
from trtbuild.recipe.quantspec import ENGINE_SHARE
from trtbuild.recipe.sizes import format_size

if TYPE_CHECKING:
    from trtbuild.orchestrate.context import TargetContext


@dataclass
class DiskNeed:
    """Bytes a build writes (see the module docstring); `cache_dir` holds scratch and cache,
    `out_dir` the outputs. `parts_built` / `parts_cached`: how many parts it is for."""

    cache_dir: str
    out_dir: str
    scratch_bytes: int = 0
    cache_bytes: int = 0
    output_bytes: int = 0
    parts_built: int = 0
    parts_cached: int = 0

    @property
    def total_bytes(self) -> int:
        return self.scratch_bytes + self.cache_bytes + self.output_bytes

    def by_filesystem(self) -> dict[str, int]:
        """Bytes per filesystem, each named by the folder it is for (cache first)."""
        need = {self.cache_dir: self.scratch_bytes + self.cache_bytes}
        if device(Path(self.out_dir)) == device(Path(self.cache_dir)):
            need[self.cache_dir] += self.output_bytes
        else:
            need[self.out_dir] = self.output_bytes
        return need

    def __add__(self, other: DiskNeed) -> DiskNeed:
        """Two targets' needs together (the folders are this one's)."""
        counts = ("scratch_bytes", "cache_bytes", "output_bytes", "parts_built", "parts_cached")
        mine, theirs = asdict(self), asdict(other)
        return DiskNeed(self.cache_dir, self.out_dir, *(mine[k] + theirs[k] for k in counts))

    def text(self) -> str:
        """One line: `disk: about 1.20 GiB on /cache (scratch ..., cache ..., outputs ...; ...)`."""
        where = ", ".join(f"{format_size(b)} on {f}" for f, b in self.by_filesystem().items())
        return (
            f"disk: about {where} (scratch {format_size(self.scratch_bytes)}, cache "
            f"{format_size(self.cache_bytes)}, outputs {format_size(self.output_bytes)}; "
            f"{self.parts_built} part(s) to build, {self.parts_cached} cached)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "total_bytes": self.total_bytes,
            "by_filesystem": self.by_filesystem(),
        }


def device(path: Path) -> int:
    """st_dev of the filesystem `path` is (or would be created) on."""
    return os.stat(existing(path)).st_dev


def existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (a folder a build will create)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes free to this user on the filesystem of `path`."""
    return shutil.disk_usage(existing(path)).free


def target_need(
    recipe: Recipe,
    target: Target,
    graph: OpGraph,
    job: GraphResult,
    the_plan: Plan,
    backend: str,
    store: Store,
    out_dir: Path,
    release: bool = False,
) -> DiskNeed:
    """What building `the_plan` writes, given what the cache (local, then remote) holds;
    `out_dir`: the output root (--out)."""
    settings = backend_settings(recipe, target, backend, release)
    quantized = quantize.cached_key_settings(recipe, target, job, store)
    settings.update(quantized or {})  # no calibration yet: no part of it can be cached
    if any(w not in job.weight_digests for w in graph.weights):
        # the model's own weights (no `weights`): known once its state job ran (plan runs none)
        job = cached_weights(target, job, store) or job
    keyed = quantized is not None and all(w in job.weight_digests for w in graph.weights)
    fields = part_fields(target, graph, job, the_plan, backend, settings) if keyed else []
    copies = device(out_dir) != device(store.root)
    need = DiskNeed(str(store.root), str(out_dir.resolve()))
    share = ENGINE_SHARE.get(target.precision, 1.0)  # quantized: fp32 ONNX, smaller engine
    for index, part in enumerate(the_plan.parts):
        where = _where(store, actions.action_key(fields[index])) if keyed else None
        engine = int(part.weight_bytes * share)  # the part's weights at the engine's precision
        if where is None:
            # its ONNX and weights (and its Q/DQ copy, as large as the engine)
            need.scratch_bytes += part.weight_bytes + (engine if share < 1 else 0)
            need.cache_bytes += engine
            need.parts_built += 1
        else:
            need.cache_bytes += engine if where == "remote" else 0  # the download
            need.parts_cached += 1
        need.output_bytes += engine if copies else 0
    return need


def _where(store: Store, key: str) -> str | None:
    """Where the result of `key` is, by its entry alone: an estimate hashes no blob (the build
    verifies them; Store.where would read every cached engine once more)."""
    if store.layout.action(key).is_file():
        return "local"
    if store.remote is not None and store.remote.has_action(key):
        return "remote"
    return None


class Ledger:
    """A run's disk check: free space measured once, before the first job; every target claims
    its need on top of the targets before it. `enabled` False (--no-disk-check): claims are
    recorded, never refused."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.claimed: dict[int, int] = {}  # st_dev -> bytes claimed by this run's targets
        self.free: dict[int, int] = {}  # st_dev -> bytes free at its first claim
        self._lock = threading.Lock()

    def claim(self, need: DiskNeed) -> None:
        """Add `need`; raises TrtbuildError naming the filesystem when it does not fit."""
        with self._lock:
            for folder, size in need.by_filesystem().items():
                dev = device(Path(folder))
                self.free.setdefault(dev, free_bytes(Path(folder)))
                self.claimed[dev] = self.claimed.get(dev, 0) + size
                if self.enabled and self.claimed[dev] > self.free[dev]:
                    raise TrtbuildError(
                        f"the build needs about {format_size(self.claimed[dev])} on {folder}, "
                        f"{format_size(self.free[dev])} free (use --no-disk-check to build "
                        "anyway)"
                    )


def check(ctx: TargetContext) -> dict[str, Any]:
    """Claim the target's need on the run's ledger (refused: TrtbuildError); its JSON record."""
    run = ctx.run
    need = target_need(
        run.recipe,
        ctx.target,
        ctx.graph,
        ctx.job,
        ctx.plan,
        ctx.backend.name,
        run.store,
        run.opts.out,
        run.opts.release,
    )
    run.ledger.claim(need)
    return need.to_json()
