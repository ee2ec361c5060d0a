"""The root conftest: the shared fixtures come from tests/support/ as plugins."""

from __future__ import annotations

import pytest

# Headless Chromium for the page tests, the chat servers and the fake Azure OpenAI (session
# fixtures), redis-server, and the test hub server: each a process on a free loopback port.
pytest_plugins = [
    "tests.support.browser",
    "tests.support.chat_fixtures",
    "tests.support.redis_server",
    "tests.support.hub_server",
]

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
