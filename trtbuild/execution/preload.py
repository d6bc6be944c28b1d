"""What a torch job imports before any model code runs, imported once per process: by the fork
server before its first fork (zygote.py), and by a job process started on its own (worker.py).

A forked child starts where a fresh worker is when its depfile recording begins. The exporter's
modules, which a graph job imports inside its recording, are imported after the baseline is
taken (depfile.set_baseline): a job reports them as imported either way, so the lock is the same
with or without the server (tests/test_onetrace.py compares the locks). The fork server also
builds the exporter's operator registry (0.6 s) before its first fork: a graph job's process goes
on to export its target's parts (follow.py) and would otherwise build one of its own, as would
every export job (cold ResNet-50 builds went from 9.9 to 9.2 s, median of 3 alternating runs).

Imports make long-lived objects, seldom garbage: the cycle collector's passes over them find next
to nothing and cost 0.7 s of the fork server's 2.6 s start, 0.5 s of a job process's 2.0 s
(measured). So they run with it off, and what they made is frozen (gc.freeze): the job's own
collections (torch.export's trace runs hundreds) skip it, and a forked child's no longer write to
the server's pages (copy-on-write: 87 MiB of a forked job's private bytes,
tests/test_forkserver.py). The cycles the imports left stay: 12 MiB of the server's RSS
(347 -> 358 MiB), against 0.27 s for a collection that gives no memory back to the system.
"""

from __future__ import annotations

import gc
import importlib
import sys

BASELINE = (
    "trtbuild.execution.worker",
    "trtbuild.recipe.schema",
    "trtbuild.model.depfile",
    "trtbuild.model.frontend",
    "trtbuild.model.exporter",
    "trtbuild.model.checkpoint",
    "trtbuild.model.graph",
    "trtbuild.model.partexport",
)


def preload(registry: bool) -> None:
    """Import BASELINE, take the depfile baseline, import the exporter (with its operator registry
    when `registry`), then freeze what was made. Once per process, before any job runs in it."""
    gc.disable()
    try:
        for name in BASELINE:
            importlib.import_module(name)
        from trtbuild.model import depfile, exporter

        depfile.set_baseline(sys.modules)
        exporter.import_exporter(registry=registry)
        gc.freeze()
    finally:
        gc.enable()
