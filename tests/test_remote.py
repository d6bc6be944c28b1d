"""The remote cache (trtbuild/cache/remote.py) against a real nginx: WebDAV PUT, basic auth."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trtbuild.cli import main
from trtbuild.orchestrate.build import Options, build
from trtbuild.orchestrate.explain import explain

from .conftest import require, snapshot
from .nginx import PASSWORD, Server, free_port, missing, serve


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Server]:
    require(missing())
    with serve(tmp_path / "nginx") as server:
        yield server


def one_precision(recipes: Path, folder: Path) -> Path:
    """tiny.toml at fp32 only, alone in `folder` with its model: one machine's checkout."""
    (folder / "models").mkdir(parents=True)
    shutil.copy(recipes / "models" / "resnet.py", folder / "models" / "resnet.py")
    text = (recipes / "tiny.toml").read_text().replace('["fp32", "fp16"]', '["fp32"]')
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def engines(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.onnx*"))}


# A build from the CLI in a fresh interpreter that records every process it starts.
WATCHED = """\
import json, sys
started = []
EVENTS = ("subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system")
sys.addaudithook(lambda event, args: started.append(event) if event in EVENTS else None)
from trtbuild.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "started": started, "torch": "torch" in sys.modules}))
"""


def test_a_second_machine_builds_nothing(recipes: Path, tmp_path: Path, nginx: Server) -> None:
    """Machine A builds and uploads; machine B (its own checkout, empty cache, fresh output)
    gets every result from the remote cache and starts no process at all; C's explain says
    "up to date (remote)". No password lands in a file either machine writes."""
    a = one_precision(recipes, tmp_path / "a")
    first = build(
        a,
        Options(
            cache=tmp_path / "a" / "cache", out=tmp_path / "a" / "out", remote_cache=nginx.url()
        ),
    )
    assert not any(p.cached for t in first.targets for p in t.parts)
    uploaded = [r for r in nginx.requests() if r.startswith("PUT")]
    assert any("/cache/ac/" in r for r in uploaded) and any("/cache/cas/" in r for r in uploaded)

    b = one_precision(recipes, tmp_path / "b")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WATCHED,
            "run",
            str(b),
            "--cache",
            str(tmp_path / "b" / "cache"),
            "--out",
            str(tmp_path / "b" / "out"),
            "--remote-cache",
            nginx.url(),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "started": [], "torch": False}, run.stderr
    assert engines(tmp_path / "b" / "out") == engines(tmp_path / "a" / "out")
    record = json.loads(next((tmp_path / "b" / "out").rglob("build.json")).read_text())
    assert [p["reason"] for p in record["parts"]] == ["cached (remote)"]

    c = one_precision(recipes, tmp_path / "c")
    lines = explain(c, Options(cache=tmp_path / "c" / "cache", remote_cache=nginx.url()))
    assert lines == ["changed: no lock file", "resnet_tiny/fp32 part 0: up to date (remote)"]

    written = [
        p for folder in ("a", "b", "c") for p in (tmp_path / folder).rglob("*") if p.is_file()
    ]
    assert not [p for p in written if PASSWORD.encode() in p.read_bytes()]


def test_a_blob_altered_on_the_server_is_not_used(
    recipes: Path, tmp_path: Path, nginx: Server, caplog: pytest.LogCaptureFixture
) -> None:
    a = one_precision(recipes, tmp_path / "a")
    build(
        a,
        Options(
            cache=tmp_path / "a" / "cache", out=tmp_path / "a" / "out", remote_cache=nginx.url()
        ),
    )
    for blob in (nginx.data / "cas").iterdir():
        blob.write_bytes(blob.read_bytes() + b"!")
    b = one_precision(recipes, tmp_path / "b")
    with caplog.at_level(logging.WARNING, logger="trtbuild"):
        second = build(
            b,
            Options(
                cache=tmp_path / "b" / "cache", out=tmp_path / "b" / "out", remote_cache=nginx.url()
            ),
        )
    assert not any(p.cached for t in second.targets for p in t.parts)
    assert any("does not match its digest" in r.getMessage() for r in caplog.records)
    assert engines(tmp_path / "b" / "out") == engines(tmp_path / "a" / "out")


def test_wrong_credentials_are_one_error_and_lose_nothing(
    recipes: Path, tmp_path: Path, nginx: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    a = one_precision(recipes, tmp_path / "a")
    out = tmp_path / "a" / "out"
    assert main(["run", str(a), "--out", str(out)]) == 0
    before = snapshot(out)
    (a.parent / "models" / "resnet.py").write_text(
        (a.parent / "models" / "resnet.py").read_text() + "\n# edit\n"
    )
    capsys.readouterr()
    assert main(["run", str(a), "--out", str(out), "--remote-cache", nginx.url("wrong")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[1].startswith("FAILED in"), err  # one error, then the verdict
    assert "credentials refused (HTTP 401 on HEAD" in err[0], err  # before any job started
    assert "wrong" not in err[0] and f"127.0.0.1:{nginx.port}/cache" in err[0]
    assert snapshot(out) == before


class Silent(threading.Thread):
    """A server that accepts connections and never answers: a cache that hangs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


@pytest.mark.parametrize("fault", ["down", "hanging"])
def test_a_cache_down_or_slow_is_one_warning(
    fault: str,
    recipes: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if fault == "hanging":
        silent = Silent()
        silent.start()
        port = silent.port
        monkeypatch.setenv("TRTBUILD_REMOTE_CACHE_TIMEOUT", "0.5")
    else:
        port = free_port()  # nothing listens there
    a = one_precision(recipes, tmp_path / "a")
    with caplog.at_level(logging.WARNING, logger="trtbuild"):
        result = build(a, Options(out=tmp_path / "out", remote_cache=f"http://127.0.0.1:{port}/c"))
    assert [p.cached for t in result.targets for p in t.parts] == [False]
    warnings = [r.getMessage() for r in caplog.records if "remote cache" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"remote cache http://127.0.0.1:{port}/c is unavailable (")
    assert ("timed out" in warnings[0]) == (fault == "hanging")
