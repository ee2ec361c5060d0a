"""Debian's nginx in front of chat server instances, with the config docs/scale-out.md shows.

`docs/nginx/signalr-chat.conf` is used as it stands, but for its `listen` (a free loopback
port) and its upstream `server` lines (the instances a test started). nginx runs in the
foreground (`daemon off`) with its pid, logs and temp files in a directory of its own. The
access log records, per request, the instance that answered and the affinity key, so a test
can see where each client's requests went.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .listening import free_port, wait_for_port
from .paths import ROOT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONFIG = ROOT / "docs" / "nginx" / "signalr-chat.conf"

_UPSTREAM_SERVER = re.compile(r"^(\s*)server \S+:\d+( [^;]*)?;\n", re.MULTILINE)
_LISTEN = re.compile(r"^(\s*)listen 80;$", re.MULTILINE)

_MAIN = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams escape=json '{{"method":"$request_method","uri":"$uri","id":"$arg_id",'
        '"status":"$status","upstream":"$upstream_addr","affinity":"$signalr_affinity"}}';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/signalr-chat.conf;
}}
"""


def site_config(listen_port: int, upstream_ports: Sequence[int]) -> str:
    """The documented config, listening on `listen_port`, in front of `upstream_ports`."""
    text = CONFIG.read_text()
    servers = list(_UPSTREAM_SERVER.finditer(text))
    assert servers, f"{CONFIG} has no upstream server lines"
    indent, options = servers[0].group(1), servers[0].group(2) or ""
    ours = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in upstream_ports)
    text = text[: servers[0].start()] + ours + text[servers[-1].end() :]
    text, listens = _LISTEN.subn(rf"\1listen 127.0.0.1:{listen_port};", text)
    assert listens == 1, f"{CONFIG} must have exactly one `listen 80;`"
    return text


class NginxProxy:
    def __init__(self, directory: Path, upstream_ports: Sequence[int]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.upstream_ports = list(upstream_ports)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxProxy:
        if not os.path.exists(NGINX):
            pytest.fail("nginx is not installed: `make test` installs it (Debian package nginx)")
        (self.dir / "signalr-chat.conf").write_text(site_config(self.port, self.upstream_ports))
        # as root, nginx's workers would run as `nobody`, who cannot write to our directory
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(_MAIN.format(dir=self.dir, user=user))
        argv = [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.dir / "nginx.conf")]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t:\n{check.stderr}"
        self.process = subprocess.Popen([*argv, "-g", "daemon off;"])
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def requests(self) -> list[dict[str, Any]]:
        """Every request nginx has logged so far (a WebSocket's once it has closed)."""
        log = self.dir / "access.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def error_log(self) -> str:
        log = self.dir / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""
