"""Cold build: `trtbuild run` on an empty cache over the same work written by hand.

    python benchmarks/coldbuild.py                      # resnet, seed_net_1g, gpt2; 3 runs each
    python benchmarks/coldbuild.py --recipes resnet --runs 1

"By hand" is what a user's own script does in one Python process: build the model, export it
with `torch.onnx.export(..., dynamo=True)` once per precision, and let ONNX Runtime optimise and
save it (`optimized_model_filepath`). No budget, no isolation, no cache: the floor to compare with.
Both run in this one invocation, alternating, and the table gives medians and their ratio. It also
checks that every process of every trtbuild run stayed within its budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BY_HAND = r"""
import sys, time
from pathlib import Path
import onnxruntime as ort
import torch
sys.path.insert(0, sys.argv[1])
from trtbuild.recipe.load import load_recipe
from trtbuild.model.examples import INPUT_DTYPES
from trtbuild.model.frontend import import_factory, PRECISION_DTYPES
recipe = load_recipe(sys.argv[2])
out = Path(sys.argv[3])
for target in recipe.targets():
    spec = target.model
    model = import_factory(recipe, spec.source)(**spec.kwargs).eval()
    dtype = PRECISION_DTYPES[target.precision]
    model = model.to(dtype)
    args = tuple(torch.randn(i.opt_shape).to(dtype) if INPUT_DTYPES[i.dtype].is_floating_point
                 else torch.zeros(i.opt_shape, dtype=INPUT_DTYPES[i.dtype]) for i in spec.inputs)
    path = out / f"{spec.name}-{target.precision}.onnx"
    with torch.no_grad():
        torch.onnx.export(model, args, str(path), dynamo=True, external_data=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path.with_suffix(".ort.onnx"))
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", path.stem + ".ort.onnx.data")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
"""


def by_hand(recipe: Path, work: Path) -> float:
    out = work / "by-hand"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", BY_HAND, str(REPO), str(recipe), str(out)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def trtbuild(recipe: Path, work: Path) -> tuple[float, list[tuple[int, int]]]:
    """Seconds, and (peak, budget) of every process of the build."""
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "build", ignore_errors=True)
    recipe.with_suffix(".lock").unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "trtbuild",
        "run",
        str(recipe),
        "--json",
        "--cache",
        str(work / "cache"),
        "--out",
        str(work / "build"),
        "--backend",
        "onnxruntime",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=work)
    seconds = time.perf_counter() - start
    peaks = [
        (process["peak_rss_bytes"], target["budget_bytes"])
        for target in json.loads(proc.stdout)["targets"]
        for part in target["parts"]
        for process in part["processes"]
    ]
    return seconds, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="*", default=["resnet", "seed_net_1g", "gpt2"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtbuild-coldbuild-"))
    print(
        "| recipe | by hand s (median) | trtbuild s (median) | ratio (goal <= 1.3) | max peak / budget |"
    )
    print("|---|---|---|---|---|")
    try:
        shutil.copytree(REPO / "recipes", work / "recipes", ignore=shutil.ignore_patterns("*.lock"))
        for name in args.recipes:
            recipe = work / "recipes" / f"{name}.toml"
            hand, ours, worst = [], [], 0.0
            for _ in range(args.runs):
                hand.append(by_hand(recipe, work))
                seconds, peaks = trtbuild(recipe, work)
                ours.append(seconds)
                worst = max([worst, *(peak / budget for peak, budget in peaks)])
            h, t = statistics.median(hand), statistics.median(ours)
            print(f"| {name} | {h:.1f} | {t:.1f} | {t / h:.2f} | {worst:.2f} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
