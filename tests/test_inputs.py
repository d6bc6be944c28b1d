"""Never stale: after any change, an incremental build publishes what a clean build would.

The probe model (tests/data/probe) lives outside its recipe's folder, imports a helper module,
reads a data file and an environment variable. It is built once per module; each case copies
that built state (project, cache, outputs), makes one change, checks that `explain` names it,
runs the build and compares the published files with a clean build in an empty cache.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DATA
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.explain import explain
from trtbuild.release.lockfile import lock_path, read_lock, write_lock

PROBE = DATA / "probe"


def _build(recipe: Path, cache: Path, out: Path = Path("build")) -> object:
    return build(recipe, Options(cache=cache, out=out))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe project, built once: project/{shared,recipes}, cache/, build/."""
    root = tmp_path_factory.mktemp("probe")
    shutil.copytree(PROBE, root / "project", ignore=shutil.ignore_patterns("__pycache__"))
    _save_weights(root / "project" / "recipes" / "w.safetensors", shift=0.0)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        _build(root / "project" / "recipes" / "probe.toml", root / "cache")
        weighted = root / "project" / "recipes" / "weighted.toml"
        text = _recipe_text(root).replace(WEIGHTS_INIT, 'weights = "w.safetensors"')
        weighted.write_text(text.replace('name = "probe"', 'name = "weighted"', 1))
        _build(weighted, root / "cache")
    finally:
        os.chdir(cwd)
    return root


WEIGHTS_INIT = 'weights = { init = "random", seed = 1 }'


def _recipe_text(root: Path) -> str:
    return (root / "project" / "recipes" / "probe.toml").read_text()


