"""`plan --trtexec`: each part's ONNX written where a user can run trtexec on it, and the commands.

The ONNX files are exactly what a build exports for each part (the same export job); the
commands carry the builder configuration the TensorRT backend would use (backends/trt_config.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from trtbuild.cache.store import Store
from trtbuild.execution.executor import run_job
from trtbuild.execution.jobs import ExportJob, PartToExport
from trtbuild.orchestrate.partspec import backend_settings, build_inputs, part_json
from trtbuild.recipe.load import Recipe

if TYPE_CHECKING:
    from trtbuild.orchestrate.planning import PlannedTarget


def folder_of(out: Path, recipe: Recipe, planned: PlannedTarget) -> Path:
    """out/<recipe>/trtexec/<model>/<precision>: beside, never inside, the published targets."""
    return out.resolve() / recipe.name / "trtexec" / planned.target.model.name / planned.target.slot


def write_onnx(recipe: Recipe, planned: PlannedTarget, store: Store, folder: Path) -> list[Path]:
    """Export every part of `planned` to folder/part<i>.onnx (+ its external-data file).

    Runs one export process, as a build does; raises TrtbuildError as a build would.
    """
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    settings = backend_settings(recipe, planned.target, "tensorrt", release=False)
    paths = [folder / f"part{part.index}.onnx" for part in planned.plan.parts]
    job = ExportJob(
        str(recipe.path),
        planned.target.model.name,
        planned.target.precision,
        planned.job.digest,
        settings["opset"],
        [PartToExport(part_json(p), str(path)) for p, path in zip(planned.plan.parts, paths)],
        uses_torch=not planned.target.model.onnx,
    )
    scratch = store.scratch()
    try:
        run_job(job, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return paths


def commands(recipe: Recipe, planned: PlannedTarget, folder: Path, major: int) -> list[str]:
    """One trtexec command per part, on the files write_onnx wrote."""
    from trtbuild.backends.trt_config import builder_config, trtexec_command

    settings = backend_settings(recipe, planned.target, "tensorrt", release=False)
    lines = []
    for part in planned.plan.parts:
        extra = build_inputs(recipe, planned.target, part)
        config = builder_config(settings, planned.target.precision, extra["inputs"], major, False)
        lines.append(f"# {planned.target.name} part {part.index}")
        command = trtexec_command(
            config, f"{folder}/part{part.index}.onnx", f"{folder}/part{part.index}.engine"
        )
        plugins = " ".join(f"--staticPlugins={p}" for p in extra["plugin_paths"])
        lines.append(f"{command} {plugins}" if plugins else command)
    return lines
