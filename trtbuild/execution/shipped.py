"""The files a Ray task ships to its node: a job's inputs (the recipe's code, configs, weights, a
part's ONNX files), read on the driver and put in Ray's object store once per version."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from trtbuild.errors import TrtbuildError
from trtbuild.execution.jobs import BuildJob, CalibrateJob, ExportJob, GraphJob, Job, StateJob
from trtbuild.recipe.load import load_recipe

SKIP_DIRS = {"__pycache__", "build", "cache", "node_modules", "site-packages"}
MAX_SOURCE_FILES = 2000


def inputs_of(job: Job) -> list[Path]:
    """The files a job reads: a recipe's code, configs and weights; a part's ONNX files."""
    if isinstance(job, BuildJob):
        folder = Path(job.onnx).parent
        named = [job.settings.get(k) for k in ("timing_cache_path", "calibration_table")]
        extra = [Path(f) for f in named if f and Path(f).is_file()]
        return sorted([*(p for p in folder.iterdir() if p.is_file()), *extra])
    if isinstance(job, CalibrateJob):  # and its sample files, and the model's own state
        state = [Path(job.state)] if job.state else []
        samples = [Path(f) for f in job.samples.get("files") or []]
        return sorted({*recipe_files(Path(job.recipe), job.model), *samples, *state})
    if isinstance(job, ExportJob) and job.state:  # the model's own state (statejob.py)
        return sorted([*recipe_files(Path(job.recipe), job.model), Path(job.state)])
    if isinstance(job, GraphJob | ExportJob | StateJob):
        return recipe_files(Path(job.recipe), job.model)
    return []


def recipe_files(recipe_path: Path, model: str) -> list[Path]:
    """The recipe, the Python files under its folder (a model file imports its helpers), and the
    model's weights and config files."""
    recipe = load_recipe(recipe_path)
    files = {recipe.path}
    for path in _walk(recipe.root):
        if path.suffix == ".py":
            files.add(path)
    spec = recipe.model_spec(model)
    files.update(recipe.data_files(spec))
    named_files = [spec.weights, spec.config, *spec.plugins]
    if spec.onnx:  # the graph and its external data (onnx.load's rule: files beside it)
        source = recipe.resolve(spec.source.partition(":")[2])
        named_files += [str(p) for p in source.parent.iterdir() if p.is_file()]
    for named in named_files:
        if isinstance(named, str):
            where = recipe.resolve(named)
            files.update(_walk(where) if where.is_dir() else [where])
    if len(files) > MAX_SOURCE_FILES:
        raise TrtbuildError(
            f"{recipe.path}: over {MAX_SOURCE_FILES} files to send to the cluster under "
            f"{recipe.root}; keep recipes in a folder of their own"
        )
    return sorted(files)


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
        if "pyvenv.cfg" in names:  # a virtual environment
            dirs[:] = []
            continue
        for name in names:
            yield Path(folder) / name
