"""`trtbuild deploy --format triton`: configs parsed with Triton's own schema (tritonclient's
model_config_pb2), and the ensemble walked step by step with the part engines (ONNX Runtime) as
Triton would, against trtbuild.load()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import trtbuild
from trtbuild.cache.layout import default_cache_dir
from trtbuild.cache.store import Store
from trtbuild.deploy import triton
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.load import load_recipe

from .conftest import SPLITTING, small_seed_net

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="Triton's config schema comes with tritonclient[grpc]: pip install -e '.[dev]'",
)
text_format = pytest.importorskip("google.protobuf.text_format")
ort = pytest.importorskip("onnxruntime")

NUMPY = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_INT64": np.int64,
    "TYPE_INT32": np.int32,
    "TYPE_BOOL": np.bool_,
}


def config(repo: Path, name: str) -> Any:
    """config.pbtxt parsed into Triton's ModelConfig: any field or enum it lacks fails here."""
    text = (repo / name / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def check(tensor: Any, value: np.ndarray, batch: int) -> None:
    """A value as the config declares it: data type, and dims (batch first when batching)."""
    kind = model_config_pb2.DataType.Name(tensor.data_type)
    assert value.dtype == NUMPY[kind], (tensor.name, value.dtype, kind)
    dims = ([-1] if batch else []) + list(tensor.dims)
    assert len(value.shape) == len(dims), (tensor.name, value.shape, dims)
    assert all(d in (-1, v) for d, v in zip(dims, value.shape)), (tensor.name, value.shape, dims)


def run_model(repo: Path, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One non-ensemble model, as Triton's onnxruntime backend loads it from its version folder."""
    cfg = config(repo, name)
    assert cfg.platform == "onnxruntime_onnx"
    assert [g.kind for g in cfg.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    for tensor in cfg.input:
        check(tensor, feeds[tensor.name], cfg.max_batch_size)
    options = ort.SessionOptions()
    for library in cfg.model_operations.op_library_filename:  # as Triton's ORT backend loads them
        options.register_custom_ops_library(library)
    session = ort.InferenceSession(
        str(repo / name / "1" / cfg.default_model_filename),
        options,
        providers=["CPUExecutionProvider"],
    )
    outputs = dict(
        zip([o.name for o in cfg.output], session.run([o.name for o in cfg.output], feeds))
    )
    for tensor in cfg.output:
        check(tensor, outputs[tensor.name], cfg.max_batch_size)
    return outputs


def walk(repo: Path, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The ensemble's steps in order, each step's input_map/output_map wiring the tensors."""
    cfg = config(repo, name)
    if cfg.platform != "ensemble":
        outputs = run_model(repo, name, feeds)
        return [outputs[o.name] for o in cfg.output]
    values = dict(feeds)
    for step in cfg.ensemble_scheduling.step:
        step_feeds = {key: values[tensor] for key, tensor in step.input_map.items()}
        made = run_model(repo, step.model_name, step_feeds)
        assert set(made) == set(step.output_map)
        values.update({tensor: made[key] for key, tensor in step.output_map.items()})
    for tensor in cfg.output:
        check(tensor, values[tensor.name], cfg.max_batch_size)
    return [values[o.name] for o in cfg.output]


def deploy(recipe: Path, out: Path, instances: int = 1) -> list[triton.TritonModel]:
    store = Store(default_cache_dir().resolve())
    return triton.deploy(load_recipe(recipe), store, out, instances)


def rel_error(a: np.ndarray, b: torch.Tensor) -> float:
    ref = b.numpy().astype(np.float64)
    return float(np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref))


def test_partitioned_target_is_an_ensemble_one_part_a_plain_model(
    recipes: Path, tmp_path: Path
) -> None:
    recipe = small_seed_net(recipes)
    (target,) = build(recipe, Options(memory_override=SPLITTING)).targets
    assert len(target.parts) >= 2
    repo = tmp_path / "repo"
    models = deploy(recipe, repo, instances=2)
    names = [m.name for m in models]
    parts = [f"seed_net_fp32_part{i}" for i in range(len(target.parts))]
    assert names == [*parts, "seed_net_fp32"]
    assert sorted(p.name for p in repo.iterdir()) == sorted(names)
    ensemble = config(repo, "seed_net_fp32")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == parts
    assert list(ensemble.input[0].dims) == [1, 16, 32, 32]  # no batching: dims include dim 0
    for part in parts:
        assert [g.count for g in config(repo, part).instance_group] == [2]
        assert (repo / part / "1" / "model.onnx").is_file()
    assert (repo / "seed_net_fp32" / "1").is_dir()  # Triton wants a version folder, even empty

    x = torch.randn(1, 16, 32, 32)
    (out,) = walk(repo, "seed_net_fp32", {"x": x.numpy()})
    assert rel_error(out, trtbuild.load(target.dir)(x)) < 1e-6

    # Room for one engine: a plain model; the old part models go, a folder not trtbuild's stays.
    (repo / "seed_net_fp32_part7").mkdir()  # no config.pbtxt marked as trtbuild's
    (target,) = build(recipe, Options(budget=8 << 30)).targets
    assert len(target.parts) == 1
    assert [m.name for m in deploy(recipe, repo)] == ["seed_net_fp32"]
    assert sorted(p.name for p in repo.iterdir()) == ["seed_net_fp32", "seed_net_fp32_part7"]
    assert config(repo, "seed_net_fp32").platform == "onnxruntime_onnx"
    (out,) = walk(repo, "seed_net_fp32", {"x": x.numpy()})
    assert rel_error(out, trtbuild.load(target.dir)(x)) < 1e-6


def test_dynamic_dimensions_and_a_batch_triton_can_use(recipes: Path, tmp_path: Path) -> None:
    """A dynamic sequence (batch fixed at 1): max_batch_size 0, dims -1. A dynamic batch in every
    tensor's dim 0: max_batch_size from the recipe's max, dims without the batch."""
    (target,) = build(recipes / "gpt_dyn.toml", Options(memory_override=SPLITTING)).targets
    assert len(target.parts) >= 2
    repo = tmp_path / "repo"
    deploy(recipes / "gpt_dyn.toml", repo)
    ensemble = config(repo, "gpt2_tiny_fp32")
    assert ensemble.max_batch_size == 0 and list(ensemble.input[0].dims) == [1, -1]
    model = trtbuild.load(target.dir)
    for length in (3, 17):
        ids = torch.randint(0, 97, (1, length))
        (logits,) = walk(repo, "gpt2_tiny_fp32", {"ids": ids.numpy()})
        assert rel_error(logits, model(ids)) < 1e-6

    recipe = recipes / "batch.toml"
    recipe.write_text(
        (recipes / "mlp.toml")
        .read_text()
        .replace('name = "mlp"', 'name = "batch"')
        .replace("shape = [2, 1, 4096]", "shape = { min = [1, 96], opt = [4, 96], max = [16, 96] }")
        .replace('host_memory = "600MiB"', 'host_memory = "1GiB"')
        .replace(
            'source = "models/mlp.py:wide_mlp"',
            'source = "models/mlp.py:wide_mlp"\nkwargs = { width = 96, hidden = 96 }',
        )
    )
    (target,) = build(recipe, Options(memory_override=SPLITTING)).targets
    assert len(target.parts) >= 2
    deploy(recipe, repo)
    ensemble = config(repo, "wide_mlp_fp32")
    assert ensemble.max_batch_size == 16 and list(ensemble.input[0].dims) == [96]
    assert all(config(repo, f"wide_mlp_fp32_part{i}").max_batch_size == 16 for i in range(2))
    x = torch.randn(5, 96)
    (out,) = walk(repo, "wide_mlp_fp32", {"x": x.numpy()})
    assert rel_error(out, trtbuild.load(target.dir)(x)) < 1e-6
    assert (repo / "gpt2_tiny_fp32").is_dir()  # another recipe's models are left alone


def test_cli_builds_what_is_missing_then_writes_the_repository(recipes: Path) -> None:
    """From the recipe's [deploy] table: out relative to the recipe's folder."""
    recipe = small_seed_net(recipes)
    cli = [sys.executable, "-m", "trtbuild", "deploy", str(recipe)]
    env = {**os.environ, "TRTBUILD_FORK_SERVER": "0"}
    missing = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"trtbuild: error: {recipe}: no repository folder: pass --out DIR or set out in [deploy]"
    ]
    recipe.write_text(recipe.read_text() + '\n[deploy]\nformat = "triton"\nout = "../served"\n')
    done = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    repo = recipes.parent / "served"
    assert config(repo, "seed_net_fp32").platform == "onnxruntime_onnx"
    assert "part 0: built" in done.stderr  # nothing was cached: deploy built it as run would
    again = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "engines up to date" in again.stderr


TRITON = ["--format", "triton", "--out", "repo"]


@pytest.mark.slow
def test_seed_net_1g_deploys_as_two_parts_and_an_ensemble(recipes: Path) -> None:
    """Issue 14's acceptance: the seed network at 1 GiB, deployed by the CLI."""
    run = subprocess.run(
        [sys.executable, "-m", "trtbuild", "deploy", str(recipes / "seed_net_1g.toml"), *TRITON],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    repo = Path("repo")
    names = ["seed_net_fp32", "seed_net_fp32_part0", "seed_net_fp32_part1"]
    assert sorted(p.name for p in repo.iterdir()) == names
    assert all(config(repo, name).name == name for name in names)
    x = torch.randn(1, 1024, 224, 224)
    (out,) = walk(repo, "seed_net_fp32", {"x": x.numpy()})
    expected = trtbuild.load(Path("build/seed_net_1g/seed_net/fp32"))(x)
    assert rel_error(out, expected) < 1e-6
