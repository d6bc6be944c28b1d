"""Output folders belong to one recipe file: out/<recipe name>/.recipe names it, and a second
recipe file with the same [recipe] name is one error; targets dropped from the recipe are removed
with a note."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from trtbuild.cache import atomic
from trtbuild.errors import TrtbuildError
from trtbuild.orchestrate.results import TargetResult
from trtbuild.recipe.load import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OWNER = ".recipe"  # out/<name>/.recipe: the recipe file that owns the folder, relative to it


def check_owner(recipe: Recipe, out: Path) -> None:
    """out/<name>/ belongs to one recipe file: another file that declares the same [recipe] name
    is refused before it builds (it would remove the first one's outputs as dropped targets).

    The owner is named relative to the folder, so a copied or moved project keeps its owner; a
    file that no longer exists or no longer declares the name has given the folder up.
    """
    folder = out.resolve() / recipe.name
    try:
        owner = (folder / (folder / OWNER).read_text().strip()).resolve()
    except OSError:
        return
    if owner == recipe.path.resolve() or not owner.is_file():
        return
    try:
        claimed = tomllib.loads(owner.read_text()).get("recipe", {}).get("name")
    except (OSError, ValueError):
        return
    if claimed == recipe.name:
        raise TrtbuildError(
            f"{recipe.path}: [recipe] name = {recipe.name!r} is also the name of {owner}, whose "
            f"outputs are in {folder}; give one of them another name (or use --out)"
        )


def claim(recipe: Recipe, folder: Path) -> None:
    atomic.write_text(folder / OWNER, os.path.relpath(recipe.path.resolve(), folder) + "\n")


def remove_dropped_targets(out: Path, recipe_name: str, results: list[TargetResult]) -> list[str]:
    """Outputs of targets the recipe no longer has go, as in a clean build (ninja's cleandead).

    Only <model>/<precision> folders directly under out/<recipe> are candidates. Returns the
    removed targets' names (<model>/<precision>).
    """
    removed = []
    root = (out / recipe_name).resolve()
    keep = {r.dir.resolve() for r in results}
    for engine_json in root.glob("*/*/engine.json"):
        folder = engine_json.parent
        if folder not in keep and folder.is_relative_to(root):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"{folder.parent.name}/{folder.name}")
            if not any(folder.parent.iterdir()):
                folder.parent.rmdir()
    return removed
