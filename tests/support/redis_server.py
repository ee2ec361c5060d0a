"""A real `redis-server` on a free loopback port, which a test can kill, restart and pause.

No persistence and no config file: every start is an empty Redis, as after a crash of a
cache-only deployment. `restart()` comes back on the same port, so clients that hold the
URL reconnect by themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from .listening import free_port, wait_for_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """`core`: run it under `taskset -c core` (the benchmark keeps Redis off the servers' core)."""

    def __init__(self, port: int | None = None, core: str | None = None) -> None:
        self.port = port or free_port()
        self.core = core
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="redis-test-")

    def start(self) -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.fail("redis-server is not installed: `make test` installs it (Debian package redis-server)")
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.core is not None:
            argv = ["taskset", "-c", self.core, *argv]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: Redis vanishes mid-conversation, its data with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Killed, then back, empty, on the same port."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung or swapping Redis)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty Redis for one test (starting one takes milliseconds)."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
