"""Disk as a resource (trtbuild/orchestrate/disk.py): the estimate `plan` prints and `run` checks before any
export or build job, refused in one line when the free space is short."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trtbuild.cli import main
from trtbuild.recipe.sizes import format_size

from . import smalldisk
from .conftest import REPO, require
from .test_diskfull import errors, project

PATH = os.environ["PATH"]
WEIGHT_BYTES = (256 * 1024 * 3 + 1024 + 256 + 1024 + 1024 * 16 + 16) * 4  # the small MLP's fp32


def test_plan_prints_the_disk_estimate_and_cached_parts_need_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(project(tmp_path / "recipes"))
    assert main(["plan", recipe, "--format", "json"]) == 0
    need = json.loads(capsys.readouterr().out)["targets"][0]["disk"]
    # Its ONNX in the scratch, its engine in the cache; published as hard links: no bytes.
    assert need["scratch_bytes"] == need["cache_bytes"] == WEIGHT_BYTES
    assert need["output_bytes"] == 0 and need["parts_built"] == 1
    assert main(["plan", recipe]) == 0
    text = capsys.readouterr().out
    size = format_size(2 * WEIGHT_BYTES)
    assert f"disk: about {size} on " in text and "1 part(s) to build" in text
    assert f"disk, all targets: about {size} on " in text and " free)" in text

    assert main(["run", recipe]) == 0
    record = json.loads(next((tmp_path / "build").rglob("build.json")).read_text())
    assert record["disk"]["total_bytes"] == 2 * WEIGHT_BYTES  # what the run was checked with
    capsys.readouterr()
    assert main(["plan", recipe, "--format", "json"]) == 0
    need = json.loads(capsys.readouterr().out)["targets"][0]["disk"]
    assert need["total_bytes"] == 0 and need["parts_cached"] == 1


# Run in a private mount namespace: a 4 MiB tmpfs for the cache or the output folder ($1), with
# $5 bytes of it taken already; then what the refused run left in the cache ($3) and output ($4).
SHORT = """\
mount -t tmpfs -o size=4m tmpfs "$1" && head -c "$5" /dev/zero > "$1/ballast"
python -m trtbuild run "$2" --cache "$3" --out "$4"; echo "refused=$?"
(cd "$3" && find . -path './cas/*' -o -path './tmp/*' -o -path './ac/[0-9a-f]*') | sed 's/^/left: /'
find "$4" -name '.*.new-*' 2>/dev/null | sed 's/^/left: /'
python -m trtbuild run "$2" --cache "$3" --out "$4" --no-disk-check; echo "forced=$?"
"""


@pytest.mark.parametrize("short", ["cache", "out"])
def test_a_run_whose_estimate_exceeds_the_free_space_is_refused_before_any_job(
    short: str, tmp_path: Path
) -> None:
    """6.1 MiB of scratch and engines on a 4 MiB cache, or 3.1 MiB of engines copied onto an
    output filesystem with 3 MiB free: one line naming it, exit 1, no part job ran (no engine
    blob, no part entry, no scratch); --no-disk-check builds anyway and meets the full disk."""
    require(smalldisk.available())
    recipe = project(tmp_path / "recipes")
    small = tmp_path / "small"
    small.mkdir()
    folders = {"cache": tmp_path / "cache", "out": tmp_path / "out"}
    folders[short] = small / short
    ballast = 0 if short == "cache" else 1 << 20
    script = SHORT
    arguments = [small, recipe, folders["cache"], folders["out"], ballast]
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}:{PATH}",
        },
    )
    out = done.stdout.splitlines()
    assert "refused=1" in out, done.stderr
    first = done.stderr.split("FAILED")[0]
    lines = errors(first)
    assert len(lines) == 1, first
    assert "the build needs about " in lines[0] and f" on {folders[short]}, " in lines[0]
    assert lines[0].endswith("free (use --no-disk-check to build anyway)")
    assert [line for line in out if line.startswith("left: ")] == []
    assert "forced=1" in out  # no check: the build starts and meets the full disk
    assert "no space left on device" in errors(done.stderr)[-1]
