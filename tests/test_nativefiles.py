"""Files read by native code (Rust, C) and declared `data` files are inputs like Python reads."""

from __future__ import annotations

import mmap
import shutil
import sys
from pathlib import Path

import pytest

from trtbuild.model.nativefiles import held_files, model_files

MODELS = Path(__file__).resolve().parent / "models"


def test_held_files_sees_mmaps_and_open_files_and_keeps_only_data(tmp_path: Path) -> None:
    mapped, opened = tmp_path / "mapped.bin", tmp_path / "opened.txt"
    mapped.write_bytes(b"x" * 4096)
    opened.write_text("y")
    with mapped.open("rb") as handle:
        view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        with opened.open() as _:
            held = held_files()
    finally:
        view.close()
    assert {str(mapped), str(opened)} <= held
    assert any(f.endswith(".so") or ".so." in f for f in held)  # libraries are seen too...
    kept = model_files(held, [tmp_path / "excluded"])
    assert str(mapped) in kept and str(opened) in kept
    assert sys.executable not in kept and not any(
        ".so" in Path(f).name for f in kept
    )  # ...not kept
    assert model_files(held, [tmp_path]) == [f for f in kept if not f.startswith(str(tmp_path))]


TABLE_RECIPE = """[recipe]
name = "table"
[defaults]
backend = "onnxruntime"
[[model]]
name = "m"
source = "inputs_table.py:table_model"
weights = {{ init = "random", seed = 0 }}
{data}[[model.inputs]]
name = "x"
shape = [2, 4]
"""


def _save_table(path: Path, value: float) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"table": torch.full((4,), value)}, str(path))


def _table_project(root: Path, data: str = "") -> Path:
    root.mkdir()
    shutil.copy(MODELS / "inputs_table.py", root / "inputs_table.py")
    _save_table(root / "inputs_table.safetensors", 1.0)
    (root / "table.toml").write_text(TABLE_RECIPE.format(data=data))
    return root / "table.toml"


def test_a_table_read_by_rust_code_is_an_input(tmp_path: Path) -> None:
    """Before: safetensors' Rust reader was invisible; a changed table was "up to date"."""
    import torch

    import trtbuild
    from trtbuild.orchestrate.build import build
    from trtbuild.orchestrate.explain import explain
    from trtbuild.release.lockfile import lock_path, read_lock

    recipe = _table_project(tmp_path / "proj")
    build(recipe)
    lock = read_lock(lock_path(recipe))
    assert lock is not None and "inputs_table.safetensors" in lock.inputs.files
    x = torch.randn(2, 4)
    before = trtbuild.load(Path("build/table/m/fp32"))(x)
    assert build(recipe).up_to_date

    _save_table(recipe.parent / "inputs_table.safetensors", 3.0)
    assert "changed: inputs_table.safetensors changed" in explain(recipe)
    assert not build(recipe).up_to_date
    after = trtbuild.load(Path("build/table/m/fp32"))(x)
    assert torch.allclose(after, 3 * before, rtol=1e-5, atol=1e-6)


def test_declared_data_files_are_inputs(tmp_path: Path) -> None:
    from trtbuild.orchestrate.build import build
    from trtbuild.orchestrate.explain import explain
    from trtbuild.release.lockfile import lock_path, read_lock

    recipe = _table_project(tmp_path / "proj", 'data = ["tables/*.txt"]\n')
    (recipe.parent / "tables").mkdir()
    (recipe.parent / "tables" / "vocab.txt").write_text("a b c\n")
    build(recipe)
    lock = read_lock(lock_path(recipe))
    assert lock is not None and "tables/vocab.txt" in lock.inputs.files
    assert build(recipe).up_to_date

    (recipe.parent / "tables" / "vocab.txt").write_text("a b c d\n")
    assert "changed: tables/vocab.txt changed" in explain(recipe)
    assert not build(recipe).up_to_date
    assert build(recipe).up_to_date


def test_a_data_glob_that_matches_nothing_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trtbuild.cli import main

    recipe = _table_project(tmp_path / "proj", 'data = ["tables/*.txt"]\n')
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    (error,) = [line for line in err.splitlines() if line.startswith("trtbuild: error:")]
    assert "table.toml:9: field 'data' of model 'm'" in error and "'tables/*.txt'" in error


def test_a_file_a_c_reader_held_while_the_job_ran_is_an_input(tmp_path: Path) -> None:
    """Read with libc and closed before the factory returns: the executor's samples of the graph
    job's open files see it (the job's own last look cannot)."""
    import torch

    import trtbuild
    from trtbuild.orchestrate.build import build
    from trtbuild.orchestrate.explain import explain

    root = tmp_path / "proj"
    root.mkdir()
    shutil.copy(MODELS / "inputs_creader.py", root / "inputs_creader.py")
    (root / "inputs_creader.txt").write_text("1.0")
    text = TABLE_RECIPE.format(data="").replace(
        "inputs_table.py:table_model", "inputs_creader.py:offset_model"
    )
    (root / "c.toml").write_text(text)
    build(root / "c.toml")
    x = torch.randn(2, 4)
    before = trtbuild.load(Path("build/table/m/fp32"))(x)

    (root / "inputs_creader.txt").write_text("5.0")
    assert "changed: inputs_creader.txt changed" in explain(root / "c.toml")
    assert not build(root / "c.toml").up_to_date
    after = trtbuild.load(Path("build/table/m/fp32"))(x)
    assert torch.allclose(after, before + 4.0, atol=1e-5)
