"""End to end on ONNX Runtime: real export and build processes, real engines, real files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

import trtbuild
from trtbuild.cache import upkeep
from trtbuild.cache.files import sha256_file
from trtbuild.cache.store import Store
from trtbuild.model.frontend import eager_model
from trtbuild.orchestrate.build import Options, build
from trtbuild.recipe.load import load_recipe
from trtbuild.release.lockfile import lock_path, read_lock


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def check_matches_eager(recipe_file: Path, out_root: Path, tolerances: dict[str, float]) -> None:
    recipe = load_recipe(recipe_file)
    torch.manual_seed(0)
    for spec in recipe.schema.model:
        x = torch.randn(spec.inputs[0].opt_shape)
        for precision, tol in tolerances.items():
            engine = trtbuild.load(out_root / recipe.name / spec.name / precision)
            with torch.no_grad():
                ref = eager_model(recipe, spec, precision)(x)
            out = engine(x)
            assert out.dtype == torch.float32
            assert out.shape == ref.shape
            assert rel_error(out, ref) < tol, (precision, rel_error(out, ref))


def test_tiny_build_load_and_noop(recipes: Path) -> None:
    recipe = recipes / "tiny.toml"
    first = build(recipe)
    assert not first.up_to_date
    assert [(t.model, t.precision, t.backend) for t in first.targets] == [
        ("resnet_tiny", "fp32", "onnxruntime"),
        ("resnet_tiny", "fp16", "onnxruntime"),
    ]
    for target in first.targets:
        assert target.dir == Path("build/tiny/resnet_tiny").resolve() / target.precision
        for part in target.parts:
            assert not part.cached
            assert 0 < part.peak_rss_bytes <= target.budget_bytes
            kinds = [p["kind"] for p in part.record["processes"]]
            assert kinds == ["export", "build"]
    check_matches_eager(recipe, Path("build"), {"fp32": 1e-4, "fp16": 1e-2})

    lock = read_lock(lock_path(recipe))
    assert lock is not None
    assert set(lock.inputs.files) == {"tiny.toml", "models/resnet.py"}
    statement = json.loads(Path("build/tiny/provenance.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    for target in first.targets:
        for part in target.parts:
            assert subjects[f"resnet_tiny/{target.precision}/{part.engine}"] == part.sha256

    again = build(recipe)
    assert again.up_to_date and again.targets == []


def test_cache_serves_a_second_output_dir(recipes: Path) -> None:
    build(recipes / "tiny.toml")
    second = build(recipes / "tiny.toml", Options(out=Path("elsewhere")))
    assert not second.up_to_date
    assert all(p.cached for t in second.targets for p in t.parts)
    assert (Path("elsewhere/tiny/resnet_tiny/fp32/engine.json")).is_file()


def test_resnet50_matches_eager(recipes: Path) -> None:
    """Acceptance: the README's main recipe, fp32 < 1e-4 and fp16 < 1e-2 relative error."""
    result = build(recipes / "resnet.toml", Options(backend="onnxruntime"))
    assert len(result.targets) == 2
    check_matches_eager(recipes / "resnet.toml", Path("build"), {"fp32": 1e-4, "fp16": 1e-2})
    assert build(recipes / "resnet.toml", Options(backend="onnxruntime")).up_to_date


def test_safetensors_and_state_dict_weights(recipes: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    recipe = load_recipe(recipes / "tiny.toml")
    spec = recipe.schema.model[0]
    state = eager_model(recipe, spec, "fp32").model.state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(recipes / "w.safetensors"))
    torch.save(state, recipes / "w.pt")
    for weights in ("w.safetensors", "w.pt"):
        text = (
            (recipes / "tiny.toml")
            .read_text()
            .replace('weights = { init = "random", seed = 3 }', f'weights = "{weights}"')
            .replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
        )
        stem = f"tiny_{weights.replace('.', '_')}"
        path = recipes / f"{stem}.toml"
        path.write_text(text.replace('name = "tiny"', f'name = "{stem}"'))  # a folder each
        build(path)
        x = torch.randn(2, 3, 32, 32)
        engine = trtbuild.load(Path(f"build/{stem}/resnet_tiny/fp32"))
        new_recipe = load_recipe(path)
        loaded = eager_model(new_recipe, new_recipe.schema.model[0], "fp32")
        assert torch.equal(loaded.model.conv1.weight, state["conv1.weight"])
        with torch.no_grad():
            assert rel_error(engine(x), loaded(x)) < 1e-4


