"""Scale-out: Ray on a two-node local cluster vs local -j 1, and a remote-cache-warm build vs a cold one.

    python benchmarks/cluster.py

One recipe of 4 targets (two small ResNets x fp32/fp16), each build from an empty local cache
into a fresh output folder, all in this one run:

1. local, -j 1, jobs forked from the fork server (the default);
2. local, -j 1, every job a fresh interpreter (--no-fork-server): what a Ray task runs too;
3. Ray, a head and a second node on this machine (ray.cluster_utils.Cluster), each offering one
   host budget: wall time, and per job the time Ray added to it (`dispatch_seconds` in
   build.json: scheduling, a fresh worker, files through the object store);
4. with nginx as remote cache: a cold build (fills it), then a warm one from an empty local cache.

Goals (issue 13): Ray overhead <= 1 s per job; warm remote build <= 0.1x cold.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nginx import missing, serve
from trtbuild.orchestrate.build import Options, build

REPO = Path(__file__).resolve().parent.parent
RECIPE = """\
[recipe]
name = "four"

[defaults]
backend = "onnxruntime"
precisions = ["fp32", "fp16"]

[[model]]
name = "wide"
source = "models/resnet.py:resnet_tiny"
kwargs = { num_classes = 10, width = 16 }
[[model.inputs]]
name = "x"
shape = [2, 3, 64, 64]

[[model]]
name = "narrow"
source = "models/resnet.py:resnet_tiny"
kwargs = { num_classes = 10, width = 8 }
[[model.inputs]]
name = "x"
shape = [2, 3, 64, 64]
"""


def timed(recipe: Path, work: Path, name: str, **options: object) -> tuple[float, list[dict]]:
    """Seconds of one build from an empty cache, and its processes as build.json has them."""
    out = work / name
    start = time.perf_counter()
    build(recipe, Options(out=out, cache=work / f"{name}-cache", **options))  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    processes = [
        p
        for record in out.rglob("build.json")
        for part in json.loads(record.read_text())["parts"]
        for p in part.get("processes", [])
    ]
    return seconds, processes


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="trtbuild-cluster-"))
    (work / "models").mkdir()
    shutil.copy(REPO / "recipes" / "models" / "resnet.py", work / "models")
    recipe = work / "four.toml"
    recipe.write_text(RECIPE)
    rows = []
    try:
        local, procs = timed(recipe, work, "local", jobs=1)
        jobs = len({(p["kind"], p["started"]) for p in procs}) + 4  # + one graph job per target
        rows.append(("local -j 1 (fork server)", local, ""))
        plain, _ = timed(recipe, work, "plain", jobs=1, fork_server=False)
        rows.append(("local -j 1, fresh processes", plain, f"{plain / local:.2f}x"))

        from ray.cluster_utils import Cluster

        node = {"num_cpus": 2, "object_store_memory": 256 << 20, "resources": {"trtbuild": 1}}
        cluster = Cluster(initialize_head=True, head_node_args=node)
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        try:
            ray, ray_procs = timed(
                recipe, work, "ray", jobs=1, executor="ray", ray_address=cluster.address
            )
        finally:
            cluster.shutdown()
        dispatch = [p["dispatch_seconds"] for p in ray_procs]
        rows.append(("Ray, 2 nodes", ray, f"{ray / local:.2f}x"))

        if missing():
            print(f"remote cache part skipped: {missing()}")
        else:
            with serve(work / "nginx") as server:
                cold, _ = timed(recipe, work, "cold", remote_cache=server.url())
                warm, _ = timed(recipe, work, "warm", remote_cache=server.url())
            rows.append(("remote cache: cold (fills it)", cold, ""))
            rows.append(("remote cache: warm, empty local cache", warm, f"{warm / cold:.3f}x cold"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"4 targets, {jobs} jobs\n")
    print("| build | seconds | ratio |")
    print("|---|---|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.1f} | {ratio} |")
    print(
        f"\nRay overhead per export/build job (dispatch_seconds): median "
        f"{statistics.median(dispatch):.2f} s, max {max(dispatch):.2f} s over {len(dispatch)} jobs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
