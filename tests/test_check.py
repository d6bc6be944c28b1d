"""The built-in accuracy check (issue 22): real builds on ONNX Runtime, real processes and files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import SPLITTING, small_seed_net
from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store
from trtbuild.cli import main
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.explain import explain
from trtbuild.release.lockfile import lock_path, read_lock

MODELS = Path(__file__).resolve().parent / "models"
OVERFLOW = """
[recipe]
name = "over"
[defaults]
backend = "onnxruntime"
precisions = ["fp32", "fp16"]
[[model]]
name = "scaled"
source = "check_overflow.py:scaled"
weights = { init = "random", seed = 1 }
[[model.inputs]]
name = "x"
shape = { min = [1, 16], opt = [2, 16], max = [4, 16] }
"""


def _tiny(recipes: Path, extra: str = "", fp32_only: bool = False) -> Path:
    recipe = recipes / "tiny.toml"
    text = recipe.read_text() + extra
    if fp32_only:
        text = text.replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
    recipe.write_text(text)
    return recipe


def contents(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` (a published engine is a hard link of its blob, whose
    mtime the cache touches on use: content is what must not change)."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def test_tiny_passes_with_figures_everywhere(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _tiny(recipes)
    assert main(["run", str(recipe), "--report"]) == 0
    assert "PASSED" in capsys.readouterr().err
    for precision in ("fp32", "fp16"):
        record = json.loads(Path(f"build/tiny/resnet_tiny/{precision}/build.json").read_text())
        check = record["check"]
        assert check["passed"] and not check["cached"]
        [output] = check["outputs"]
        assert output["shape"] == {"x": [2, 3, 32, 32]}
        assert 0 <= output["rel_l2"] <= check["tolerances"][output["output"]]["rel_l2"]
        assert output["max_abs"] >= 0 and check["parts"][0]["passed"]
        assert [p["kind"] for p in check["processes"]] == ["check"]  # the export made the reference
    fp32, fp16 = (
        json.loads(Path(f"build/tiny/resnet_tiny/{p}/build.json").read_text())
        for p in ("fp32", "fp16")
    )
    # fp16 engines really differ from the fp32 reference (it is not computed in fp16 too)
    assert fp16["check"]["worst_rel_l2"] > 10 * fp32["check"]["worst_rel_l2"]
    lock = read_lock(lock_path(recipe))
    assert lock is not None
    for target in lock.targets:
        assert target.check is not None and target.check["passed"]
        assert target.check["worst_rel_l2"] < 1e-2
    provenance = json.loads(Path("build/tiny/provenance.json").read_text())
    text = json.dumps(provenance)
    assert '"resnet_tiny/fp16/check"' in text and '"worst_rel_l2"' in text
    report = Path("build/tiny/report.html").read_text()
    assert "<h3>Check</h3>" in report and "resnet_tiny/fp16: check passed" in report


def test_fp16_overflow_fails_naming_the_output_and_keeps_what_was_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(MODELS / "check_overflow.py", tmp_path / "check_overflow.py")
    recipe = tmp_path / "over.toml"
    recipe.write_text(OVERFLOW)
    assert main(["run", str(recipe), "--no-check"]) == 0
    fp16 = Path("build/over/scaled/fp16")
    before = contents(fp16)
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    output = json.loads(Path("build/over/scaled/fp32/engine.json").read_text())["outputs"][0]
    assert f"scaled/fp16: check failed: output '{output['name']}'" in err
    assert "non-finite" in err and "FAILED" in err
    assert contents(fp16) == before  # not published: the previous folder stays as it was
    # the lock and the provenance still describe what is published, not the failed engines
    locked = read_lock(lock_path(recipe))
    assert locked is not None
    (failed,) = [t for t in locked.targets if t.precision == "fp16"]
    assert failed.check and not failed.check["passed"]
    published = json.loads((fp16 / "engine.json").read_text())
    assert [p.sha256 for p in failed.parts] == [p["sha256"] for p in published["parts"]]
    subjects = json.loads(Path("build/over/provenance.json").read_text())["subject"]
    assert any(s["name"].startswith("scaled/fp16/") for s in subjects)
    assert explain(recipe) == ["changed: scaled/fp16: check failed"] + [
        line for line in explain(recipe) if not line.startswith("changed:")
    ]
    fp32 = json.loads(Path("build/over/scaled/fp32/build.json").read_text())["check"]
    assert fp32["passed"]  # the other target of the recipe still publishes
    assert sorted(o["shape"]["x"][0] for o in fp32["outputs"]) == [1, 2, 4]  # min, opt, max
    # a failed check is not "up to date": the next run says FAILED again (from the cache)
    assert main(["run", str(recipe)]) == 1
    assert "scaled/fp16: check failed" in capsys.readouterr().err


def _corrupt_part(store: Store, key: str, tmp: Path) -> None:
    """Rewrite one initializer of a part's cached engine and put it back under its action key:
    the store sees an authentic, intact entry."""
    record = store.get_action(key)
    assert record is not None
    tmp.mkdir()
    blobs = dict(record["blobs"])
    engine = tmp / "engine.onnx"
    shutil.copy(store.blob_path(blobs.pop("engine")), engine)
    for name, digest in blobs.items():  # the weights file beside it, by the name it refers to
        shutil.copy(store.blob_path(digest), tmp / name)
    model = onnx.load(str(engine))
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
    onnx.save(model, str(tmp / "altered.onnx"))
    record["blobs"]["engine"] = store.put_file(tmp / "altered.onnx")
    store.put_action(key, record, replace=True)


def test_an_altered_part_engine_fails_naming_the_part(recipes: Path, tmp_path: Path) -> None:
    recipe = small_seed_net(recipes)
    first = build(recipe, Options(memory_override=SPLITTING))
    [target] = first.targets
    assert len(target.parts) >= 2 and target.check is not None and target.check["passed"]
    _corrupt_part(Store(Path("cache").resolve()), target.parts[1].key, tmp_path / "alter")
    shutil.rmtree("build")
    again = build(recipe, Options(memory_override=SPLITTING))
    [target] = again.targets
    assert all(p.cached for p in target.parts)
    assert target.failed is not None and "first deviating part: part 1 " in target.failed
    assert target.check is not None and target.check["parts"][0]["passed"]  # part 0 is right
    assert not target.dir.exists()  # not published


def test_second_run_does_not_check_again_and_reuses_the_reference(recipes: Path) -> None:
    recipe = _tiny(recipes, fp32_only=True)
    first = build(recipe)
    assert first.targets[0].check is not None and not first.targets[0].check["cached"]
    shutil.rmtree("build")  # not up to date: the target is looked at again
    second = build(recipe)
    check = second.targets[0].check
    assert check is not None and check["cached"] and check["passed"]
    record = json.loads(Path("build/tiny/resnet_tiny/fp32/build.json").read_text())
    assert record["check"]["cached"]
    # other tolerances: checked again, on the reference the cache holds (no reference process)
    recipe.write_text(recipe.read_text() + "[model.check]\nrel_l2 = 1e-3\n")
    third = build(recipe)
    check = third.targets[0].check
    assert check is not None and not check["cached"] and check["passed"]
    assert [p["kind"] for p in check["processes"]] == ["check"]
    assert all(p.cached for p in third.targets[0].parts)
    assert check["tolerances"][check["outputs"][0]["output"]]["rel_l2"] == 1e-3


def test_no_check_and_check_disabled_skip_it_and_say_so(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unchecked build ends `BUILT`, never `PASSED` (the README's promise: `PASSED` only for
    engines that match their model): it did, and so did its no-op rerun."""
    recipe = _tiny(recipes, fp32_only=True)
    assert main(["run", str(recipe), "--no-check"]) == 0
    err = capsys.readouterr().err
    assert "resnet_tiny/fp32: engines not checked against the model (--no-check)" in err
    assert err.splitlines()[-1].startswith("BUILT (not checked) in "), err
    assert json.loads(Path("build/tiny/resnet_tiny/fp32/build.json").read_text())["check"] is None
    assert main(["run", str(recipe), "--no-check"]) == 0  # the no-op path
    assert capsys.readouterr().err.splitlines()[-1].startswith("BUILT (not checked) in ")
    recipe.write_text(recipe.read_text() + "[model.check]\nenabled = false\n")
    assert main(["run", str(recipe)]) == 0
    err = capsys.readouterr().err
    assert "not checked against the model (check.enabled = false in the recipe)" in err
    assert err.splitlines()[-1].startswith("BUILT (not checked) in "), err
    lock = read_lock(lock_path(recipe))
    assert lock is not None and lock.targets[0].check is None
    assert main(["run", str(recipe)]) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith("BUILT (not checked) in ")


