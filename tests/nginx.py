"""nginx from Debian as a remote cache (WebDAV PUT, basic auth) on 127.0.0.1 and a free port,
for the tests (test_remote.py) and benchmarks/cluster.py."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
USER, PASSWORD = "ci", "s3cret-pw"
CONFIG = """\
worker_processes 1;
daemon off;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            root {root}/data;
            dav_methods PUT DELETE;
            create_full_put_path on;
            auth_basic "trtbuild cache";
            auth_basic_user_file {root}/htpasswd;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Server:
    port: int
    data: Path  # what it serves: cas/ and ac/
    access_log: Path

    def url(self, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}/cache"

    def requests(self) -> list[str]:
        """'METHOD /path status' per request so far."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [
            " ".join([*line.split('"')[1].split()[:2], line.split('"')[2].split()[0]])
            for line in lines
        ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing() -> str | None:
    return None if Path(NGINX).is_file() else "nginx is not installed (apt-get install nginx)"


@contextmanager
def serve(root: Path) -> Iterator[Server]:
    """Run nginx with a generated config and htpasswd under `root` until the block ends."""
    (root / "data" / "cache").mkdir(parents=True)
    sha = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (root / "htpasswd").write_text(f"{USER}:{{SHA}}{sha}\n")
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    port = free_port()
    (root / "nginx.conf").write_text(CONFIG.format(root=root, port=port, user=user))
    proc = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"nginx did not start: {err}")
            time.sleep(0.05)
        yield Server(port, root / "data" / "cache", root / "access.log")
    finally:
        proc.terminate()
        proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
