"""The fork server: forked jobs measured honestly, no process outliving a killed run, the memory
gate counting the server once (engines and locks the same as with plain processes:
tests/test_onetrace.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

import trtbuild
from trtbuild.execution.executor import run_job
from trtbuild.execution.forkserver import ForkServer
from trtbuild.execution.gate import MemoryGate
from trtbuild.execution.jobs import ProbeJob
from trtbuild.execution.process import worker_env
from trtbuild.orchestrate.build import Options, build
from trtbuild.release.lockfile import read_lock

MiB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> ForkServer:
    started = ForkServer(tmp_path / "forkserver.log", worker_env())
    started.start()
    yield started
    started.close()


def probe(tmp_path: Path, size: int, server: ForkServer | None) -> tuple[int, int | None]:
    """(peak RSS, private peak) of a job that touches `size` bytes and holds them 0.3 s."""
    outcome = run_job(ProbeJob(size, 0.3), tmp_path, None, server)
    assert outcome.result == {"bytes": size}
    return outcome.peak_rss_bytes, outcome.private_peak_bytes


def test_a_forked_job_counts_its_own_bytes_once_and_the_shared_ones_once(
    tmp_path: Path, server: ForkServer
) -> None:
    empty_peak, empty_private = probe(tmp_path, 0, server)
    full_peak, full_private = probe(tmp_path, 256 * MiB, server)
    assert empty_private is not None and full_private is not None
    # The server's pages (torch) are in the job's peak, as in a fresh process: not zero times ...
    assert empty_peak > 100 * MiB, empty_peak
    # ... but they are not the job's own: a job that allocates nothing holds little privately.
    assert empty_private < 48 * MiB, empty_private
    # What the job allocates is measured once, in both figures.
    assert 256 * MiB <= full_private < 256 * MiB + 48 * MiB, full_private
    assert 240 * MiB < full_peak - empty_peak < 256 * MiB + 48 * MiB, (full_peak, empty_peak)
    # Against a plain process: the same bytes on top of its own (smaller) interpreter.
    plain_empty, none = probe(tmp_path, 0, None)
    plain_full, _ = probe(tmp_path, 256 * MiB, None)
    assert none is None
    assert 240 * MiB < plain_full - plain_empty < 256 * MiB + 48 * MiB


def test_a_forked_jobs_garbage_collection_leaves_the_servers_pages_shared(
    tmp_path: Path, server: ForkServer
) -> None:
    """A full collection in a child walks every object it can reach; the server's (torch's,
    the exporter's) were left in its heap, so each page they sit on became the child's own
    copy: 87 MiB charged to every forked job whose model code ran a collection (torch.export's
    trace runs hundreds). The server freezes what it imported (gc.freeze) before it forks."""
    outcome = run_job(ProbeJob(0, 0.3, collect=True), tmp_path, None, server)
    assert outcome.private_peak_bytes is not None
    assert outcome.private_peak_bytes < 24 * MiB, outcome.private_peak_bytes


def pinned(lock_file: Path) -> dict[str, Any]:
    """What a lock pins as inputs and outputs (not the measured memory, which differs by mode)."""
    lock = read_lock(lock_file)
    assert lock is not None
    parts = [
        {k: getattr(part, k) for k in ("key", "fields", "sha256", "engine")}
        for target in lock.targets
        for part in target.parts
    ]
    return {"inputs": lock.inputs, "toolchain": lock.toolchain, "parts": parts}


def engines(out: Path) -> dict[Path, bytes]:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.onnx*"))}


def test_a_killed_run_leaves_neither_server_nor_jobs(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, threading
        from pathlib import Path
        from trtbuild.execution.executor import run_job
        from trtbuild.execution.process import worker_env
        from trtbuild.execution.forkserver import ForkServer
        from trtbuild.execution.jobs import ProbeJob
        server = ForkServer(Path({str(tmp_path)!r}) / "fs.log", worker_env())
        server.start()
        print(server._session.proc.pid, flush=True)
        job = ProbeJob(1 << 20, 600)
        threading.Thread(target=run_job, args=(job, Path({str(tmp_path)!r}), None, server)).start()
    """)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    server_pid = int(run.stdout.readline())
    server = psutil.Process(server_pid)
    deadline = time.monotonic() + 60
    while not server.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    (job,) = server.children()
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    _, alive = psutil.wait_procs([server, job], timeout=20)
    assert not alive, alive


