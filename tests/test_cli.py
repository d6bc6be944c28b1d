"""The CLI in-process (main([...])) and as a real subprocess; errors leave outputs untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, RECIPES, snapshot
from trtbuild.cli import main

TINY_FP32 = ['precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]']


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.toml (fp32 only) built once per module, in a folder of its own."""
    root = tmp_path_factory.mktemp("built")
    shutil.copytree(
        RECIPES, root / "recipes", ignore=shutil.ignore_patterns("*.lock", "__pycache__")
    )
    shutil.copy(DATA / "tiny.toml", root / "recipes" / "tiny.toml")
    recipe = root / "recipes" / "tiny.toml"
    recipe.write_text(recipe.read_text().replace(*TINY_FP32))
    (root / "recipes" / "models" / "broken.py").write_text(
        "def broken(**kwargs):\n    raise RuntimeError('boom: no such layer')\n"
    )
    import torch

    torch.save({"fn": os.getcwd}, root / "recipes" / "evil.pt")  # a pickle weights_only refuses
    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(["run", str(recipe), "--cache", str(root / "cache")]) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def built(template: Path, tmp_path: Path) -> Path:
    """A private copy of the built template (recipes, build, cache); returns the recipe."""
    for name in ("recipes", "build", "cache"):
        shutil.copytree(template / name, tmp_path / name)
    return tmp_path / "recipes" / "tiny.toml"


BAD = [
    ("toml syntax", 'name = "tiny"', 'name = "tiny', r"tiny\.toml: TOML syntax error: .*line 3"),
    (
        "unknown key",
        'dtype = "float32"',
        'dtype = "float32"\nlayout = "nchw"',
        r"tiny\.toml:20: unknown key 'model\[0\]\.inputs\[0\]\.layout'",
    ),
    (
        "wrong type",
        "kwargs = { num_classes = 10, width = 8 }",
        "kwargs = 3",
        r"tiny\.toml:14: field 'model\[0\]\.kwargs': Input should be a valid dictionary",
    ),
    (
        "bad size",
        'host_memory = "2GiB"',
        'host_memory = "2 gigs"',
        r"tiny\.toml:9: field 'defaults\.budget\.host_memory': expected a size like",
    ),
    (
        "missing model file",
        "models/resnet.py:resnet_tiny",
        "models/nope.py:resnet_tiny",
        r"tiny\.toml:13: field 'model\[0\]\.source': expected a Python file, but .*nope\.py does not exist",
    ),
    (
        "factory raises",
        "models/resnet.py:resnet_tiny",
        "models/broken.py:broken",
        r"tiny\.toml:13: model 'resnet_tiny': factory models/broken\.py:broken raised RuntimeError: boom",
    ),
    (
        "negative dim",
        "shape = [2, 3, 32, 32]",
        "shape = [2, -3, 32, 32]",
        r"tiny\.toml:18: field 'model\[0\]\.inputs\[0\]\.shape\[1\]': expected dimensions >= 1, got -3",
    ),
    (
        "unknown precision",
        'precisions = ["fp32"]',
        'precisions = ["int3"]',
        r"tiny\.toml:7: field 'defaults\.precisions\[0\]': Input should be 'fp32', 'fp16', 'bf16', "
        r"'int8', 'int4' or 'fp8'",
    ),
    (
        "weights missing",
        'weights = { init = "random", seed = 3 }',
        'weights = "w/resnet.safetensors"',
        r"tiny\.toml:15: field 'model\[0\]\.weights': expected a \.safetensors or \.pt file, or a model folder, but .*resnet\.safetensors does not exist",
    ),
    (
        "float size",
        'host_memory = "2GiB"',
        "host_memory = 1.5",
        r"tiny\.toml:9: field 'defaults\.budget\.host_memory': expected a size like .*, got 1\.5$",
    ),
    (
        "dots as recipe name",
        'name = "tiny"',
        'name = ".."',
        r"tiny\.toml:3: field 'recipe\.name': expected a name that is not made of dots only, got '\.\.'",
    ),
    (
        "dots as model name",
        'name = "resnet_tiny"',
        'name = "."',
        r"tiny\.toml:12: field 'model\[0\]\.name': expected a name that is not made of dots only",
    ),
    (
        "rejected pickle",
        'weights = { init = "random", seed = 3 }',
        'weights = "evil.pt"',
        r"evil\.pt: field 'weights': expected a state dict of tensors that torch\.load\(weights_only=True\) accepts, but it failed",
    ),
]


