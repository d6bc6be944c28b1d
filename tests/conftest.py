from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from trtbuild.planner.memory import MemoryModel, Stage

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
DATA = Path(__file__).resolve().parent / "data"
# Counts weights 20000x: makes a model of a few hundred KB split into several engines.
SPLITTING = MemoryModel(Stage(0, 20_000.0), Stage(0, 20_000.0), "test: 20000 x weights")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow") or os.environ.get("TRTBUILD_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow or set TRTBUILD_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test works in its own folder with its own cache: never the real ./cache or ./build."""
    monkeypatch.setenv("TRTBUILD_CACHE", str(tmp_path / "cache"))
    for name in ("TRTBUILD_REMOTE_CACHE", "TRTBUILD_REMOTE_CACHE_HEADER", "TRTBUILD_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)  # a user's shared cache is never a test's
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """A private copy of recipes/ (lock files are written next to recipes) plus the test recipes."""
    dest = tmp_path / "recipes"
    shutil.copytree(RECIPES, dest, ignore=shutil.ignore_patterns("*.lock", "__pycache__"))
    for recipe in DATA.glob("*.toml"):
        shutil.copy(recipe, dest / recipe.name)
    for model in (DATA / "models").glob("*.py"):
        shutil.copy(model, dest / "models" / model.name)
    return dest


def require(reason: str | None) -> None:
    """A test whose real tool (Chromium, nginx, Ray) is missing here skips with `reason`, unless
    TRTBUILD_REQUIRE_TOOLS=1 (set by .ci/run, which installs them all): then it fails."""
    if reason is None:
        return
    if os.environ.get("TRTBUILD_REQUIRE_TOOLS") == "1":
        pytest.fail(f"TRTBUILD_REQUIRE_TOOLS=1 but {reason}")
    pytest.skip(reason)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file below root."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def small_seed_net(recipes: Path) -> Path:
    """The seed network's ops at a few KB, at 1 GiB: split by a memory model that counts weights
    20000x (SPLITTING)."""
    text = (recipes / "seed_net_1g.toml").read_text()
    text = text.replace('name = "seed_net_1g"', 'name = "seed_small"')
    text = re.sub(r'host_memory = "[^"]*"', 'host_memory = "1GiB"', text)
    text = text.replace(
        'source = "models/seed_net.py:seed_net"',
        'source = "models/seed_net.py:seed_net"\nkwargs = { channels = 16, hidden = 64, spatial = 32 }',
    )
    text = text.replace("shape = [1, 1024, 224, 224]", "shape = [1, 16, 32, 32]")
    text = text.replace("[model.check]\nenabled = false\n", "")  # a few KB: the check fits
    path = recipes / "seed_small.toml"
    path.write_text(text)
    return path
