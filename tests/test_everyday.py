"""Everyday use (issue 26): a cache that stays consistent, outputs that belong to one recipe file,
a signature never left beside a statement it does not sign, scratch removed after a run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from trtbuild.cache import upkeep
from trtbuild.cache.store import Store
from trtbuild.cli import main


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trtbuild: error:")]


def cache_files(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_nlink for p in (cache / "cas").iterdir()}


def test_gc_frees_only_what_it_can_and_verify_then_passes(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    recipe = recipes / "tiny.toml"
    assert main(["run", str(recipe)]) == 0
    published = {n for n, links in cache_files(cache).items() if links > 1}
    assert published  # engines are hard links into build/: evicting them frees nothing
    capsys.readouterr()
    assert main(["cache", "gc", "--max-size", "1KiB"]) == 0
    out = capsys.readouterr().out
    assert published <= set(cache_files(cache))  # kept: they are what the current lock names
    assert "freed" in out
    assert main(["cache", "verify"]) == 0, capsys.readouterr()
    # What gc left still serves a no-op: the current lock's engines are all there.
    assert main(["run", str(recipe), "--json"]) == 0


def test_gc_ignoring_locks_evicts_the_published_blobs_and_reports_the_bytes_freed(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    recipe = recipes / "tiny.toml"
    assert main(["run", str(recipe)]) == 0
    for engine in Path("build").rglob("*.onnx*"):  # published copies gone: blobs freeable
        engine.unlink()
    freeable = sum((cache / "cas" / n).stat().st_size for n in cache_files(cache))
    capsys.readouterr()
    assert main(["cache", "gc", "--max-size", "0", "--ignore-locks"]) == 0
    out = capsys.readouterr().out
    assert not cache_files(cache)
    assert f"freed {freeable} bytes" in out.replace(",", ""), out
    assert main(["cache", "verify"]) == 0, capsys.readouterr()
    # Every action named a blob that is gone: none is left to fail verify or serve a miss.
    assert (
        not list((cache / "ac").glob("*.json")) or upkeep.verify_all(Store(cache.resolve())) == []
    )


def test_a_plain_run_after_a_signed_release_removes_the_stale_signature(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "release.key"
    assert main(["keygen", str(key)]) == 0
    recipe = recipes / "tiny.toml"
    base = ["run", str(recipe), "--backend", "onnxruntime"]
    assert main([*base, "--release", "--sign", str(key)]) == 0
    envelope = Path("build/tiny/provenance.dsse.json")
    assert envelope.is_file()
    text = recipe.read_text().replace("seed = 3", "seed = 4")  # other weights: other engines
    recipe.write_text(text)
    assert main(base) == 0
    assert not envelope.exists()  # it signed engines that are no longer published


def test_two_recipe_files_with_one_name_do_not_share_an_output_folder(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = recipes / "tiny.toml"
    second = recipes / "tiny_copy.toml"
    second.write_text(
        first.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
    )
    assert main(["run", str(first)]) == 0
    before = sorted(p.name for p in Path("build/tiny/resnet_tiny").iterdir())
    capsys.readouterr()
    assert main(["run", str(second)]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "tiny.toml" in err[0] and "tiny_copy.toml" in err[0], err
    assert "[recipe] name" in err[0]
    assert sorted(p.name for p in Path("build/tiny/resnet_tiny").iterdir()) == before


def test_a_dropped_target_is_reported_when_its_outputs_go(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = recipes / "tiny.toml"
    assert main(["run", str(recipe)]) == 0
    recipe.write_text(
        recipe.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
    )
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert "resnet_tiny/fp16" in captured.out + captured.err
    assert "removed" in captured.out + captured.err
    assert not Path("build/tiny/resnet_tiny/fp16").exists()


def test_a_run_leaves_nothing_in_the_cache_scratch(
    recipes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trtbuild.execution import forkserver

    forkserver._close_kept()  # this run starts its own server, its log in this cache
    monkeypatch.setattr(forkserver, "_kept", None)
    assert main(["run", str(recipes / "tiny.toml")]) == 0
    forkserver._close_kept()  # what happens at the end of a `trtbuild run` process
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


SLOW_FACTORY = '''
import os, pathlib, time
import torch
from torch import nn


def slow(marker: str = "") -> nn.Module:
    """A tiny model whose construction waits while $SLOW_MARKER names a file (a long job)."""
    flag = os.environ.get("SLOW_MARKER")
    if flag:
        pathlib.Path(flag).write_text(str(os.getpid()))
        time.sleep(120)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU())
'''


# SIGINT to trtbuild's pid alone (a supervisor, Popen.send_signal): it waited for the running
# jobs to finish (15 s for a split Llama) before it stopped; Ctrl-C reaches the jobs too
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_termination_stops_the_build_like_ctrl_c(tmp_path: Path, signum: int) -> None:
    (tmp_path / "slow.py").write_text(SLOW_FACTORY)
    recipe = tmp_path / "slow.toml"
    recipe.write_text(
        '[recipe]\nname = "slow"\n[defaults]\nbackend = "onnxruntime"\nprecisions = ["fp32"]\n'
        '[[model]]\nname = "m"\nsource = "slow.py:slow"\nweights = { init = "random", seed = 0 }\n'
        '[[model.inputs]]\nname = "input"\nshape = [2, 8]\ndtype = "float32"\n'
    )
    marker = tmp_path / "started"
    env = {**os.environ, "SLOW_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtbuild", "run", str(recipe)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), proc.communicate()[1]
    job_pid = int(marker.read_text() or 0)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    what = "interrupted" if signum == signal.SIGINT else f"terminated ({name})"
    assert f"trtbuild: {what}; build processes stopped" in stderr
    assert not psutil.pid_exists(job_pid) or psutil.Process(job_pid).status() == "zombie"
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # no scratch left behind
    assert not Path("build").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "trtbuild", "run", str(recipe)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr


def test_a_run_from_the_recipes_folder_uses_the_project_cache_and_build(
    recipes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("TRTBUILD_CACHE")
    (tmp_path / ".git").mkdir()  # tmp_path is a project: the nearest folder up holding .git
    monkeypatch.chdir(recipes)
    assert main(["run", "tiny.toml"]) == 0
    assert (tmp_path / "cache" / "cas").is_dir() and (tmp_path / "build" / "tiny").is_dir()
    assert not (recipes / "cache").exists() and not (recipes / "build").exists()
    monkeypatch.chdir(tmp_path)  # the same project from its root: up to date
    capsys.readouterr()
    assert main(["run", "recipes/tiny.toml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True
    lock = (recipes / "tiny.lock").read_text()
    assert 'out = "build"' in lock  # relative to the project: the lock can be committed


def test_run_json_is_small_lists_engines_on_a_noop_and_reports_errors_as_json(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(recipes / "tiny.toml")
    assert main(["run", recipe, "--json"]) == 0
    built = capsys.readouterr().out
    assert len(built) < 8_000, len(built)  # no RSS samples or weight lists: those are in build.json
    first = json.loads(built)
    assert main(["run", recipe, "--json"]) == 0
    noop = json.loads(capsys.readouterr().out)
    assert noop["up_to_date"] is True
    engines = [e for t in noop["targets"] for e in t["engines"]]
    assert engines == [e for t in first["targets"] for e in t["engines"]] and len(engines) == 2
    assert all(Path(e).is_file() for e in engines)
    assert main(["run", str(recipes / "missing.toml"), "--json"]) == 1
    failure = json.loads(capsys.readouterr().out)
    assert failure["ok"] is False and failure["exit_code"] == 1
    assert "missing.toml" in failure["error"]


def test_run_builds_a_subset_and_leaves_the_lock_alone(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(recipes / "tiny.toml")
    assert main(["run", recipe, "--precision", "fp16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(t["model"], t["precision"]) for t in out["targets"]] == [("resnet_tiny", "fp16")]
    assert Path("build/tiny/resnet_tiny/fp16/engine.json").is_file()
    assert not Path("build/tiny/resnet_tiny/fp32").exists()
    assert not (recipes / "tiny.lock").exists()
    assert main(["run", recipe, "--model", "nope"]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "--model nope" in err[0] and "models: resnet_tiny" in err[0], err


def test_verbose_never_calls_a_part_it_builds_up_to_date(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = recipes / "tiny.toml"
    assert main(["run", str(recipe)]) == 0
    (recipes / "tiny.lock").rename(recipes / "tiny.lock.kept")
    shutil.rmtree(Path(os.environ["TRTBUILD_CACHE"]))  # the lock matches; the cache is empty
    (recipes / "tiny.lock.kept").rename(recipes / "tiny.lock")
    recipe.write_text(recipe.read_text() + "\n")  # stale: the recipe's bytes changed
    capsys.readouterr()
    assert main(["run", str(recipe), "-v"]) == 0
    text = capsys.readouterr().err
    assert "part 0: building: inputs unchanged" in text, text
    assert "part 0: up to date" not in text


def test_explain_names_the_option_that_changed(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(recipes / "tiny.toml")
    assert main(["run", recipe]) == 0
    capsys.readouterr()
    assert main(["explain", recipe, "--budget", "1GiB"]) == 0
    out = capsys.readouterr().out
    assert f"option budget changed (the recipe's -> {1 << 30})" in out, out


def test_the_smallest_budget_counts_the_graph_job_and_so_does_the_closing_table(
    recipes: Path,
) -> None:
    from rich.console import Console

    from trtbuild.cli.run import _table
    from trtbuild.errors import TrtbuildError
    from trtbuild.orchestrate.build import Options, build
    from trtbuild.orchestrate.planning import plan_targets

    recipe = recipes / "tiny.toml"
    (planned, _) = plan_targets(recipe, Options())
    graph_peak = planned.job.peak_rss_bytes
    assert planned.plan.min_feasible_budget_bytes >= graph_peak > 100 << 20
    with pytest.raises(TrtbuildError) as raised:
        plan_targets(recipe, Options(budget=4096))
    message = str(raised.value)
    assert message.startswith("resnet_tiny/fp32: budget 4.00 KiB is too small"), message
    smallest = int(message.split("the smallest budget that works is ")[1].split()[0])
    assert smallest >= graph_peak

    result = build(recipe)
    target = result.targets[0]
    console = Console(width=200, record=True)
    console.print(_table(result))
    row = next(line for line in console.export_text().splitlines() if "resnet_tiny/fp32" in line)
    peak = max([target.graph_job.peak_rss_bytes, *(p.peak_rss_bytes for p in target.parts)])
    assert row.split("│")[5].strip() == f"{peak / 2**20:.0f}"


def test_plan_svg_is_one_readable_document_with_every_edge(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil as sh
    import xml.etree.ElementTree as ET

    from tests.conftest import require

    require(
        None if sh.which("dot") else "Graphviz's dot is not installed (apt-get install graphviz)"
    )
    recipe = str(recipes / "tiny.toml")  # two targets: fp32 and fp16
    capsys.readouterr()
    assert main(["plan", recipe, "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.count("digraph") == 1 and dot.count('label="resnet_tiny/fp') == 2
    edges = [line for line in dot.splitlines() if "->" in line]
    assert len(edges) > 2 * 40  # every op edge of both ResNets, not only engine boundaries
    assert main(["plan", recipe, "--format", "svg"]) == 0
    svg = ET.fromstring(capsys.readouterr().out)  # one XML document
    width, height = (float(svg.get(k, "0").removesuffix("pt")) for k in ("width", "height"))
    assert height > width  # ranked top to bottom, not one long row


def test_plan_trtexec_writes_the_part_onnx_files_it_names(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    import numpy as np
    import onnxruntime as ort

    from tests.conftest import small_seed_net

    recipe = small_seed_net(recipes)  # split by the SPLITTING memory model below
    capsys.readouterr()
    assert main(["plan", str(recipe), "--budget", "1GiB", "--trtexec"]) == 0
    text = capsys.readouterr().out
    named = re.findall(r"--onnx=(\S+)", text)
    assert named and all(Path(p).is_file() for p in named), text
    assert all("/trtexec/" in p for p in named)  # never inside a published target's folder
    # The file computes its part: the first part's graph runs on ONNX Runtime.
    session = ort.InferenceSession(named[0], providers=["CPUExecutionProvider"])
    feeds = {
        i.name: np.random.default_rng(0)
        .standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
        .astype(np.float32)
        for i in session.get_inputs()
    }
    outputs = session.run(None, feeds)
    assert outputs and all(np.isfinite(o).all() for o in outputs)


TYPED = """
from torch import nn


