"""The test hub server (tests/support/hub_app.py) as a real process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .listening import free_port, wait_for_port
from .paths import ROOT


class HubServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str = "/testhub") -> str:
        return self.base + path


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """tests/support/hub_app.py served by our own runner, as a user would run it."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tests.support.hub_app", "--port", str(port)], cwd=ROOT, env=env)
    try:
        wait_for_port(port, process)
        yield HubServer(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
