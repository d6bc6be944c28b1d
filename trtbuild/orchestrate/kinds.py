"""Device kinds: the kinds this machine is (its backend's device, and those TRTBUILD_DEVICE_KINDS
names), and the error for a target that needs another kind on the local executor."""

from __future__ import annotations

import os

from trtbuild.errors import TrtbuildError
from trtbuild.execution.executor import Executor
from trtbuild.recipe.load import Target
from trtbuild.release.inputs import machine

KINDS_ENV = "TRTBUILD_DEVICE_KINDS"  # device kinds this machine stands for besides its own


def check_kind(target: Target, backend: str, executor: Executor) -> None:
    """A part that must be built for a device kind this machine is not: one clear error (a
    cluster's executor places it on a node of that kind instead)."""
    if target.kind is None or executor.name != "local":
        return
    here = local_kinds(backend)
    if target.kind not in here:
        raise TrtbuildError(
            f"{target.name}: device kind {target.kind!r} is not this machine "
            f"({', '.join(sorted(here)) or backend}; {KINDS_ENV} adds kinds): build it with "
            "--executor ray on a cluster with a node of that kind, or from a cache that holds it"
        )


def local_kinds(backend: str) -> set[str]:
    """The device kinds this machine is: its own device, and those TRTBUILD_DEVICE_KINDS names."""
    declared = os.environ.get(KINDS_ENV, "")
    return {machine(backend)["device"].get("device", ""), *filter(None, declared.split(","))} - {""}
