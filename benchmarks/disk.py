"""Disk estimate against the bytes a build really writes (trtbuild/orchestrate/disk.py).

    python benchmarks/disk.py                       # seed_net_1g and gpt2, from an empty cache
    python benchmarks/disk.py --recipes gpt2

Each recipe is built by `trtbuild run` in a temporary folder (its own cache and output folder,
both on one filesystem). While it runs, a thread samples the bytes on disk under the cache and
the output folder (every file once: a hard-linked engine counts once) every 0.1 s; afterwards the
script sums the bytes left. The estimate is what the run was checked with (build.json "disk").
Acceptance (issue 27): the estimate is within 25 % of the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def on_disk(*roots: Path) -> int:
    """Bytes of every file under `roots`, each inode once (hard links count once)."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:  # removed while we walk
                    continue
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


class Peak(threading.Thread):
    def __init__(self, *roots: Path) -> None:
        super().__init__(daemon=True)
        self.roots, self.peak, self.done = roots, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.peak = max(self.peak, on_disk(*self.roots))


def measure(name: str, work: Path) -> dict[str, object]:
    recipes = work / "recipes"
    shutil.copytree(REPO / "recipes", recipes, ignore=shutil.ignore_patterns("*.lock"))
    cache, out = work / "cache", work / "build"
    sampler = Peak(cache, out)
    sampler.start()
    start = time.perf_counter()
    command = [sys.executable, "-m", "trtbuild", "run", str(recipes / f"{name}.toml")]
    subprocess.run(
        [*command, "--cache", str(cache), "--out", str(out)],
        check=True,
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    left = on_disk(cache, out)
    estimate = sum(
        json.loads(p.read_text())["disk"]["total_bytes"] for p in out.rglob("build.json")
    )
    peak = max(sampler.peak, left)
    return {
        "recipe": name,
        "estimate_bytes": estimate,
        "peak_bytes": peak,
        "left_bytes": left,
        "estimate_over_peak": round(estimate / peak, 3),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["seed_net_1g", "gpt2"])
    args = parser.parse_args()
    rows = []
    for name in args.recipes:
        with tempfile.TemporaryDirectory(prefix="trtbuild-disk-") as work:
            rows.append(measure(name, Path(work)))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| recipe | estimate | peak on disk | left after | estimate / peak | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['estimate_bytes']:,} | {r['peak_bytes']:,} | "
            f"{r['left_bytes']:,} | {r['estimate_over_peak']} | {r['seconds']} |"
        )
    within = all(abs(float(str(r["estimate_over_peak"])) - 1) <= 0.25 for r in rows)
    print(f"\nwithin 25 %: {'yes' if within else 'NO'}")


if __name__ == "__main__":
    main()
