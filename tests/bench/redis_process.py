"""The scale-out scenario's redis-server: pinned to a core, empty, and asked for its figures.

Started as tests/redis_server.py starts one (loopback, a free port, no persistence), but
under `taskset`, so Redis shares core 1 with the load generator and never the servers'
core; that module is a pytest fixture module and cannot be imported outside pytest.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import redis

from . import servers

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProcess:
    def __init__(self, core: str = servers.CLIENT_CORE) -> None:
        self.core = core
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 15.0) -> RedisProcess:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
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
        self.process = subprocess.Popen(
            servers.pinned(self.core, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with redis.Redis.from_url(self.url, socket_timeout=1) as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def figures(self, channel: bytes | None = None) -> dict[str, Any]:
        return figures(self.url, channel)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self._dir, ignore_errors=True)


def figures(url: str, channel: bytes | None = None) -> dict[str, Any]:
    """What Redis says about itself: memory, channels, PUBLISH calls so far, and the
    subscribers of `channel` (PUBSUB NUMSUB; a hub's `all` channel has one per instance)."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        memory: dict[str, Any] = client.info("memory")
        stats: dict[str, Any] = client.info("stats")
        commands: dict[str, Any] = client.info("commandstats")
        result = {
            "used_memory": int(memory["used_memory"]),
            "pubsub_channels": int(stats["pubsub_channels"]),
            "publish_calls": int(commands.get("cmdstat_publish", {}).get("calls", 0)),
        }
        if channel is not None:
            numsub = client.pubsub_numsub(channel)
            result["channel_subscribers"] = int(numsub[0][1]) if numsub else 0
        return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
