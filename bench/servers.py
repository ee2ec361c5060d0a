"""Starting and stopping the servers under test, each alone on core 0.

Every run gets a fresh server process: RSS and CPU then belong to that run only, and a
client dropped by one run cannot haunt the next.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import benchvenv

ROOT = Path(__file__).resolve().parents[1]
SERVER_CORE = "0"
CLIENT_CORE = "1"
#: The three servers, in the order every repetition runs them.
KINDS = ("floor", "aiosignalr", "project")


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self, result: dict[str, Any]) -> dict[str, Any]:
        """The run's result, counted as failed if the server died during it."""
        if self.process.poll() is not None:
            result["errors"] = result.get("errors", 0) + 1
            result["error"] = f"server exited with {self.process.returncode}"
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def command(kind: str, app: str = "hub") -> list[str]:
    """The server's argv, without the port."""
    if kind == "floor":
        return [sys.executable, "-m", "bench.floor_server"]
    if kind == "aiosignalr":
        return [str(benchvenv.ensure()), "-m", "bench.aiosignalr_server"]
    if kind == "project":
        return [sys.executable, "-m", "bench.project_server", "--app", app]
    if kind == "relay-floor":
        return [sys.executable, "-m", "bench.relay_floor"]
    if kind == "upstream":
        return [sys.executable, "-m", "bench.fake_upstream"]
    if kind == "azure-double":
        from .azure_double import ACCESS_KEY

        return [sys.executable, "-m", "tests.support.azure_service", "--key", ACCESS_KEY]
    raise ValueError(kind)


def base_kind(kind: str) -> str:
    """The server a run's kind starts: `relay-floor` is the floor's, `project-redis`,
    `project-azure`, `project-otel` and `project-otel-spans` the project."""
    return kind.removeprefix("relay-").split("-", 1)[0]


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv]


def start(
    kind: str,
    *,
    app: str = "hub",
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    core: str = SERVER_CORE,
    timeout: float = 30.0,
    log: Path | None = None,
) -> Server:
    """Start a server (on core 0 unless told) and wait for its `listening on` line (the
    service double's reads `ServiceDouble listening on ...`); with `log`, its stderr (where
    logging writes) goes to that file."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with contextlib.ExitStack() as closing:
        stderr = closing.enter_context(log.open("w")) if log is not None else None
        process = subprocess.Popen(
            pinned(core, [*command(kind, app), "--port", "0", *args]),
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith(("listening on", "ServiceDouble listening on")):
            port = int(line.strip().rsplit(":", 1)[1])
            # keep reading, so a chatty server never blocks on a full pipe
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return Server(kind, process, port)
    process.kill()
    raise RuntimeError(f"{kind} server did not start")