def _save_weights(path: Path, shift: float) -> None:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    state = {
        "block.weight": torch.randn(32, 16, generator=gen),
        "block.bias": torch.zeros(32),
        "head.weight": torch.randn(4, 32, generator=gen) + shift,
        "head.bias": torch.zeros(4),
    }
    save_file(state, str(path))


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    """A private copy of the built template; the working directory is its root."""
    for name in ("project", "cache", "build"):
        shutil.copytree(template / name, tmp_path / name, symlinks=True)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def _published(out: Path) -> dict[str, bytes]:
    """Every engine file and engine.json (build.json holds timings, provenance a date)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("build.json", "provenance.json")
    }


def _older_onnxruntime(root: Path) -> None:
    """The lock of a build made with another onnxruntime: what an upgrade leaves behind."""
    lock_file = lock_path(root / "project" / "recipes" / "probe.toml")
    lock = read_lock(lock_file)
    assert lock is not None
    for target in lock.targets:
        target.device["onnxruntime"] = "1.0.0"
    write_lock(lock_file, lock)


SHARED = "project/shared"
RECIPE = "project/recipes/probe.toml"
Change = Callable[[Path, pytest.MonkeyPatch], None]
CASES: list[Any] = [  # the slow ones repeat a mechanism another case covers
    (
        "weight",
        "weighted.toml",
        lambda r, m: _save_weights(r / "project/recipes/w.safetensors", shift=1.0),
        "changed: w.safetensors changed",
    ),
    pytest.param(
        "helper forward",
        "probe.toml",
        lambda r, m: _edit(r / SHARED / "helpers.py", "torch.relu(x)", "torch.tanh(x)"),
        "changed: ../shared/helpers.py changed",
        marks=pytest.mark.slow,
        id="helper forward",
    ),
    (
        "helper init",
        "probe.toml",
        lambda r, m: _edit(r / SHARED / "helpers.py", "-0.5, 0.5", "-0.1, 0.1"),
        "changed: ../shared/helpers.py changed",
    ),
    (
        "data file",
        "probe.toml",
        lambda r, m: _edit(r / SHARED / "config.json", "32", "24"),
        "changed: ../shared/config.json changed",
    ),
    (
        "environment variable",
        "probe.toml",
        lambda r, m: m.setenv("PROBE_SCALE", "2.5"),
        "changed: environment variable PROBE_SCALE changed",
    ),
    (
        "module outside the recipe folder",
        "probe.toml",
        lambda r, m: _edit(r / SHARED / "probe.py", "* self.scale", "* self.scale + 1.0"),
        "changed: ../shared/probe.py changed",
    ),
    (
        "kwarg",
        "probe.toml",
        lambda r, m: _edit(r / RECIPE, "width = 16 }", "width = 16, out = 6 }"),
        "changed: probe.toml changed",
    ),
    pytest.param(
        "input shape",
        "probe.toml",
        lambda r, m: _edit(r / RECIPE, "shape = [2, 16]", "shape = [3, 16]"),
        "changed: probe.toml changed",
        marks=pytest.mark.slow,
        id="input shape",
    ),
    (
        "precision",
        "probe.toml",
        lambda r, m: _edit(r / RECIPE, 'precisions = ["fp32"]', 'precisions = ["fp16"]'),
        "probe/fp16 part 0: would build: not in the lock file",
    ),
    (
        "backend version",
        "probe.toml",
        lambda r, m: _older_onnxruntime(r),
        "changed: probe/fp32: device changed (onnxruntime 1.0.0 -> ",
    ),
]


@pytest.mark.parametrize(
    ("case", "recipe_name", "change", "named"), CASES, ids=[c[0] for c in CASES]
)
def test_incremental_build_equals_clean_build(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    recipe_name: str,
    change: Change,
    named: str,
) -> None:
    recipe = project / "project" / "recipes" / recipe_name
    before = _published(project / "build")
    change(project, monkeypatch)
    lines = explain(recipe, Options(cache=project / "cache"))
    assert any(line.startswith(named) for line in lines), lines
    assert not _build(recipe, project / "cache").up_to_date  # type: ignore[attr-defined]
    _build(recipe, project / "clean-cache", Path("clean"))
    name = recipe.stem if recipe_name != "probe.toml" else "probe"
    incremental = _published(project / "build" / name)
    assert incremental == _published(project / "clean" / name)
    if case != "backend version":  # the one change that leaves the engine as it was
        assert incremental != {
            k.removeprefix(f"{name}/"): v for k, v in before.items() if k.startswith(f"{name}/")
        }


def test_a_file_the_model_never_reads_rebuilds_nothing(project: Path) -> None:
    recipe = project / "project" / "recipes" / "probe.toml"
    (project / SHARED / "notes.txt").write_text("edited, still never read\n")
    (project / "project" / "recipes" / "README.txt").write_text("new file\n")
    assert _build(recipe, project / "cache").up_to_date  # type: ignore[attr-defined]
    assert [line for line in explain(recipe, Options(cache=project / "cache"))] == [
        "probe/fp32 part 0: up to date"
    ]


def test_rewritten_in_place_with_restored_times_is_still_seen(project: Path) -> None:
    """`touch -r`: same size, same inode, same mtime, different bytes. ctime gives it away."""
    config = project / SHARED / "config.json"
    assert _build(project / RECIPE, project / "cache").up_to_date  # type: ignore[attr-defined]
    st = config.stat()  # the stat memo now holds this file's stat
    with config.open("r+") as handle:  # in place: the inode stays
        text = handle.read()
        handle.seek(0)
        handle.write(text.replace("32", "31"))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (config.stat().st_size, config.stat().st_ino) == (st.st_size, st.st_ino)
    result = _build(project / RECIPE, project / "cache")
    assert not result.up_to_date  # type: ignore[attr-defined]


def test_the_lock_pins_what_the_model_touched(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = read_lock(lock_path(project / RECIPE))
    assert lock is not None
    files = set(lock.inputs.files)
    assert files == {
        "probe.toml",
        "../shared/probe.py",
        "../shared/helpers.py",
        "../shared/config.json",
    }
    assert lock.inputs.env == {"PROBE_SCALE": "unset"}
    assert set(lock.inputs.distributions) >= {"torch"}
    assert str(project) not in lock_path(project / RECIPE).read_text()  # portable: no abs paths


def _checkout(root: Path, name: str) -> Path:
    dest = root / name
    shutil.copytree(PROBE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "recipes" / "probe.toml"


def test_two_checkouts_share_a_cache_and_each_get_their_own_engines(tmp_path: Path) -> None:
    cache = tmp_path / "shared-cache"
    first, second = _checkout(tmp_path, "a"), _checkout(tmp_path, "b")
    _edit(second.parent.parent / "shared" / "helpers.py", "torch.relu(x)", "torch.sigmoid(x)")
    a = _build(first, cache, tmp_path / "out-a")
    b = _build(second, cache, tmp_path / "out-b")
    (pa,) = a.targets[0].parts  # type: ignore[attr-defined]
    (pb,) = b.targets[0].parts  # type: ignore[attr-defined]
    assert not pb.cached and pa.sha256 != pb.sha256
    clean = _build(second, tmp_path / "clean-cache", tmp_path / "out-clean")
    assert clean.targets[0].parts[0].sha256 == pb.sha256  # type: ignore[attr-defined]
    lock = read_lock(lock_path(second))
    assert lock is not None
    helper = lock.inputs.files["../shared/helpers.py"]
    from trtbuild.cache.files import sha256_file

    assert helper == sha256_file(second.parent.parent / "shared" / "helpers.py")
    third = _checkout(tmp_path, "c")  # same code as the first: all hits, no graph job either
    graph_results = set((cache / "ac").glob("graph-*.json"))
    c = _build(third, cache, tmp_path / "out-c")
    assert [p.cached for t in c.targets for p in t.parts] == [True]  # type: ignore[attr-defined]
    assert c.targets[0].parts[0].sha256 == pa.sha256  # type: ignore[attr-defined]
    assert set((cache / "ac").glob("graph-*.json")) == graph_results


def test_run_locked_and_explain_agree_on_the_machine(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One staleness function: a changed backend fingerprint is seen by all four readers."""
    from trtbuild.backends.onnxruntime import OnnxRuntimeBackend
    from trtbuild.errors import TrtbuildError
    from trtbuild.release.fastpath import invocation, stale

    recipe = project / RECIPE
    lock = read_lock(lock_path(recipe))
    assert lock is not None
    old_key = lock.targets[0].parts[0].key
    real = OnnxRuntimeBackend.fingerprint
    monkeypatch.setattr(
        OnnxRuntimeBackend, "fingerprint", lambda self: {**real(self), "onnxruntime": "99.0"}
    )
    options = invocation(None, None, Path("build"), False)
    reason = stale(recipe, options, project / "cache")
    assert reason is not None and "device changed (onnxruntime " in reason
    with pytest.raises(TrtbuildError, match="--locked, but the inputs no longer match"):
        build(recipe, Options(cache=project / "cache", locked=True))
    assert any(
        "device changed" in line for line in explain(recipe, Options(cache=project / "cache"))
    )
    result = _build(recipe, project / "cache")
    assert result.targets[0].parts[0].key != old_key  # type: ignore[attr-defined]
    assert _build(recipe, project / "cache").up_to_date  # type: ignore[attr-defined]
    assert json.loads((project / "build/probe/provenance.json").read_text())["subject"]