@pytest.mark.parametrize("seed", [0, 7])
def test_random_init_is_the_same_in_any_process(recipes: Path, seed: int) -> None:
    """Per-module seeded init: a part loading one module gets the bytes a whole-model init gives."""
    from trtbuild.model.frontend import build_model
    from trtbuild.model.weights import random_init

    recipe = load_recipe(recipes / "tiny.toml")
    spec = recipe.schema.model[0]
    whole = random_init(
        build_model(recipe, spec, "fp32").model, ["fc.weight", "conv1.weight"], seed
    )
    alone = random_init(build_model(recipe, spec, "fp32").model, ["fc.weight"], seed)
    assert torch.equal(whole["fc.weight"], alone["fc.weight"])
    other = random_init(build_model(recipe, spec, "fp32").model, ["fc.weight"], seed + 1)
    assert not torch.equal(other["fc.weight"], alone["fc.weight"])


def test_random_init_bytes_are_those_of_the_module_seed_under_torch_manual_seed(
    recipes: Path,
) -> None:
    """The bytes every seeded-init lock pins (RANDOM_INIT_SCHEME 1): each module reset under
    torch.manual_seed(module_seed(seed, its name)). Drawing them another way (a cheaper seeding,
    the model's ties passed in) must not change them."""
    from trtbuild.model.frontend import build_model
    from trtbuild.model.weights import RANDOM_INIT_SCHEME, module_seed, random_init, tied_names

    assert RANDOM_INIT_SCHEME == 1
    recipe = load_recipe(recipes / "tiny.toml")
    model = build_model(recipe, recipe.schema.model[0], "fp32").model
    names = ["conv1.weight", "bn1.weight", "fc.weight", "fc.bias"]
    drawn = random_init(model, names, 5, tied_names(model))
    for name in names:
        owner = name.rpartition(".")[0]
        module = model.get_submodule(owner).to_empty(device="cpu", recurse=False)
        torch.manual_seed(module_seed(5, owner))
        with torch.no_grad():
            module.reset_parameters()
        assert torch.equal(drawn[name], model.get_parameter(name)), name


def test_random_init_of_tied_weights_does_not_depend_on_load_order(recipes: Path) -> None:
    """A part's exporter loads weights one at a time in the ONNX graph's order: loading the
    embedding first must not untie the output projection from it (it did: wrong logits)."""
    from trtbuild.model.frontend import build_model
    from trtbuild.model.weights import random_init

    recipe = load_recipe(recipes / "gpt_dyn.toml")
    spec = recipe.schema.model[0]
    model = build_model(recipe, spec, "fp32").model
    first = random_init(model, ["wte.weight"], 0)["wte.weight"]
    then = random_init(model, ["lm_head.weight"], 0)["lm_head.weight"]
    assert torch.equal(first, then)
    assert model.lm_head.weight is model.wte.weight


def _unique_bytes(*roots: Path) -> int:
    """Disk bytes of the files below `roots`, each inode once (as `du` counts hard links)."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        for path in root.rglob("*"):
            st = path.lstat()
            if path.is_file():
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def test_build_and_cache_hold_one_copy_and_an_edited_engine_is_caught(recipes: Path) -> None:
    recipe = recipes / "tiny.toml"
    result = build(recipe)
    engines = sum(
        Path(f"cache/cas/{sha}").stat().st_size
        for t in result.targets
        for p in t.parts
        for sha in [p.sha256, *p.sidecars.values()]
    )
    total = _unique_bytes(Path("build"), Path("cache"))
    assert engines <= total <= 1.1 * engines + 256 * 1024, (engines, total)
    du = subprocess.run(
        ["du", "-sb", "build", "cache"], capture_output=True, text=True, check=False
    )
    if du.returncode == 0:  # du itself agrees: each hard-linked file once
        assert sum(int(line.split()[0]) for line in du.stdout.splitlines()) <= 1.1 * engines + 2**20

    part = result.targets[0].parts[0]
    published = result.targets[0].dir / part.engine
    published.chmod(0o644)  # a user who insists on editing a read-only engine in place
    with published.open("ab") as handle:
        handle.write(b"\0")
    again = build(recipe)
    assert not again.up_to_date
    rebuilt = again.targets[0].parts[0]
    assert not rebuilt.cached and rebuilt.sha256 == part.sha256  # detected, rebuilt bit for bit
    assert sha256_file(published) == part.sha256
    assert upkeep.verify_all(Store(Path("cache").resolve())) == []
