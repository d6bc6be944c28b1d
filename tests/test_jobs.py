"""Job messages survive the trip through JSON that the executor and the worker make."""

from __future__ import annotations

import json

import pytest

from trtbuild.execution.jobs import (
    BuildJob,
    ExportJob,
    GraphJob,
    Job,
    PartToExport,
    ProbeJob,
    from_json,
    to_json,
)

JOBS = [
    GraphJob("r.toml", "m", "fp16", "/cache"),
    ExportJob("r.toml", "m", "fp32", "abc", 17, [PartToExport({"ops": ["a"]}, "p0/part.onnx")]),
    BuildJob("onnxruntime", "part.onnx", "e.onnx", {"opset": 17}),
    ProbeJob(1 << 20, 0.5),
]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.kind)
def test_job_round_trip(job: Job) -> None:
    data = json.loads(json.dumps(to_json(job, "/tmp/x.result.json")))
    assert data["kind"] == job.kind
    assert from_json(data) == (job, "/tmp/x.result.json")
