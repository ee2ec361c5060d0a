"""Shared fixtures: the test hub server as a real process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .listening import free_port as free_port  # re-exported: tests import them from here
from .listening import wait_for_port as wait_for_port

ROOT = Path(__file__).resolve().parent.parent


class HubServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str = "/testhub") -> str:
        return self.base + path


@pytest.fixture(scope="session")
def hub_server() -> Iterator[HubServer]:
    """tests/hub_app.py served by our own runner, as a user would run it."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tests.hub_app", "--port", str(port)], cwd=ROOT, env=env)
    try:
        wait_for_port(port, process)
        yield HubServer(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


_outcomes = {"passed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        _outcomes["passed"] += 1
    elif report.skipped:
        _outcomes["skipped"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run in which nothing passed (all skipped, or nothing collected) is a failure."""
    if exitstatus == 0 and _outcomes["passed"] == 0:
        session.exitstatus = 1


# Fixtures defined apart, imported last as they use the helpers above: headless Chromium for
# the page tests, and the chat servers (session fixtures).
from .browser import browser, new_page, page_errors  # noqa: E402
from .chat_fixtures import (  # noqa: E402
    capped_chat_server,
    chat_server,
    entra_chat_server,
    entra_v1_chat_server,
    fake_ai,
    local_chat_server,
    openai_chat_server,
    tight_chat_server,
)
from .redis_server import redis_server  # noqa: E402

__all__ = [
    "browser",
    "new_page",
    "page_errors",
    "capped_chat_server",
    "chat_server",
    "entra_chat_server",
    "entra_v1_chat_server",
    "fake_ai",
    "local_chat_server",
    "openai_chat_server",
    "tight_chat_server",
    "redis_server",
]
