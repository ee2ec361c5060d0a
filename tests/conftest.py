"""The root conftest: the shared fixtures come from tests/support/ as plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

# Headless Chromium for the page tests, the chat servers and the fake Azure OpenAI (session
# fixtures), redis-server, and the test hub server: each a process on a free loopback port.
pytest_plugins = [
    "tests.support.browser",
    "tests.support.chat_fixtures",
    "tests.support.redis_server",
    "tests.support.hub_server",
]

# `make check` runs the tests that start no server process, Chromium, redis-server or nginx
# (`-m "not processes"`). These do: every test in the folders of real components, a test that
# uses a fixture starting one (fixturenames holds what its fixtures use in turn), a test on a
# Redis store, and the few named below.
PROCESS_FOLDERS = {"processes", "clients", "browser", "scale_out"}
PROCESS_FIXTURES = {"hub_server", "fake_ai", "redis_server", "browser"}
#: the tests outside those folders that start a server process of their own
PROCESS_TESTS = {"tests/chat/test_fake_ai.py::test_runs_as_a_process"}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        params = getattr(item, "callspec", None)
        on_redis = params is not None and "redis" in params.params.values()
        starts = folder in PROCESS_FOLDERS or item.nodeid in PROCESS_TESTS or on_redis
        if starts or PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.processes)


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
