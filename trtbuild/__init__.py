"""trtbuild: declarative, memory-bounded, incremental and reproducible inference-engine builds.

    import trtbuild
    result = trtbuild.build("recipes/resnet.toml", trtbuild.Options(budget=2 << 30))
    plans = trtbuild.plan("recipes/seed_net.toml", trtbuild.Options(budget=640 << 20))
    model = trtbuild.load("build/resnet/resnet50/fp32")

Every function can be called any number of times in one process. Heavy modules are imported
on first use, so `import trtbuild` stays cheap (the no-op `trtbuild run` path relies on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtbuild.errors import TrtbuildError

if TYPE_CHECKING:
    from trtbuild.orchestrate.options import Options
    from trtbuild.orchestrate.planning import PlannedTarget
    from trtbuild.orchestrate.results import BuildResult
    from trtbuild.runtime import ChainedModel

__all__ = ["Options", "TrtbuildError", "build", "load", "plan"]
__version__ = "0.1.0"


def build(recipe: str | Path, opts: Options | None = None) -> BuildResult:
    """Build every target of `recipe` (see trtbuild.orchestrate.build.build)."""
    from trtbuild.orchestrate.build import build as _build

    return _build(recipe, opts)


def plan(
    recipe: str | Path,
    opts: Options | None = None,
    model: str | None = None,
    precision: str | None = None,
) -> list[PlannedTarget]:
    """The partition plan of each target (optionally one model / precision); builds nothing."""
    from trtbuild.orchestrate.planning import plan_targets

    return plan_targets(recipe, opts, model, precision)


def load(directory: str | Path, verify: bool = True) -> ChainedModel:
    """build/<recipe>/<model>/<precision> as one callable (see trtbuild.runtime.load)."""
    from trtbuild.runtime import load as _load

    return _load(directory, verify)


def __getattr__(name: str) -> Any:
    """`trtbuild.Options` and `trtbuild.BuildResult`, imported when first asked for."""
    if name == "Options":
        from trtbuild.orchestrate.options import Options

        return Options
    if name == "BuildResult":
        from trtbuild.orchestrate.results import BuildResult

        return BuildResult
    raise AttributeError(f"module 'trtbuild' has no attribute {name!r}")