def test_recipe_that_is_not_utf8(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(Path("build"))
    built.write_bytes(built.read_bytes().replace(b"# A few-KB", b"# A f\xe9w-KB"))
    assert main(["run", str(built)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("trtbuild: error:")]
    assert errors == [f"trtbuild: error: {built}:1: expected UTF-8 text (TOML), got byte 0xe9"]
    assert snapshot(Path("build")) == before


@pytest.mark.parametrize(("case", "old", "new", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_one_line_exit_1_output_untouched(
    built: Path, capsys: pytest.CaptureFixture[str], case: str, old: str, new: str, expected: str
) -> None:
    import re

    before = snapshot(Path("build"))
    lock_before = (built.with_suffix(".lock")).read_bytes()
    capsys.readouterr()
    text = built.read_text()
    assert old in text, case
    built.write_text(text.replace(old, new, 1))
    assert main(["run", str(built)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("trtbuild: error:")]
    assert len(errors) == 1, err
    assert re.search(expected, errors[0]), errors[0]
    assert "Traceback" not in err
    assert snapshot(Path("build")) == before
    assert built.with_suffix(".lock").read_bytes() == lock_before


def test_json_output_and_noop(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["run", str(built), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["up_to_date"] is True and data["notes"] == ["up to date"]
    assert [(t["model"], t["precision"]) for t in data["targets"]] == [("resnet_tiny", "fp32")]
    built.write_text(
        built.read_text().replace('precisions = ["fp32"]', 'precisions = ["fp32", "fp16"]')
    )
    assert main(["run", str(built), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["up_to_date"] is False
    parts = {t["precision"]: t["parts"] for t in data["targets"]}
    assert [p["cached"] for p in parts["fp32"]] == [True]
    assert [p["cached"] for p in parts["fp16"]] == [False]
    for part in parts["fp16"]:
        assert set(part) >= {"key", "cached", "peak_rss_bytes", "seconds", "sha256"}
        assert part["peak_rss_bytes"] > 0


def test_budget_flag_errors(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(built), "--budget", "lots"]) == 1
    assert "--budget: expected a size" in capsys.readouterr().err


def test_subprocess_table_and_passed_line(built: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trtbuild", "run", str(built), "--backend", "onnxruntime"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("PASSED in ")
    # The closing table fits an 80-column terminal: one line per target, nothing wrapped.
    lines = proc.stderr.splitlines()
    assert max(len(line) for line in lines) <= 80
    (row,) = [line for line in lines if "resnet_tiny/fp32 " in line and "onnxruntime" in line]
    assert row.split("│")[6].strip() == "2048", row  # the budget, in MiB


def test_version_and_bare_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("trtbuild 0.1.0 (python ")
    assert "torch 2." in out and "onnxruntime 1." in out and "tensorrt " in out
    assert main([]) == 0  # `trtbuild` alone: help with examples, not an error
    out = capsys.readouterr().out
    assert "usage: trtbuild" in out and "trtbuild run recipes/resnet.toml" in out


def test_subprocess_user_error_exit_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trtbuild", "run", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "recipe file not found" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("FAILED in ")


def test_noop_imports_nothing_heavy(built: Path) -> None:
    """The no-op path checks every discovered input, and still imports no torch or onnx."""
    code = (
        "import sys; from trtbuild.cli import main; code = main(['run', sys.argv[1]]); "
        "heavy = {'torch', 'onnx', 'onnxruntime', 'onnxscript', 'pydantic', 'networkx', 'rich'}; "
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(built)], capture_output=True, text=True, check=True
    )
    assert "up to date" in proc.stderr
    assert proc.stdout.split() == ["0", "[]"]
