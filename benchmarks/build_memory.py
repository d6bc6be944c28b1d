"""Peak RSS of every build process over its part's weight bytes, next to Torch-TensorRT's 4x.

    python benchmarks/build_memory.py [recipes/seed_net.toml ...]   # default: every recipe

Builds each recipe in a fresh temporary cache and prints one row per part and process kind.
"alpha" is (peak RSS - the model's fixed cost) / weight bytes; the largest alpha per process kind
is what trtbuild.memory.ONNXRUNTIME must be at least, for its linear model to stay an upper bound.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtbuild.build import Options, build
from trtbuild.memory import ONNXRUNTIME

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def main(recipes: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="trtbuild-mem-"))
    print(
        "| recipe | target | part | weights MiB | process | peak RSS MiB | peak / weights | alpha | Torch-TRT 4x MiB | budget MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = {"export": 0.0, "build": 0.0}
    try:
        shutil.copytree(REPO / "recipes", work / "recipes", ignore=shutil.ignore_patterns("*.lock"))
        for name in recipes:
            result = build(
                work / "recipes" / Path(name).name,
                Options(backend="onnxruntime", out=work / "build", cache=work / "cache"),
            )
            for t in result.targets:
                for part in t.parts:
                    w = part.record["weight_bytes"]
                    for proc in part.record["processes"]:
                        stage = getattr(ONNXRUNTIME, proc["kind"])
                        alpha = (proc["peak_rss_bytes"] - stage.fixed_bytes) / w if w else 0.0
                        worst[proc["kind"]] = max(worst[proc["kind"]], alpha)
                        print(
                            f"| {Path(name).stem} | {t.model}/{t.precision} | {part.index} | {w / MiB:.1f} | "
                            f"{proc['kind']} | {proc['peak_rss_bytes'] / MiB:.0f} | "
                            f"{proc['peak_rss_bytes'] / w if w else 0:.2f} | {alpha:.2f} | {4 * w / MiB:.0f} | "
                            f"{t.budget_bytes / MiB:.0f} |",
                            flush=True,
                        )
        print(
            f"\nlargest alpha: export {worst['export']:.2f} (model {ONNXRUNTIME.export.alpha}), "
            f"build {worst['build']:.2f} (model {ONNXRUNTIME.build.alpha})"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    default = ["resnet.toml", "seed_net.toml", "seed_net_1g.toml", "gpt2.toml", "unet.toml"]
    main(sys.argv[1:] or default)