def lin() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 4))


def conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3))
"""


@pytest.mark.parametrize(
    ("model", "dtype", "shape", "precision", "expected"),
    [
        (
            "lin",
            "int64",
            [2, 8],
            "fp32",
            r"model 'lin': op 'linear' \(aten.linear.default\) "
            r"multiplies input 'input' \(int64\) with '0.weight' \(float32\); declare the input",
        ),
        (
            "conv",
            "float32",
            [1, 3, 8, 8],
            "bf16",
            r"conv/bf16 part 0: onnxruntime cannot build "
            r"this part on the CPU: .*Conv.*no bfloat16 kernel",
        ),
    ],
)
def test_type_errors_name_the_target_part_and_op_never_a_scratch_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    dtype: str,
    shape: list[int],
    precision: str,
    expected: str,
) -> None:
    import re

    (tmp_path / "typed.py").write_text(TYPED)
    recipe = tmp_path / "typed.toml"
    recipe.write_text(
        f'[recipe]\nname = "typed"\n[defaults]\nbackend = "onnxruntime"\n'
        f'precisions = ["{precision}"]\n[[model]]\nname = "{model}"\nsource = "typed.py:{model}"\n'
        f'weights = {{ init = "random", seed = 0 }}\n[[model.inputs]]\nname = "input"\n'
        f'shape = {shape}\ndtype = "{dtype}"\n'
    )
    assert main(["run", str(recipe)]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and re.search(expected, err[0]), err
    assert "/tmp/" not in err[0].split("part.onnx")[0] and "cache/tmp" not in err[0]


def test_the_python_api_works_any_number_of_times_in_one_process(
    recipes: Path, tmp_path: Path
) -> None:
    """In a fresh interpreter: build twice, plan, load, with Options from trtbuild itself."""
    code = (
        "import sys, trtbuild\n"
        "from trtbuild import Options\n"
        "r = sys.argv[1]\n"
        "first = trtbuild.build(r, Options(out=sys.argv[2]))\n"
        "second = trtbuild.build(r, trtbuild.Options(out=sys.argv[2]))\n"
        "plans = trtbuild.plan(r, Options(), precision='fp32')\n"
        "assert second.outputs == first.outputs and len(first.outputs) == 2, second.outputs\n"
        "model = trtbuild.load(next(p for p in second.outputs if p.name == 'fp32'))\n"
        "import torch\n"
        "print(not first.up_to_date, second.up_to_date, len(plans), model(torch.randn(2, 3, 32, 32)).shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(recipes / "tiny.toml"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "1", "torch.Size([2,", "10])"]


# Ctrl-C during one target's export while another's waited for room: the waiting one then
# started (a fresh process for its held one, which Ctrl-C had killed), was built, checked and
# published; a new user's GPT-2 run went on 11.5 s after Ctrl-C, then said "interrupted". The
# race needs two targets' timing; its mechanism is tested here, each half with real parts.
def test_once_the_run_is_stopped_no_job_starts_and_nothing_is_published(tmp_path: Path) -> None:
    from trtbuild.execution import process
    from trtbuild.execution.executor import run_job
    from trtbuild.execution.jobs import ProbeJob
    from trtbuild.orchestrate.build import Options, build

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        '[recipe]\nname = "tiny"\n[defaults]\nbackend = "onnxruntime"\nprecisions = ["fp32"]\n'
        '[[model]]\nname = "m"\nsource = "tiny.py:make"\nweights = { init = "random", seed = 0 }\n'
        '[[model.inputs]]\nname = "input"\nshape = [2, 8]\ndtype = "float32"\n'
    )
    (tmp_path / "tiny.py").write_text(
        "from torch import nn\n\n\ndef make() -> nn.Module:\n    return nn.Linear(8, 4)\n"
    )
    build(recipe)
    published = {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()}
    (tmp_path / "tiny.py").write_text((tmp_path / "tiny.py").read_text().replace("4)", "3)"))
    try:  # Ctrl-C once the part is built: its engine is cached, the target not published
        stop = Options(check=False, on_part=lambda target, part: process.stop_running())
        with pytest.raises(KeyboardInterrupt):
            build(recipe, stop)
    finally:
        process.accept_jobs()
    assert {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()} == published
    assert not list(Path("build/tiny/m").glob(".*new*"))  # no staging folder left
    try:
        process.stop_running()  # what the signal handler does (trtbuild.cli)
        with pytest.raises(process.Stopping):
            run_job(ProbeJob(0), tmp_path, None, None)
        with pytest.raises(KeyboardInterrupt):
            build(recipe)  # its graph job never starts
    finally:
        process.accept_jobs()
    assert {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()} == published
    build(recipe)  # the next run publishes, the part from the cache the stopped run filled
    assert {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()} != published
