"""Early cutoff (as in Shake, Buck2 and Bazel): a part's action key is what the part is (its
subgraph, its weights' digests, settings, toolchain, device), not the digest of the model's code.
An edit runs the graph job again; parts whose subgraph and weights are unchanged are cache hits
and their published files stay byte for byte as they were. The matrix in tests/test_inputs.py
checks that every change that does alter an engine still rebuilds it (never stale).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import SPLITTING, small_seed_net
from trtbuild.orchestrate.build import BuildResult, Options, build
from trtbuild.release.lockfile import lock_path, read_lock


def _published(out: Path) -> dict[str, bytes]:
    """Engine files and engine.json (build.json holds timings, provenance a date)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("build.json", "provenance.json")
    }


def _built(result: BuildResult) -> list[int]:
    return [p.index for t in result.targets for p in t.parts if not p.cached]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@pytest.fixture
def split(recipes: Path) -> tuple[Path, Options]:
    """The seed network at a few KB, split into several parts, built once."""
    recipe = small_seed_net(recipes)
    opts = Options(memory_override=SPLITTING, precisions=["fp32"])
    (target,) = build(recipe, opts).targets
    assert len(target.parts) >= 3, target.plan
    return recipe, opts


def _clean(recipe: Path) -> Path:
    """The recipe built from an empty cache into its own folder: what incremental must equal."""
    out = recipe.parent / "clean"
    opts = Options(memory_override=SPLITTING, precisions=["fp32"], cache=out / "cache", out=out)
    build(recipe, opts)
    return out / "seed_small"


def test_a_comment_only_edit_rebuilds_no_part(split: tuple[Path, Options]) -> None:
    recipe, opts = split
    out = recipe.parent.parent / "build" / "seed_small"
    before = _published(out)
    model = recipe.parent / "models" / "seed_net.py"
    _edit(model, "    def forward(", "    # the tutorial's forward, unchanged\n    def forward(")
    model.write_text("# A comment-only edit: every line below moves down.\n" + model.read_text())
    again = build(recipe, opts)
    assert not again.up_to_date  # the model file changed: its graph job ran again
    assert _built(again) == []
    assert _published(out) == before
    assert _published(_clean(recipe)) == before


def test_a_code_change_rebuilds_only_the_parts_that_hold_it(split: tuple[Path, Options]) -> None:
    recipe, opts = split
    # The second activation (after bn2) becomes a GELU; every other op stays as it was.
    _edit(recipe.parent / "models" / "seed_net.py", "F.relu(self.bn2(", "F.gelu(self.bn2(")
    again = build(recipe, opts)
    (target,) = again.targets
    ops = {op["name"]: op["target"] for op in target.graph_job.graph["ops"]}
    holding = {p.index for p in target.plan.parts if any("gelu" in ops[o] for o in p.ops)}
    assert holding and len(holding) < len(target.plan.parts)
    assert set(_built(again)) == holding
    assert _published(recipe.parent.parent / "build" / "seed_small") == _published(_clean(recipe))


UNRELATED = "unrelated_tool"


def _fake_distribution(site: Path, version: str) -> None:
    """An installed distribution model code never imports, with entry points that any scan of
    installed metadata (importlib.metadata.entry_points()) reads."""
    shutil.rmtree(site, ignore_errors=True)
    info = site / f"{UNRELATED}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {UNRELATED}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text("[console_scripts]\nunrelated = unrelated_tool:main\n")
    (site / UNRELATED).mkdir()
    (site / UNRELATED / "__init__.py").write_text("def main() -> None: ...\n")


def test_installing_or_upgrading_an_unrelated_distribution_rebuilds_nothing(
    recipes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    _fake_distribution(site, "1.0")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{':'.join(sys.path)}")
    monkeypatch.syspath_prepend(str(site))
    recipe = recipes / "tiny.toml"
    opts = Options(check=False)
    build(recipe, opts)
    lock = read_lock(lock_path(recipe))
    assert lock is not None
    pinned = set(lock.inputs.distributions)
    assert "torch" in pinned
    # Packaging tools and distributions whose modules the model never imported are not inputs.
    assert not pinned & {UNRELATED, "pip", "setuptools", "wheel", "pytest", "mypy"}, pinned
    _fake_distribution(site, "2.0")  # an upgrade
    again = build(recipe, opts)
    assert again.up_to_date and _built(again) == []
