"""A full disk at every write site: one error line naming the path, exit 1, nothing half-written
left, the cache and earlier outputs intact, and the next build with room equals a clean one.

The worker's writes (ONNX, engines), publishing, the lock and the remote-cache download meet a
real full filesystem: a tmpfs in a private mount namespace (tests/smalldisk.py), skipped where the
machine allows none. The store's blob write is an OSError(ENOSPC) injected in-process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trtbuild.cli import main

from . import smalldisk
from .conftest import DATA, REPO, require
from .nginx import Server, missing, serve

MB = 1 << 20
# ~3.2 MB of fp32 weights in one part: the export writes them once, the build once more.
RECIPE = """\
[recipe]
name = "small"

[defaults]
backend = "onnxruntime"
precisions = ["fp32"]
[defaults.budget]
host_memory = "2GiB"

[[model]]
name = "mlp"
source = "models/mlp.py:wide_mlp"
kwargs = { width = 256, hidden = 1024 }
weights = { init = "random", seed = 0 }
[[model.inputs]]
name = "x"
shape = [2, 1, 256]
"""


def project(folder: Path, seed: int = 0) -> Path:
    (folder / "models").mkdir(parents=True)
    shutil.copy(DATA / "models" / "mlp.py", folder / "models" / "mlp.py")
    recipe = folder / "small.toml"
    recipe.write_text(RECIPE.replace("seed = 0", f"seed = {seed}"))
    return recipe


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trtbuild: error:")]


def engines(description: dict[str, object] | None) -> object:
    assert description is not None
    return [(p["engine"], p["sha256"], p["sidecars"]) for p in description["parts"]]  # type: ignore[index, union-attr]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Server]:
    require(missing())
    with serve(tmp_path / "nginx") as server:
        yield server


# site -> (what lives on the small filesystem, bytes left free for the failing run)
SITES = {
    "export": ("cache", 1 * MB),  # the part's ONNX (3.2 MB) does not fit
    "build": ("cache", 5 * MB),  # the ONNX fits, the engine beside it does not
    "publish": ("out", 1 * MB),  # the engine's copy into the output folder does not fit
    "lock": ("recipes", 0),  # everything is built and published; the lock does not fit
    "remote": ("cache", 1 * MB),  # the engine downloaded from the remote cache does not fit
}


# The default run meets a full disk in a worker (export: the graph job's process, which exports
# from its trace), in publishing and in a remote download; the engine write (build) and the
# lock, with --runslow (a test loop under 20 minutes).
DEFAULT_SITES = ("export", "publish", "remote")


@pytest.mark.parametrize(
    "site",
    [s if s in DEFAULT_SITES else pytest.param(s, marks=pytest.mark.slow) for s in SITES],
)
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(
    site: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require(smalldisk.available())
    on_disk, leave = SITES[site]
    mount = tmp_path / "small"
    folders = {name: tmp_path / name for name in ("cache", "out", "recipes")}
    folders[on_disk] = mount / on_disk
    staged = project(tmp_path / "staged")
    copy = {}
    if on_disk == "recipes":
        copy[str(staged.parent)] = str(folders["recipes"])
    else:
        shutil.copytree(staged.parent, folders["recipes"])
    options = []
    clean_tmp = tmp_path / "clean"
    clean_recipe = project(clean_tmp / "recipes", seed=1)
    clean = ["run", str(clean_recipe), "--cache", str(clean_tmp / "cache")]
    clean += ["--out", str(clean_tmp / "out")]
    if site == "remote":  # another machine built the new weights and uploaded them
        server = request.getfixturevalue("nginx")
        options = ["--remote-cache", server.url()]
        clean += options
    assert main(clean) == 0  # a clean build of what the failing run builds
    spec = {
        "mount": str(mount),
        "recipe": str(folders["recipes"] / "small.toml"),
        "cache": str(folders["cache"]),
        "out": str(folders["out"]),
        "copy": copy,
        "leave": leave,
        "options": options,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, "-m", "tests.smalldisk", str(tmp_path / "spec.json")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["earlier"]["code"] == 0, seen["earlier"]["stderr"]

    full = seen["full"]
    assert full["code"] == 1, full["stderr"]
    lines = errors(full["stderr"])
    assert len(lines) == 1, full["stderr"]
    assert "no space left on device" in lines[0]
    assert f" {folders[on_disk]}/" in lines[0], lines[0]  # a path on the full filesystem
    assert "unavailable" not in full["stderr"]  # a full disk here is not a remote cache fault
    assert seen["left"] == []  # no scratch in the cache, no staging folder in the output

    before, after = seen["before"], seen["after"]
    entries = {k: v for k, v in before["cache"].items() if k.startswith(("cas/", "ac/"))}
    assert entries.items() <= after["cache"].items()  # every blob and entry is still there
    if site == "lock":  # built and published: only the lock, written last, could not change
        assert after["lock"] == before["lock"]
    else:
        assert after["out"] == before["out"]  # nothing published: the earlier outputs stay

    assert seen["again"]["code"] == 0, seen["again"]["stderr"]
    clean_engine = json.loads(next((clean_tmp / "out").rglob("engine.json")).read_text())
    assert engines(seen["engine"]) == engines(clean_engine)


def test_a_full_disk_in_the_store_is_one_line_and_leaves_no_scratch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine moved into the cache's blobs meets ENOSPC (injected: the copy a move across
    filesystems makes); the run's scratch goes, the cache keeps what it had, a rerun builds."""
    import trtbuild.cache.store

    recipe = project(tmp_path / "recipes")
    cache = Path(os.environ["TRTBUILD_CACHE"])
    real = trtbuild.cache.store._move_or_copy

    def full(src: Path, dest: Path) -> None:
        dest.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))

    monkeypatch.setattr(trtbuild.cache.store, "_move_or_copy", full)
    assert main(["run", str(recipe)]) == 1
    lines = errors(capsys.readouterr().err)
    assert len(lines) == 1 and "no space left on device" in lines[0], lines
    assert str(cache / "cas") in lines[0]
    assert list((cache / "tmp").iterdir()) == []
    assert list((cache / "cas").iterdir()) == [] or all(
        p.stat().st_size > 4 for p in (cache / "cas").iterdir()
    )
    assert not list((tmp_path / "build").rglob("engine.json"))

    monkeypatch.setattr(trtbuild.cache.store, "_move_or_copy", real)
    assert main(["run", str(recipe)]) == 0
    assert main(["cache", "verify"]) == 0
