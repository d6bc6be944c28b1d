"""trtbuild: declarative, memory-bounded, incremental and reproducible inference-engine builds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trtbuild.errors import TrtbuildError

if TYPE_CHECKING:
    from trtbuild.build import BuildResult, Options
    from trtbuild.runtime import ChainedModel

__all__ = ["TrtbuildError", "build", "load"]
__version__ = "0.1.0"


def build(recipe: str, opts: Options | None = None) -> BuildResult:
    from trtbuild.build import build as _build

    return _build(recipe, opts)


def load(directory: Any, verify: bool = True) -> ChainedModel:
    from trtbuild.runtime import load as _load

    return _load(directory, verify)
