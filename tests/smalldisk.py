"""Builds on a real small filesystem: a tmpfs mounted in a private mount namespace.

`python -m tests.smalldisk SPEC.json` runs inside `unshare -rm` (tests/test_diskfull.py): it
mounts a tmpfs, copies what the spec puts on it, builds once with room (the earlier build),
changes the recipe's weights seed, fills the tmpfs until `leave` bytes are free, builds again
with --no-disk-check (the run that meets the full disk, as when another process fills it), frees
the space and builds a third time. It prints one JSON object: each run's exit code and stderr,
what the failed run left behind, and the files before and after. The mount ends with the
namespace, so everything the test looks at is measured in here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SIZE = "64m"


def available() -> str | None:
    """None when this machine lets an unprivileged user mount a tmpfs, else why not."""
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", probe], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if done.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace: {done.stderr.strip()}"
    return None


def files(root: Path) -> dict[str, int]:
    """size of every file below root (the cache's lock files and scratch aside)."""
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock") and "tmp" not in p.relative_to(root).parts
    }


def fill(mount: Path, leave: int) -> Path:
    """A file that leaves `leave` bytes free on the filesystem at `mount`."""
    filler = mount / "filler"
    size = max(0, shutil.disk_usage(mount).free - leave)
    with filler.open("wb") as handle:
        while size > 0:
            size -= handle.write(b"\0" * min(size, 1 << 20))
    return filler


def main(spec: dict[str, Any]) -> dict[str, Any]:
    mount, recipe = Path(spec["mount"]), Path(spec["recipe"])
    cache, out = Path(spec["cache"]), Path(spec["out"])
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], check=True)
    for src, dest in spec["copy"].items():
        shutil.copytree(src, dest)
    command = [sys.executable, "-m", "trtbuild", "run", str(recipe), "--cache", str(cache)]
    command += ["--out", str(out), *spec["options"]]

    def run(*more: str) -> dict[str, Any]:
        done = subprocess.run([*command, *more], capture_output=True, text=True, timeout=600)
        return {"code": done.returncode, "stderr": done.stderr}

    earlier = run()
    lock = recipe.with_suffix(".lock")
    before = {"out": files(out), "cache": files(cache), "lock": lock.read_text()}
    recipe.write_text(recipe.read_text().replace("seed = 0", "seed = 1"))
    filler = fill(mount, spec["leave"])
    full = run("--no-disk-check")  # a disk that fills anyway: the estimate is not the point
    left = [str(p) for p in (cache / "tmp").iterdir()] if (cache / "tmp").is_dir() else []
    left += [str(p) for p in out.rglob(".*") if ".new-" in p.name or ".tmp" in p.name]
    after = {"out": files(out), "cache": files(cache), "lock": lock.read_text()}
    filler.unlink()
    again = run()
    engine = next(out.rglob("engine.json"), None)
    return {
        "earlier": earlier,
        "full": full,
        "again": again,
        "left": left,
        "before": before,
        "after": after,
        "engine": json.loads(engine.read_text()) if engine else None,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(Path(sys.argv[1]).read_text()))))