def test_a_check_that_cannot_keep_the_budget_is_one_error_saying_what_to_do(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed network's activations (1x1024x224x224 float32, 205 MB each) are the reference's
    to hold: at 600 MiB no plan makes them fit; it is one line saying how to go on, not four
    re-plans ending in "kept crossing the budget"."""
    capsys.readouterr()
    assert main(["run", str(recipes / "seed_net.toml"), "--budget", "600MiB"]) == 1
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.startswith("trtbuild: error:")]
    assert len(err) == 1 and "also computes the accuracy check's reference" in err[0], err
    assert "--no-check" in err[0] and not Path("build/seed_net").exists()


def test_a_tolerance_for_an_output_the_model_lacks_is_one_error(
    recipes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `[model.check.outputs.nope]` was silently ignored and the build PASSED."""
    recipe = recipes / "tiny.toml"
    recipe.write_text(recipe.read_text() + "[model.check.outputs.nope]\nrel_l2 = 0.5\n")
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 1
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.startswith("trtbuild: error:")]
    assert len(err) == 1 and "tiny.toml" in err[0], err
    assert "field 'check.outputs.nope': the model has no output 'nope'" in err[0], err
    assert not Path("build/tiny").exists()


SDPA_RECIPE = """
[recipe]
name = "sdpa"
[defaults]
backend = "onnxruntime"
precisions = ["fp32"]
[[model]]
name = "attn"
source = "check_sdpa.py:masked_attention"
weights = { init = "random", seed = 0 }
[model.check]
data = "samples/*.npz"
[[model.inputs]]
name = "x"
shape = [1, 4, 16]
dtype = "float32"
[[model.inputs]]
name = "mask"
shape = [1, 4, 4]
dtype = "bool"
"""


