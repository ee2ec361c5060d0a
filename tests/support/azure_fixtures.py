"""Processes for the tests behind Azure SignalR Service: the service double and app servers.

The double (tests/support/azure_service.py) runs as a process of its own, as the real service is a
separate party; app servers (the test hubs, the scaled-out hub, the chat) run as processes
that dial it, and the stock client, redirected by their negotiate, connects to the double.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

from .chat_fixtures import stop_process
from .listening import free_port, wait_for_port
from .paths import ROOT

#: The emulator's well-known key (notes §8): any 44 characters would do.
ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"


class DoubleProcess:
    """`python -m tests.support.azure_service` on a free loopback port."""

    def __init__(self, key: str = ACCESS_KEY, *extra: str) -> None:
        self.key = key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "tests.support.azure_service", "--port", str(self.port), "--key", key, *extra]
        self.process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for_port(self.port, self.process)

    def connection_string(self, key: str | None = None) -> str:
        return f"Endpoint=http://127.0.0.1;Port={self.port};AccessKey={key or self.key};Version=1.0;"

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/_double/state")  # type: ignore[no-any-return]

    def wait_servers(self, hub: str, count: int, connections: int = 1, timeout: float = 20) -> None:
        """Until `count` app servers each have `connections` server connections to `hub` (else 408)."""
        self._call("GET", f"/_double/wait-servers?hub={hub}&count={count}&connections={connections}&timeout={timeout}")

    def stop(self) -> None:
        stop_process(self.process)


class AppProcess:
    """An app server process (`python -m MODULE --port N ...`) behind the double."""

    def __init__(self, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", module, "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_port(self.port, self.process)  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> str:
        """Stops it (SIGTERM, the graceful drain); returns what it logged."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, stderr = self.process.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr or ""
