"""Messages to worker processes: one definition that the orchestrator and the worker both import.

A job travels as JSON (`{"kind": ..., **fields, "result": PATH}`, written next to its result by
trtbuild.execution.executor), is read back by `from_json` in the worker, and answered with a JSON result at
PATH (`{"ok": true, "result": {...}, "vm_hwm_bytes": N}` or `{"ok": false, "error": ...}`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class _ModelJob:
    """A job on one model of a recipe at one precision."""

    recipe: str  # the recipe file
    model: str  # its [[model]] name
    precision: str


@dataclass(frozen=True)
class GraphJob(_ModelJob):
    """Export the model on fake tensors: its op graph, weight digests, discovered inputs."""

    kind: ClassVar[str] = "graph"
    cache: str | None = None  # trtbuild's own cache: never an input of the model
    uses_torch: bool = True  # False for an `onnx:` source: a plain process, never the fork server
    # A FIFO: the process stays after its result and runs the export job whose path comes
    # through it, from its own trace (trtbuild.execution.follow); "": it exits
    follow: str = ""


@dataclass(frozen=True)
class StateJob:
    """Run a model's factory with real parameters (torch seeded with 0) and write its state
    dict as a safetensors file at `out`: the weights of a model whose recipe names none."""

    kind: ClassVar[str] = "state"
    recipe: str
    model: str
    out: str


@dataclass(frozen=True)
class PartToExport:
    part: dict[str, Any]  # ops, weights, inputs, outputs (trtbuild.orchestrate.parts.part_json)
    onnx: str  # where its ONNX file goes


@dataclass(frozen=True)
class ExportJob(_ModelJob):
    """Write the ONNX file of each part, one after another, from one export of the model."""

    kind: ClassVar[str] = "export"
    graph_digest: str  # the graph the parts were planned on: a changed model is an error
    opset: int
    parts: list[PartToExport] = field(default_factory=list)
    state: str | None = None  # the model's own state (a StateJob's safetensors) when no weights
    # the check's reference file, computed after the parts (trtbuild.check.reference); parts may be []
    reference: dict[str, Any] | None = None
    uses_torch: bool = True  # False for an `onnx:` source: a plain process, never the fork server


@dataclass(frozen=True)
class CalibrateJob(_ModelJob):
    """Run the model at fp32 on calibration samples, part after part, one sample at a time, and
    write its table of activation ranges (trtbuild.model.calibrate) as JSON at `table`."""

    kind: ClassVar[str] = "calibrate"
    graph_digest: str
    parts: list[dict[str, Any]]  # every part of the plan, in order (partspec.part_json)
    samples: dict[
        str, Any
    ]  # {"inputs": [InputSpec dumps], "files": [paths] | None, "count", "seed"}
    method: str  # minmax | entropy | percentile
    table: str  # where the table goes
    spill: str  # a scratch folder for the tensors between parts (removed after)
    state: str | None = None  # the model's own state (a StateJob's safetensors) when no weights


@dataclass(frozen=True)
class BuildJob:
    """Build one part's engine with a backend; no torch in this process."""

    kind: ClassVar[str] = "build"
    backend: str
    onnx: str
    engine: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class CheckJob:
    """Run a target's part engines on the reference's tensors and compare (trtbuild.check.compare);
    one engine loaded at a time, no torch in this process (except a backend that needs it)."""

    kind: ClassVar[str] = "check"
    backend: str
    reference: str  # the reference file (trtbuild.check.data)
    parts: list[dict[str, Any]]  # {"engine": path, "inputs": [names], "outputs": [names]}
    outputs: list[str]  # the model's outputs, in order
    samples: int
    tolerances: dict[str, dict[str, Any]]  # per model output, and "*" for tensors between parts
    plugins: list[str] = field(default_factory=list)  # custom-operator libraries (paths)


@dataclass(frozen=True)
class ProbeJob:
    """Touch `bytes` bytes and hold them `hold` seconds (after a full garbage collection, with
    `collect`): checks what the executor measures."""

    kind: ClassVar[str] = "probe"
    bytes: int
    hold: float = 0.0
    collect: bool = False


Job = GraphJob | StateJob | ExportJob | CalibrateJob | BuildJob | CheckJob | ProbeJob
KINDS: dict[str, type[Job]] = {
    c.kind: c for c in (GraphJob, StateJob, ExportJob, CalibrateJob, BuildJob, CheckJob, ProbeJob)
}


def to_json(job: Job, result: str) -> dict[str, Any]:
    return {"kind": job.kind, **asdict(job), "result": result}


def from_json(data: dict[str, Any]) -> tuple[Job, str]:
    """The job and the path of its result file."""
    fields = {k: v for k, v in data.items() if k not in ("kind", "result")}
    if data["kind"] == "export":
        fields["parts"] = [PartToExport(**p) for p in fields["parts"]]
    return KINDS[data["kind"]](**fields), data["result"]