def test_the_gate_counts_the_server_once_and_stops_it_for_a_plain_job(server: ForkServer) -> None:
    budget = server.rss_bytes + 600 * MiB
    gate = MemoryGate(slots=2, server=server)
    # Two forked jobs of (server + 250 MiB) each fit together: the server's pages count once.
    with gate.admit(server.rss_bytes + 250 * MiB, budget, forked=True) as first:
        assert first == budget  # its own peak holds the server's pages
        with gate.admit(server.rss_bytes + 250 * MiB, budget, forked=True) as second:
            assert second == budget - 250 * MiB
    assert server.running
    # A plain job that fits only without the server stops it (no forked job needs it) ...
    with gate.admit(budget - 100 * MiB, budget) as share:
        assert not server.running
        assert share == budget
    # ... and a small plain job next to a running server gets the budget less the server.
    server.start()
    with gate.admit(100 * MiB, budget) as share:
        assert server.running
        assert share == budget - server.rss_bytes


SCALED = """
import os

import torch


class Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(os.environ.get("TRTBUILD_TEST_SCALE", "1"))


def scaled() -> Scaled:
    return Scaled()
"""


def test_runs_with_another_cache_share_a_server_and_each_job_sees_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds in one process under different caches (as in a test session) share one server
    (no second import of torch); each forked job still reads its own run's environment."""
    from trtbuild.execution import forkserver

    (tmp_path / "scaled.py").write_text(SCALED)
    recipe = tmp_path / "scaled.toml"
    recipe.write_text(
        '[recipe]\nname = "scaled"\n[defaults]\nbackend = "onnxruntime"\n'
        '[[model]]\nname = "m"\nsource = "scaled.py:scaled"\nweights = { init = "random", seed = 0 }\n'
        '[[model.inputs]]\nname = "x"\nshape = [2, 3]\n'
    )
    x = torch.randn(2, 3)
    servers = []
    for scale in ("2", "3"):
        monkeypatch.setenv("TRTBUILD_CACHE", str(tmp_path / f"cache-{scale}"))
        monkeypatch.setenv("TRTBUILD_TEST_SCALE", scale)
        (target,) = build(recipe, Options(out=tmp_path / f"out-{scale}")).targets
        assert torch.allclose(trtbuild.load(target.dir)(x), x * float(scale))
        servers.append(forkserver._kept)
    assert servers[0] is not None and servers[0] is servers[1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by torch at import: a new server
    assert not servers[0].serves(worker_env())


def test_a_budget_under_800_mib_forks_and_counts_the_server_once(
    tmp_path: Path, recipes: Path
) -> None:
    """At the seed network's 640 MiB the run forks its torch jobs; a forked job allocating known
    bytes is measured within 10% of them, and the server plus the job stay within the budget."""
    from trtbuild.cache.store import Store
    from trtbuild.orchestrate.executors import fork_server
    from trtbuild.recipe.load import load_recipe

    recipe = load_recipe(recipes / "seed_net_1g.toml")
    targets = recipe.targets()
    budget = targets[0].budget.host_memory
    assert budget < 800 * MiB
    server = fork_server(Options(), targets, Store(tmp_path / "cache"))
    assert server is not None
    try:
        server.start()
        gate, size = MemoryGate(slots=1, server=server), 200 * MiB
        with gate.admit(server.rss_bytes + size, budget, forked=True) as share:
            outcome = run_job(ProbeJob(size, 0.3), tmp_path, share, server)
        assert outcome.private_peak_bytes is not None  # it was forked
        assert abs(outcome.private_peak_bytes - size) <= size // 10, outcome.private_peak_bytes
        assert server.rss_bytes + outcome.private_peak_bytes <= budget
        assert outcome.peak_rss_bytes <= share
    finally:
        server.close()


def test_a_plain_job_whose_recipe_broke_since_it_was_planned_reports_it_in_one_line(
    tmp_path: Path,
) -> None:
    """A job process started on its own reads the recipe before the job runs, to preload what a
    torch job imports (trtbuild.execution.preload): a recipe edited into a wrong one meanwhile
    must still end as the job's own error, naming the file, not as a crash of the process."""
    from trtbuild.errors import TrtbuildError
    from trtbuild.execution.jobs import GraphJob

    recipe = tmp_path / "broken.toml"
    recipe.write_text('[recipe]\nname = "broken"\n[[model]]\nname = "m"\n')  # no source, inputs
    with pytest.raises(TrtbuildError) as raised:
        run_job(GraphJob(str(recipe), "m", "fp32"), tmp_path, None, None)
    # Not "graph process died with exit status 1: trtbuild.errors.TrtbuildError: ..."
    assert str(raised.value).startswith(f"{recipe}:3: field 'model[0].source'"), raised.value