@pytest.mark.parametrize("masked_row", [False, True])
def test_an_exporter_difference_on_the_users_samples_fails_the_check(
    tmp_path: Path, masked_row: bool
) -> None:
    """A public bug report's case: SDPA with a boolean mask in which one query row attends to
    nothing exports with other numerics. On the user's own sample with such a row the check
    fails naming the output; on a sample without one the same engine passes."""
    import numpy as np

    shutil.copy(MODELS / "check_sdpa.py", tmp_path / "check_sdpa.py")
    (tmp_path / "sdpa.toml").write_text(SDPA_RECIPE)
    (tmp_path / "samples").mkdir()
    mask = np.ones((1, 4, 4), bool)
    if masked_row:
        mask[0, 2, :] = False
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "samples" / "sample.npz", x=x, mask=mask)
    (target,) = build(tmp_path / "sdpa.toml").targets
    assert target.check is not None
    assert target.check["passed"] is not masked_row, target.check["message"]
    if masked_row:
        assert "output 'output'" in target.check["message"]
        assert not Path("build/sdpa/attn/fp32").exists()  # not published


def test_the_samples_a_check_reads_are_the_files_its_lock_records(tmp_path: Path) -> None:
    """`check.data` / `calibration.data` globs: the check read them without recursion (and took
    a matching folder for a sample), while the lock's [[glob]] record expands `**` recursively,
    so the lock could pin files the check never read, and miss none it did."""
    import numpy as np

    from trtbuild.check.data import data_files
    from trtbuild.release.inputs import glob_matches

    for name in ("samples/a.npz", "samples/day1/b.npz", "samples/day1/deep/c.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp_path / name, x=np.zeros(2, dtype=np.float32))
    for pattern in ("samples/**/*.npz", "samples/*"):
        read = [str(p.relative_to(tmp_path)) for p in data_files(pattern, tmp_path)]
        assert read == glob_matches(pattern, tmp_path), pattern
    assert len(data_files("samples/**/*.npz", tmp_path)) == 3
    assert [p.name for p in data_files("samples/*", tmp_path)] == ["a.npz"]  # not the folder


NEAR_ZERO = """
import torch
from torch import nn


class Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 64)
        self.norm = nn.LayerNorm(64, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.norm(self.proj(x))
        return {"features": h, "pooled": h.mean(-1)}  # a LayerNorm's mean: zero, up to rounding


def make() -> nn.Module:
    return Pooled()
"""


@pytest.mark.parametrize("atol", [None, "1e-6"])
def test_an_output_that_is_zero_up_to_rounding_passes_within_its_atol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], atol: str | None
) -> None:
    """A new user's model: an output whose true value is ~1e-9 FAILED at rel_l2 0.5 (noise over
    noise), and setting its `atol` did not help: rel_l2 held regardless. Now differences within
    `atol` pass, as in numpy.allclose and Polygraphy's comparator; without one the failure shows
    the reference's own size, which says why."""
    (tmp_path / "pooled.py").write_text(NEAR_ZERO)
    tolerance = f"[model.check.outputs.pooled]\natol = {atol}\n" if atol else ""
    (tmp_path / "pooled.toml").write_text(
        '[recipe]\nname = "pooled"\n[defaults]\nbackend = "onnxruntime"\nprecisions = ["fp32"]\n'
        '[[model]]\nname = "m"\nsource = "pooled.py:make"\nweights = { init = "random", seed = 0 }\n'
        f'outputs = ["features", "pooled"]\n{tolerance}'
        '[[model.inputs]]\nname = "x"\nshape = [8, 16]\n'
    )
    code = main(["run", str(tmp_path / "pooled.toml")])
    err = capsys.readouterr().err
    if atol is None:
        assert code == 1, err
        assert "check failed: output 'pooled' rel_l2" in err and "max |ref| " in err, err
    else:
        assert code == 0 and err.splitlines()[-1].startswith("PASSED"), err


