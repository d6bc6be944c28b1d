"""README.md as a newcomer reads it: short, and every command-line flag it shows exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tests.conftest import REPO
from trtbuild.cli import _parser, main

README = (REPO / "README.md").read_text()


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_the_readme_is_read_in_five_minutes() -> None:
    assert len(README.splitlines()) <= 250


def test_every_flag_the_readme_shows_exists() -> None:
    commands = subparsers()
    shown = re.findall(r"trtbuild (\w+)([^`|\n]*)", README)
    assert {name for name, _ in shown} >= {"run", "plan", "explain", "verify", "deploy", "cache"}
    for name, rest in shown:
        if name not in commands:
            continue  # prose ("trtbuild builds ...")
        flags = {s for a in commands[name]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", rest):
            assert flag in flags, f"README shows `trtbuild {name} ... {flag}`, which {name} lacks"


def test_every_docs_link_exists() -> None:
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (REPO / link).is_file(), link


def test_the_minimal_recipe_and_its_model_build_as_pasted(tmp_path: Path) -> None:
    """The README's minimal recipe and model file, pasted into a fresh folder, build and pass."""
    blocks = re.findall(r"```(toml|python)\n(.*?)```", README, re.S)
    recipe = next(b for kind, b in blocks if kind == "toml" and "my_mlp" in b)
    model = next(b for kind, b in blocks if kind == "python" and "def make_mlp" in b)
    (tmp_path / "recipes" / "models").mkdir(parents=True)
    (tmp_path / "recipes" / "my_mlp.toml").write_text(recipe)
    (tmp_path / "recipes" / "models" / "mlp.py").write_text(model)
    assert main(["run", str(tmp_path / "recipes" / "my_mlp.toml")]) == 0
    assert (Path("build") / "my_mlp" / "mlp" / "fp16" / "engine.json").is_file()
