"""Predicted vs measured peak RSS of every build process, and whether plans use no more engines
than the measured peaks require.

    python benchmarks/memory_model.py                 # every recipe in recipes/ + the transformers test models
    python benchmarks/memory_model.py resnet.toml hf  # some of them ("hf": the test models)
    python benchmarks/memory_model.py resnet.toml:int8 unet.toml:int8  # int8 variants

NAME.toml:int8 is the recipe with precisions = ["int8"] and [model.calibration] data = "random",
samples = 4: its rows add the calibration process (process "calibrate", part "-"), predicted by
trtbuild.orchestrate.calibration (the export's fixed bytes, the heaviest part's weights, four
times the largest activation and 64 MiB) and measured as it ran (`calibration.process` in
build.json).

One fresh cache for the whole run, so the memory model learns as a user's cache would: each
process's prediction is the one it was admitted with (`predicted_peak_bytes` in build.json).
Goal: every process within [-20%, +25%] of its measured peak. Then each target is built at a budget
so large that it is one engine, and planned again at 1.2x that engine's measured peak: the plan
must be one engine too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.planning import plan_targets

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
LOW, HIGH = -0.20, 0.25


def hf_recipe(folder: Path) -> Path:
    from tests.test_transformers import MODELS, write_recipe

    return write_recipe(folder / "hf.toml", MODELS)


INT8 = '\n[model.calibration]\ndata = "random"\nsamples = 4\n'


def int8_recipe(path: Path) -> Path:
    """A copy of `path` beside it whose targets are int8, calibrated on 4 random samples."""
    lines = path.read_text().splitlines()
    lines = ['precisions = ["int8"]' if ln.startswith("precisions =") else ln for ln in lines]
    copy = path.with_name(f"{path.stem}_int8.toml")
    copy.write_text("\n".join(lines).replace('name = "', 'name = "int8_', 1) + INT8)
    return copy


def recipe_path(folder: Path, name: str) -> Path:
    if name == "hf":
        return hf_recipe(folder)
    if name.endswith(":int8"):
        return int8_recipe(folder / name.removesuffix(":int8"))
    return folder / name


def row(path: Path, target: str, part: object, weights: int, proc: dict[str, Any]) -> bool:
    """Print one process's row; whether its prediction is within [LOW, HIGH]."""
    predicted, measured = proc["predicted_peak_bytes"], proc["peak_rss_bytes"]
    error = predicted / measured - 1
    ok = LOW <= error <= HIGH
    print(
        f"| {path.stem} | {target} | {part} | {weights / MiB:.1f} | {proc['kind']} | "
        f"{predicted / MiB:.0f} | {measured / MiB:.0f} | {error:+.1%}{'' if ok else ' MISS'} |",
        flush=True,
    )
    return ok


def main(names: list[str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="trtbuild-memmodel-"))
    cache, out = work / "cache", work / "build"
    shutil.copytree(REPO / "recipes", work / "recipes", ignore=shutil.ignore_patterns("*.lock"))
    if any(n.startswith("detector_onnx.toml") for n in names):  # its ONNX file is made, not kept
        make = work / "recipes/models/make_detector_onnx.py"
        subprocess.run([sys.executable, str(make)], check=True, stdout=subprocess.DEVNULL)
    paths = [recipe_path(work / "recipes", n) for n in names]
    misses, extra_engines = 0, 0
    print(
        "| recipe | target | part | weights MiB | process | predicted MiB | measured MiB | error |"
    )
    print("|---|---|---|---|---|---|---|---|")
    try:
        for path in paths:
            result = build(path, Options(backend="onnxruntime", out=out, cache=cache))
            for t in result.targets:
                name = f"{t.model}/{t.precision}"
                if t.calibration and not t.calibration["cached"]:  # it ran in this build
                    proc = t.calibration["process"]
                    misses += not row(path, name, "-", proc["weight_bytes"], proc)
                for part in t.parts:
                    w = part.record["weight_bytes"]
                    for proc in part.record["processes"]:
                        misses += not row(path, name, part.index, w, proc)
        print("\n| recipe | target | one-engine peak MiB | engines at 1.2x |")
        print("|---|---|---|---|")
        for path in paths:
            whole = build(
                path,
                Options(backend="onnxruntime", out=work / "whole", cache=cache, budget=64 << 30),
            )
            for t in whole.targets:
                peak = max(
                    p["peak_rss_bytes"] for part in t.parts for p in part.record["processes"]
                )
                (planned,) = plan_targets(
                    path,
                    Options(backend="onnxruntime", cache=cache, budget=int(1.2 * peak)),
                    t.model,
                    t.precision,
                )
                engines = len(planned.plan.parts)
                extra_engines += engines > 1
                print(
                    f"| {path.stem} | {t.model}/{t.precision} | {peak / MiB:.0f} | {engines} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nprocesses outside [{LOW:+.0%}, {HIGH:+.0%}]: {misses}; targets split at 1.2x their "
        f"one-engine peak: {extra_engines}"
    )
    return 1 if misses or extra_engines else 0


if __name__ == "__main__":
    everything = [p.name for p in sorted((REPO / "recipes").glob("*.toml"))] + ["hf"]
    everything += ["resnet.toml:int8", "unet.toml:int8"]
    sys.exit(main(sys.argv[1:] or everything))