def test_comparing_a_large_output_holds_less_than_one_more_copy_of_it() -> None:
    """A new user's GPT-2 (vocab 32000) at fp16: its check process crossed a 700 MiB budget on
    the largest sample, whose logits (2 x 64 x 32000) compare() copied to float64 six times over
    (masked copies, differences, bounds: ~200 MB for a 16 MB tensor)."""
    import tracemalloc

    import numpy as np

    from trtbuild.check.compare import compare

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 64, 32000), dtype=np.float32)
    engine = ref + np.float32(1e-3) * rng.standard_normal(ref.shape, dtype=np.float32)
    ref[0, 0, :4] = np.inf  # non-finite reference values are left out, as before
    tracemalloc.start()
    figures = compare(engine, ref, {"rel_l2": 1e-2, "atol": 0.1, "rtol": 0.0})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < ref.nbytes, peak / 2**20  # less than one more copy of it (it was 12 copies)
    finite = np.isfinite(ref)
    diff = engine.astype(np.float64)[finite] - ref.astype(np.float64)[finite]
    want = np.linalg.norm(diff) / np.linalg.norm(ref.astype(np.float64)[finite])
    assert figures["passed"] and abs(figures["rel_l2"] - want) < 1e-12 * want, figures
    assert figures["max_abs"] == float(np.abs(diff).max()) and figures["outside"] == 0
    assert figures["ref_max_abs"] == float(np.abs(ref[finite]).max())
