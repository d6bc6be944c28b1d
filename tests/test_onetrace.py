"""One trace per target (issue 28): the graph job's process exports the target's parts from the
program it traced. Its engines are the bytes the two-trace path (a new export process that
imports, builds and traces the model again) makes, and a held process gives way to a job that
needs its room."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.test_forkserver import MiB, engines, pinned
from tests.test_transformers import MODELS, write_recipe
from trtbuild.execution.executor import resume, run_job
from trtbuild.execution.gate import MemoryGate
from trtbuild.execution.jobs import GraphJob
from trtbuild.orchestrate.build import Options, build
from trtbuild.release.lockfile import lock_path

TINY_GPT2 = {
    **MODELS["gpt2"],
    "config": {**MODELS["gpt2"]["config"], "n_layer": 2, "n_embd": 128},
}
FACTORY = {  # a torch factory with keyword arguments (recipes/models/resnet.py)
    "source": "models/resnet.py:resnet_tiny",
    "kwargs": {"num_classes": 10, "width": 8},
    "inputs": [
        {
            "name": "x",
            "shape": {"min": [1, 3, 32, 32], "opt": [2, 3, 32, 32], "max": [4, 3, 32, 32]},
        }
    ],
}


def exports(result: Any) -> list[dict[str, Any]]:
    return [
        process
        for target in result.targets
        for part in target.parts
        for process in part.record["processes"]
        if process["kind"] == "export"
    ]


def build_both_ways(
    recipe: Path, tmp_path: Path, fork_server: bool = True
) -> dict[bool, tuple[Any, Any]]:
    """Build the recipe through each path, each into a fresh cache: {one_trace: (what the lock
    pins, the engines' bytes)}. `fork_server=False`: the two-trace build runs plain processes."""
    built = {}
    for one_trace in (True, False):
        out = tmp_path / f"out-{one_trace}"
        forked = one_trace or fork_server
        cache = tmp_path / f"cache-{one_trace}"
        result = build(
            recipe, Options(out=out, cache=cache, one_trace=one_trace, fork_server=forked)
        )
        assert [bool(t.failed) for t in result.targets] == [False] * len(result.targets)
        for export in exports(result):
            assert export["graph_trace"] == one_trace
            assert (export["private_peak_bytes"] is not None) == forked, export
        built[one_trace] = (pinned(lock_path(recipe)), engines(out))
    assert built[True][1], "no engine was built"
    return built


def test_engines_and_lock_of_one_trace_forked_are_those_of_two_traces_plain(
    recipes: Path, tmp_path: Path
) -> None:
    """A torch factory with keyword arguments and a dynamic batch, and a `transformers` GPT-2,
    built through one trace per target in forked processes, and through two traces in plain
    processes: the same engines, and the same lock (inputs, keys, distributions), whichever way
    (and so the same with or without the fork server too)."""
    recipe = write_recipe(recipes / "both.toml", {"factory": FACTORY, "gpt2": TINY_GPT2})
    built = build_both_ways(recipe, tmp_path, fork_server=False)
    assert built[True] == built[False]
    assert "transformers" in built[True][0]["inputs"].distributions  # discovered both ways


@pytest.mark.slow
def test_split_engines_of_the_one_trace_path_are_the_bytes_of_the_two_trace_path(
    recipes: Path, tmp_path: Path
) -> None:
    """recipes/gpt2.toml: a torch factory split into 2 engines at its 704 MiB, both parts from
    the one trace (the budget forces the split: no memory model noise decides it)."""
    built = build_both_ways(recipes / "gpt2.toml", tmp_path)
    assert len(built[True][0]["parts"]) == 2
    assert built[True] == built[False]


def test_a_held_process_is_released_for_a_job_that_needs_its_room(
    recipes: Path, tmp_path: Path
) -> None:
    """A graph job's process waits for its export with its bytes counted; a job that does not
    fit beside it, with nothing else running, releases it, and the export then runs anew."""
    recipe = write_recipe(recipes / "factory.toml", {"factory": FACTORY})
    job = GraphJob(str(recipe), "factory", "fp32", str(tmp_path / "cache"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    outcome = run_job(job, scratch, None, None, hold=True)
    held = outcome.held
    assert held is not None and held.bytes == outcome.peak_rss_bytes
    process = psutil.Process(held.pid)
    assert process.status() != psutil.STATUS_ZOMBIE  # waiting on its FIFO
    gate, budget = MemoryGate(slots=2), held.bytes + 100 * MiB
    gate.hold(held)
    with gate.admit(50 * MiB, budget) as share:  # fits beside it
        assert share == budget - held.bytes
        assert held.why_not == ""
    with gate.admit(200 * MiB, budget) as share:  # does not: released
        assert share == budget
        assert "make room" in held.why_not
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert resume(held, job, tmp_path) is None  # the export will trace again
    assert not scratch.exists()  # its scratch went with it


def test_a_held_process_that_dies_while_it_waits_says_how(recipes: Path, tmp_path: Path) -> None:
    """-v said 'the export traces the model again: ' with no reason when the waiting process
    was killed (a new-user trial); the reason now names the signal."""
    recipe = write_recipe(recipes / "factory.toml", {"factory": FACTORY})
    job = GraphJob(str(recipe), "factory", "fp32", str(tmp_path / "cache"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    held = run_job(job, scratch, None, None, hold=True).held
    assert held is not None
    os.kill(held.pid, signal.SIGKILL)
    held.exited.result(timeout=30)
    assert resume(held, job, tmp_path) is None
    assert held.why_not == "the graph job's process ended while it waited (killed by SIGKILL)"
