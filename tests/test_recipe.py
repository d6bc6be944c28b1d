from __future__ import annotations

from pathlib import Path

import pytest

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.load import load_recipe

GOOD = """\
[recipe]
name = "t"

[defaults]
precisions = ["fp32"]
[defaults.budget]
host_memory = "1GiB"

[[model]]
name = "m"
source = "models/resnet.py:resnet_tiny"
[[model.inputs]]
name = "x"
shape = [1, 3, 32, 32]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    (target,) = recipe.targets()
    assert target.backend == "auto"
    assert target.budget.host_memory == 1 << 30
    assert target.budget.gpu_workspace == 1 << 30
    assert target.model.weights is None  # the model's own state after its factory ran
    assert target.model.data == []
    assert recipe.targets(backend="onnxruntime", budget=5 << 20)[0].budget.host_memory == 5 << 20


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('name = "t"', 'name = "t', r"r\.toml: TOML syntax error: .*line 2"),
        (
            'name = "x"',
            'name = "x"\ncolour = 1',
            r"r\.toml:14: unknown key 'model\[0\]\.inputs\[0\]\.colour'",
        ),
        (
            'host_memory = "1GiB"',
            'host_memory = "1XB"',
            r"r\.toml:7: field 'defaults\.budget\.host_memory': expected a size",
        ),
        (
            "shape = [1, 3, 32, 32]",
            "shape = [1, -3, 32, 32]",
            r"r\.toml:14: field 'model\[0\]\.inputs\[0\]\.shape\[1\]': expected dimensions >= 1, got -3",
        ),
        (
            'precisions = ["fp32"]',
            'precisions = ["int2"]',
            r"r\.toml:5: field 'defaults\.precisions\[0\]': Input should be 'fp32', 'fp16', "
            r"'bf16', 'int8', 'int4' or 'fp8', got 'int2'",
        ),
        (
            "shape = [1, 3, 32, 32]",
            'shape = "big"',
            r"r\.toml:14: field 'model\[0\]\.inputs\[0\]\.shape'",
        ),
        (
            'source = "models/resnet.py:resnet_tiny"',
            "source = 3",
            r"r\.toml:11: field 'model\[0\]\.source': Input should be a valid string",
        ),
        ('[recipe]\nname = "t"\n', "", r"r\.toml: field 'recipe' is required"),
    ],
)
def test_errors_name_file_line_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(TrtbuildError, match=expected) as info:
        load_recipe(write(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(info.value)


def test_dynamic_shape_must_be_ordered(tmp_path: Path) -> None:
    text = GOOD.replace(
        "shape = [1, 3, 32, 32]", "shape = { min = [4, 3], opt = [2, 3], max = [8, 3] }"
    )
    with pytest.raises(TrtbuildError, match="min <= opt <= max"):
        load_recipe(write(tmp_path, text))


def test_duplicate_model_names(tmp_path: Path) -> None:
    model = GOOD[GOOD.index("[[model]]") :]
    with pytest.raises(TrtbuildError, match="unique model names"):
        load_recipe(write(tmp_path, GOOD + "\n" + model))


def test_missing_recipe(tmp_path: Path) -> None:
    with pytest.raises(TrtbuildError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_device_kinds_make_a_target_each(tmp_path: Path) -> None:
    text = GOOD.replace(
        'precisions = ["fp32"]', 'precisions = ["fp32", "fp16"]\ndevices = ["a", "b"]'
    )
    names = [t.name for t in load_recipe(write(tmp_path, text)).targets()]
    assert names == ["m/fp32@a", "m/fp32@b", "m/fp16@a", "m/fp16@b"]
    with pytest.raises(TrtbuildError, match=r"field 'defaults\.devices\[0\]'"):
        load_recipe(write(tmp_path, text.replace('["a", "b"]', '["a/b"]')))


def test_a_recipe_holds_no_remote_cache_credentials(tmp_path: Path) -> None:
    good = GOOD + '\n[cache]\nremote = "http://cache.internal:8080/trtbuild"\n'
    assert (
        load_recipe(write(tmp_path, good)).schema.cache.remote
        == "http://cache.internal:8080/trtbuild"
    )
    with pytest.raises(TrtbuildError, match=r"field 'cache\.remote'") as info:
        load_recipe(write(tmp_path, good.replace("http://", "http://me:pw@")))
    assert "pw" not in str(info.value)
