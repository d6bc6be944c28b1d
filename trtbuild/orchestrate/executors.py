"""The run's executor: local processes (with a fork server where it pays) or a Ray cluster."""

from __future__ import annotations

import os

from trtbuild.backends import resolve_backend
from trtbuild.cache.store import Store
from trtbuild.execution import forkserver
from trtbuild.execution.executor import Executor, LocalExecutor
from trtbuild.execution.forkserver import EXPECTED_BYTES, ForkServer
from trtbuild.execution.process import worker_env
from trtbuild.orchestrate.kinds import local_kinds
from trtbuild.orchestrate.options import Options
from trtbuild.recipe.load import Recipe, Target


def make_executor(opts: Options, recipe: Recipe, targets: list[Target], store: Store) -> Executor:
    """The run's executor: Options (the CLI) first, then the recipe's [executor] table."""
    spec = recipe.schema.executor
    if (opts.executor or spec.kind) == "ray":
        from trtbuild.execution.rayexec import RayExecutor

        address = opts.ray_address or spec.address
        if address:
            return RayExecutor(address, opts.jobs, set())
        # A cluster started here offers what this machine is, never what a recipe asks for.
        here = {k for t in targets for k in local_kinds(resolve_backend(t.backend))}
        return RayExecutor(None, opts.jobs, here)
    return LocalExecutor(opts.jobs, fork_server(opts, targets, store))


MIN_JOB_BYTES = 64 << 20  # what a forked job needs beside the server, at the least


def fork_server(opts: Options, targets: list[Target], store: Store) -> ForkServer | None:
    """A fork server for this run, unless turned off, no target imports torch (`onnx:` sources),
    or a budget leaves no room for a job beside the server (EXPECTED_BYTES + MIN_JOB_BYTES).

    At any budget above that the server pays: its pages count once against the budget (the
    memory gate charges a forked job only what it adds, and stops the server when a plain job
    needs its room), so a forked job costs what a plain one does, less `import torch`.
    """
    torch_targets = [t for t in targets if not t.model.onnx]
    smallest = min((t.budget.host_memory for t in torch_targets), default=0)
    if not opts.fork_server or smallest < EXPECTED_BYTES + MIN_JOB_BYTES:
        return None
    return forkserver.for_run(store.layout.tmp / f"{os.getpid()}-forkserver.log", worker_env())
