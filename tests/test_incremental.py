"""Incremental, reproducible and crash-safe builds, with real processes and real files."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trtbuild.cache import upkeep
from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store
from trtbuild.cli import main
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.build import Options, build

TRTBUILD = [sys.executable, "-m", "trtbuild"]


def keys(result: object) -> dict[str, bool]:
    """action key -> cached, over every part of a build."""
    return {p.key: p.cached for t in result.targets for p in t.parts}  # type: ignore[attr-defined]


def test_one_changed_weight_rebuilds_only_its_part(recipes: Path) -> None:
    """The seed network's ops at a few KB, split by SPLITTING, from a checkpoint: one tensor
    changed rebuilds only the part that holds it."""
    import importlib.util

    from safetensors.torch import save_file

    from tests.conftest import SPLITTING, small_seed_net

    recipe = small_seed_net(recipes)
    spec = importlib.util.spec_from_file_location("seed_net", recipes / "models" / "seed_net.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in module.seed_net(16, 64, 32).state_dict().items()}
    save_file(state, str(recipes / "seed.safetensors"))
    recipe.write_text(
        recipe.read_text().replace(
            'weights = { init = "random", seed = 0 }', 'weights = "seed.safetensors"'
        )
    )
    opts = Options(memory_override=SPLITTING, precisions=["fp32"])
    (target,) = build(recipe, opts).targets
    assert len(target.parts) >= 2
    holder = next(
        p.index for p, part in zip(target.parts, target.plan.parts) if "fc1.weight" in part.weights
    )
    state["fc1.weight"] = state["fc1.weight"] + 1.0
    save_file(state, str(recipes / "seed.safetensors"))
    (again,) = build(recipe, opts).targets
    assert [p.cached for p in again.parts] == [p.index != holder for p in again.parts]


def test_budget_change_replans_and_reuses_unchanged_parts(recipes: Path) -> None:
    from tests.conftest import SPLITTING, small_seed_net

    recipe = small_seed_net(recipes)  # split at 1 GiB by SPLITTING, whole at 16 GiB

    def at(budget: int | None = None) -> dict[str, bool]:
        return keys(
            build(recipe, Options(memory_override=SPLITTING, precisions=["fp32"], budget=budget))
        )

    split = at()
    assert len(split) >= 2 and not any(split.values())
    whole = at(16 << 30)
    assert len(whole) == 1 and not any(whole.values())
    assert at() == dict.fromkeys(split, True)


def test_changing_a_precision_rebuilds_only_that_target(recipes: Path) -> None:
    recipe = recipes / "tiny.toml"
    text = recipe.read_text()
    recipe.write_text(text.replace('["fp32", "fp16"]', '["fp32"]'))
    (first,) = build(recipe).targets
    seeded = 'weights = { init = "random", seed = 3 }'
    recipe.write_text(text.replace(seeded, seeded + '\nbudget = { host_memory = "3GiB" }'))
    result = build(recipe)
    cached = {t.precision: [p.cached for p in t.parts] for t in result.targets}
    assert cached == {"fp32": [True], "fp16": [False]}
    # Neither does the model's own budget shape its graph: its graph job is not run again, nor
    # its base re-measured for the plan.
    assert result.targets[0].graph_job == first.graph_job


def test_backend_that_cannot_build_a_precision_says_so(recipes: Path) -> None:
    recipe = recipes / "tiny.toml"
    recipe.write_text(recipe.read_text().replace('["fp32", "fp16"]', '["bf16"]'))
    with pytest.raises(
        TrtbuildError, match=r"onnxruntime cannot build this part on the CPU: .*bfloat16"
    ):
        build(recipe)


def test_explain_and_verbose_say_why(recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = recipes / "tiny.toml"
    build(recipe)
    capsys.readouterr()
    assert main(["explain", str(recipe)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resnet_tiny/fp32 part 0: up to date",
        "resnet_tiny/fp16 part 0: up to date",
    ]
    recipe.write_text(recipe.read_text().replace("seed = 3", "seed = 4"))
    assert main(["explain", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "resnet_tiny/fp32 part 0: would rebuild: weights changed (" in out
    assert main(["run", str(recipe), "-v"]) == 0
    err = capsys.readouterr().err
    assert "resnet_tiny/fp16 part 0: building: weights changed" in err
    # -v shows each process's measured peak against the memory model's prediction
    assert re.search(r"export: peak \d+ MiB, predicted \d+ MiB \(peak [+-]\d+%\)", err), err
    assert re.search(r"build: peak \d+ MiB, predicted \d+ MiB \(peak [+-]\d+%\)", err), err


def test_locked_and_release(recipes: Path) -> None:
    recipe = recipes / "tiny.toml"
    build(recipe)
    assert build(recipe, Options(locked=True)).up_to_date
    recipe.write_text(recipe.read_text().replace("seed = 3", "seed = 5"))
    with pytest.raises(
        TrtbuildError, match=r"tiny\.lock: --locked, but the inputs no longer match"
    ):
        build(recipe, Options(locked=True))
    auto = recipe.read_text().replace('backend = "onnxruntime"', 'backend = "auto"')
    recipe.write_text(auto)
    with pytest.raises(
        TrtbuildError, match=r"--release needs an explicit backend, got backend = \"auto\""
    ):
        build(recipe, Options(release=True))
    result = build(recipe, Options(release=True, backend="onnxruntime"))
    statement = json.loads(Path("build/tiny/provenance.json").read_text())
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["release"] is True
    assert len(statement["subject"]) == sum(
        1 + len(p.sidecars) for t in result.targets for p in t.parts
    )


@pytest.mark.parametrize(
    ("recipe_name", "model"),
    [("tiny", "resnet_tiny"), pytest.param("resnet", "resnet50", marks=pytest.mark.slow)],
)
def test_verify_a_fresh_build_and_an_altered_engine(
    recipes: Path, capsys: pytest.CaptureFixture[str], recipe_name: str, model: str
) -> None:
    """Acceptance: verify passes on a fresh build, fails naming the altered artifact."""
    assert main(["run", str(recipes / f"{recipe_name}.toml"), "--backend", "onnxruntime"]) == 0
    provenance = Path(f"build/{recipe_name}/provenance.json")
    subjects = len(json.loads(provenance.read_text())["subject"])
    capsys.readouterr()
    assert main(["verify", str(provenance)]) == 0
    out = capsys.readouterr().out
    assert out.count("matches (published and rebuilt)") == subjects >= 2
    engine = Path(f"build/{recipe_name}/{model}/fp16/part0.ort.onnx")
    engine.chmod(0o644)  # published engines are read-only
    engine.write_bytes(engine.read_bytes() + b"\0")
    assert main(["verify", str(provenance)]) == 1
    out = capsys.readouterr().out
    assert f"{model}/fp16/part0.ort.onnx: MISMATCH: published file was altered" in out
    assert f"{model}/fp32/part0.ort.onnx: matches (published and rebuilt)" in out
    # An input changed since: the rebuild differs, and verify says which input (it did not)
    recipe = recipes / f"{recipe_name}.toml"
    recipe.write_text(
        recipe.read_text().replace("seed = 3", "seed = 4").replace("seed = 0", "seed = 1")
    )
    assert main(["verify", str(provenance)]) == 1
    err = capsys.readouterr().err
    assert f"input {recipe_name}.toml changed since the build (" in err, err


def _cache_is_sound(cache: Path) -> None:
    store = Store(cache)
    assert upkeep.verify_all(store) == []  # every blob matches its digest, every action its key
    for action in (cache / "ac").glob("*.json"):
        entry = store.get_action(action.stem)
        assert entry is not None
        assert all(store.verified_blob(d) for d in entry.get("blobs", {}).values())


def _part_actions(cache: Path) -> list[Path]:
    return [p for p in (cache / "ac").glob("*.json") if not p.name.startswith("graph-")]


def test_kill_9_mid_build_then_rebuild_only_what_is_missing(recipes: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [*TRTBUILD, "run", str(recipes / "tiny.toml"), "--json", "-j", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not _part_actions(cache):  # the first target's part is done
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the second target's export
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not Path("build/tiny/provenance.json").exists()
    assert not list(Path("build").rglob("engine.json")) or all(
        json.loads(p.read_text())["parts"] for p in Path("build").rglob("engine.json")
    )
    _cache_is_sound(cache)
    done_before = {p.name for p in _part_actions(cache)}
    again = subprocess.run(
        [*TRTBUILD, "run", str(recipes / "tiny.toml"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    parts = [p for t in json.loads(again.stdout)["targets"] for p in t["parts"]]
    assert [p["cached"] for p in parts] == [f"{p['key']}.json" in done_before for p in parts]
    assert any(p["cached"] for p in parts) and not all(p["cached"] for p in parts)


def test_two_concurrent_runs_share_a_cache_and_build_each_action_once(recipes: Path) -> None:
    runs = []
    for name in ("a", "b"):
        folder = recipes.parent / name
        folder.mkdir()
        runs.append(
            subprocess.Popen(
                [
                    *TRTBUILD,
                    "run",
                    str(recipes / "tiny.toml"),
                    "--json",
                    "--out",
                    str(folder),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [json.loads(p.communicate()[0]) for p in runs]
    assert [p.returncode for p in runs] == [0, 0]
    built: dict[str, int] = {}
    for out in outputs:
        for target in out["targets"]:
            for part in target["parts"]:
                built[part["key"]] = built.get(part["key"], 0) + (not part["cached"])
    assert len(built) == 2 and set(built.values()) == {1}


def test_corrupt_blob_is_detected_removed_and_rebuilt(
    recipes: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = build(recipes / "tiny.toml")
    engine = first.targets[0].parts[0].sha256
    blob = Path("cache/cas") / engine
    blob.chmod(0o644)  # blobs are read-only
    blob.write_bytes(b"garbage" + blob.read_bytes())
    result = build(recipes / "tiny.toml", Options(out=Path("other")))
    assert "corrupt" in caplog.text
    part = result.targets[0].parts[0]
    assert not part.cached and part.sha256 == engine  # rebuilt, bit for bit
    assert sha256_file(Path("other/tiny/resnet_tiny/fp32/part0.ort.onnx")) == engine


def test_full_disk_is_a_clear_error_and_loses_nothing(recipes: Path, tmp_path: Path) -> None:
    build(recipes / "tiny.toml")
    before = {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()}
    recipe = recipes / "tiny.toml"
    recipe.write_text(recipe.read_text().replace("seed = 3", "seed = 9"))

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))

    proc = subprocess.run(
        [*TRTBUILD, "run", str(recipe)],
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("trtbuild: error:")]
    assert len(errors) == 1 and "no space left on device (File too large)" in errors[0]
    assert {p: p.read_bytes() for p in Path("build").rglob("*") if p.is_file()} == before
    _cache_is_sound(tmp_path / "cache")


def test_verify_rules_for_engines_that_are_not_bit_reproducible() -> None:
    """compare() decides from the rebuilt layer JSON whether a retimed engine still verifies."""
    from trtbuild.orchestrate.verify import compare

    engine, layers = "m/fp16/part0.engine", "m/fp16/0123.engine.layers.json"
    subjects = {engine: "a", layers: "L"}
    published = {engine: "a", layers: "L"}
    (same_layers, retimed) = compare(  # sorted by name: the layer JSON first
        subjects, published, {engine: "b", layers: "L"}, {engine: layers}
    )
    assert retimed.ok and retimed.tactics_match and "tactics match" in retimed.describe()
    assert same_layers.ok
    (changed_layers, other_tactics) = compare(
        subjects, published, {engine: "b", layers: "M"}, {engine: layers}
    )
    assert not other_tactics.ok and not other_tactics.tactics_match and not changed_layers.ok
    assert "rebuild differs" in other_tactics.describe()
    (no_layers,) = compare({engine: "a"}, {engine: "a"}, {engine: "b"}, {})
    assert not no_layers.ok  # an engine without a layer JSON must match bit for bit
    (altered,) = compare({engine: "a"}, {engine: "x"}, {engine: "a"}, {})
    assert not altered.ok and "published file was altered" in altered.describe()
    (timing,) = compare(
        {"m/fp16/k.engine.timing.cache": "a"},
        {"m/fp16/k.engine.timing.cache": "a"},
        {"m/fp16/k.engine.timing.cache": "b"},
        {},
    )
    assert timing.ok  # an updated timing cache is informational
    (missing,) = compare({"m/fp16/part0.ort.onnx": "a"}, {"m/fp16/part0.ort.onnx": None}, {}, {})
    assert not missing.ok and "published file is missing" in missing.describe()


def test_killing_trtbuild_kills_its_worker(recipes: Path) -> None:
    """kill -9 of the orchestrator: the worker it watched must not run on unwatched."""
    import psutil

    proc = subprocess.Popen(
        [*TRTBUILD, "run", str(recipes / "tiny.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, workers = time.time() + 60, []
    while time.time() < deadline and not workers:
        workers = psutil.Process(proc.pid).children()
        time.sleep(0.05)
    assert workers, "no worker process started"
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived trtbuild: {[p.pid for p in alive]}"
    assert main(["cache", "gc", "--max-size", "100GiB"]) == 0
    assert not [p for p in Path("cache/tmp").iterdir() if not p.name.startswith(".")]


def test_run_from_the_recipes_folder_with_a_relative_path(recipes: Path) -> None:
    """`cd recipes && trtbuild run tiny.toml`: torch.classes has a relative __file__."""
    recipe = recipes / "tiny.toml"
    recipe.write_text(recipe.read_text().replace('["fp32", "fp16"]', '["fp32"]'))
    proc = subprocess.run(
        [*TRTBUILD, "run", "tiny.toml"], cwd=recipes, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (recipes / "build" / "tiny" / "resnet_tiny" / "fp32" / "engine.json").is_file()
    again = subprocess.run(
        [*TRTBUILD, "run", "tiny.toml"], cwd=recipes, capture_output=True, text=True, check=True
    )
    assert "up to date" in again.stderr


def test_output_folders_stay_inside_the_output_root(tmp_path: Path) -> None:
    from trtbuild.orchestrate.build import output_dir

    assert output_dir(tmp_path, "r", "m", "fp32") == tmp_path.resolve() / "r" / "m" / "fp32"
    for names in ((".", "m", "fp32"), ("r", "..", "fp32"), ("..", "..", ".."), ("r", "", "fp32")):
        with pytest.raises(TrtbuildError, match="refusing to write outside the output root"):
            output_dir(tmp_path / "out", *names)


def test_cache_commands(recipes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build(recipes / "tiny.toml")
    capsys.readouterr()
    assert main(["cache", "stats"]) == 0
    assert "actions in" in capsys.readouterr().out
    assert main(["cache", "verify"]) == 0
    assert "every blob matches" in capsys.readouterr().out
    lock = recipes / "tiny.lock"
    assert main(["cache", "gc", "--max-size", "1", "--keep", str(lock)]) == 0
    assert build(recipes / "tiny.toml", Options(out=Path("again"))).targets[0].parts[0].cached
    # What published files or the lock still name cannot be freed: gc keeps it
    assert main(["cache", "gc", "--max-size", "1"]) == 0
    assert "evicted 0 blob(s), freed 0 bytes" in capsys.readouterr().out
    assert build(recipes / "tiny.toml", Options(out=Path("third"))).targets[0].parts[0].cached
    for folder in ("build", "again", "third"):
        shutil.rmtree(folder)
    assert main(["cache", "gc", "--max-size", "1", "--ignore-locks"]) == 0
    assert "evicted" in capsys.readouterr().out
    assert not build(recipes / "tiny.toml", Options(out=Path("fourth"))).targets[0].parts[0].cached
