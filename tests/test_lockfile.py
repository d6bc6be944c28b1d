"""The lock format: one typed writer, one typed reader, symmetric."""

from __future__ import annotations

from pathlib import Path

from trtbuild.release.inputs import Inputs
from trtbuild.release.lockfile import (
    LOCK_VERSION,
    Lock,
    LockedPart,
    LockedTarget,
    read_lock,
    write_lock,
)


def a_lock() -> Lock:
    part = LockedPart(
        0, "ab" * 32, "part0.ort.onnx", "cd" * 32, {"x.data": "ef" * 32}, 123, {"graph": "01"}
    )
    target = LockedTarget(
        model="m",
        precision="fp16",
        backend="onnxruntime",
        requested_backend="auto",
        device={"onnxruntime": "1.32.0", "cpu": "x86_64"},
        dir="build/r/m/fp16",
        budget_bytes=1 << 30,
        boundary_bytes=4096,
        graph_digest="12" * 32,
        memory={"export": {"base": 1, "alpha": 2.0}},
        parts=[part],
    )
    inputs = Inputs({"r.toml": "34" * 32}, {"torch": "2.13.0"}, {"SCALE": "unset"})
    options = {"backend": "recipe", "budget": 0, "out": "build", "release": False}
    return Lock("r", options, {"python": "3.11"}, inputs, [target])


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    lock = a_lock()
    write_lock(tmp_path / "r.lock", lock)
    assert read_lock(tmp_path / "r.lock") == lock
    assert lock.target("m", "fp16") is lock.targets[0]
    assert lock.target("m", "fp32") is None
    assert lock.targets[0].parts[0].outputs() == {"part0.ort.onnx": "cd" * 32, "x.data": "ef" * 32}


def test_anything_but_this_format_reads_as_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "r.lock"
    text = (write_lock(path, a_lock()), path.read_text())[1]
    for broken in (
        text.replace(f"version = {LOCK_VERSION}", "version = 1"),  # an older format
        text.replace("graph_digest", "graph"),  # a field renamed
        text.replace("[[target.part]]", "[[target.part]]\nextra = 1"),  # an unknown field
        "[lock\n",  # not TOML
    ):
        path.write_text(broken)
        assert read_lock(path) is None, broken[:80]
    assert read_lock(tmp_path / "missing.lock") is None
