"""The stock @microsoft/signalr client against app servers behind Azure SignalR Service (its double).

Each client negotiates with an app server, follows the redirect to the double, and from then
on talks to the double, which carries its traffic to the app server over the service protocol.
The hub conformance suites run unchanged (only what needs a direct connection to the app is
skipped, SIGNALR_BEHIND_SERVICE), the scale-out suites run on three app servers behind one
double, and tests/js/azure/ moves clients between app servers (SIGTERM) and cuts server
connections. The double offers WebSockets only (SIGNALR_TRANSPORTS).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.azure_fixtures import AppProcess, DoubleProcess
from tests.support.chat_fixtures import FakeAI, server_env
from tests.support.fake_ai import DEFAULT_BEARER_TOKEN
from tests.support.node_runner import JS_DIR, FileRun, run_node_suite

#: The hub suites that hold behind the service (the rest test transports the double does not offer).
HUB_SUITES = [
    JS_DIR / f"{name}.test.mjs"
    for name in ("auth", "client_results", "connection", "errors", "groups", "invocation", "streaming", "types")
]
SCALE_OUT = sorted((JS_DIR / "scale_out").glob("*.test.mjs"))
AZURE = sorted((JS_DIR / "azure").glob("*.test.mjs"))
NODE_TIMEOUT = 180
BEHIND_SERVICE = {"SIGNALR_BEHIND_SERVICE": "1", "SIGNALR_TRANSPORTS": "WebSockets"}


def _clean(logs: list[str]) -> None:
    for log in logs:
        assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def hub_suites() -> Iterator[dict[Path, FileRun]]:
    double = DoubleProcess()
    app = AppProcess("tests.support.hub_app", "--azure-signalr", double.connection_string())
    try:
        for hub in ("testhub", "authhub", "detailed", "parallel"):
            double.wait_servers(hub, 1, connections=2)
        env = {**os.environ, **BEHIND_SERVICE, "SIGNALR_BASE_URL": app.base}
        yield run_node_suite(HUB_SUITES, env, NODE_TIMEOUT)
    finally:
        app.stop()  # its log has the tracebacks of the hub methods the suites make fail on purpose
        double.stop()


def _instances(double: DoubleProcess, names: str) -> list[AppProcess]:
    instances = [
        AppProcess("tests.support.scale_out_app", "--azure-signalr", double.connection_string(), "--name", name)
        for name in names
    ]
    double.wait_servers("scaled", len(instances), connections=2)
    return instances


@pytest.fixture(scope="module")
def scale_out_suites() -> Iterator[dict[Path, FileRun]]:
    double = DoubleProcess()
    instances = _instances(double, "ABC")
    a, b, c = instances
    try:
        env = {
            **os.environ,
            **BEHIND_SERVICE,
            "SIGNALR_BASE_URL": a.base,
            "SIGNALR_INSTANCES": f"{a.base},{b.base}",
            "SIGNALR_KILLABLE": f"{c.base},{c.pid}",
        }
        yield run_node_suite(SCALE_OUT, env, NODE_TIMEOUT)
    finally:
        logs = [instance.stop() for instance in instances]
        double.stop()
    _clean(logs[:2])  # C was killed


@pytest.fixture(scope="module")
def azure_suites() -> Iterator[tuple[dict[Path, FileRun], list[str]]]:
    double = DoubleProcess()
    instances = _instances(double, "ABC")
    try:
        env = {
            **os.environ,
            **BEHIND_SERVICE,
            "AZURE_DOUBLE_URL": double.url,
            "SIGNALR_BASE_URL": instances[1].base,
            "SIGNALR_INSTANCES": ",".join(i.base for i in instances),
            "AZURE_INSTANCE_PIDS": ",".join(str(i.pid) for i in instances),
        }
        runs = run_node_suite(AZURE, env, NODE_TIMEOUT)
    finally:
        logs = [instance.stop() for instance in instances]
        state = double.state()
        double.stop()
    yield runs, logs
    assert not state["stray"], f"an app server wrote for a client it no longer owns: {state['stray']}"
    assert not state["protocol_errors"], state["protocol_errors"]


#: Behind a service that takes only Microsoft Entra ID: the server connections' bearer and the key
#: that signs clients' tokens come through azure-identity (DefaultAzureCredential, as
#: AuthType=azure asks, narrowed to managed identity) from the fake token endpoint.
ENTRA_SUITES = [JS_DIR / "invocation.test.mjs", JS_DIR / "client_results.test.mjs"]


@pytest.fixture(scope="module")
def entra_suites(fake_ai: FakeAI) -> Iterator[dict[Path, FileRun]]:
    double = DoubleProcess("entra-only-key-" + "k" * 29, "--entra-token", DEFAULT_BEARER_TOKEN)
    endpoint = f"Endpoint=http://127.0.0.1;Port={double.port};AuthType=azure;Version=1.0;"
    env = server_env(fake_ai)  # AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential, the fake's endpoint
    app = AppProcess("tests.support.hub_app", "--azure-signalr", endpoint, env=env)
    try:
        double.wait_servers("testhub", 1, connections=2)
        env = {**os.environ, **BEHIND_SERVICE, "SIGNALR_BASE_URL": app.base}
        yield run_node_suite(ENTRA_SUITES, env, NODE_TIMEOUT)
        assert any(r["query"].get("resource") == "https://signalr.azure.com" for r in fake_ai.token_requests())
        assert not double.state()["refusals"], "every token the app presented was taken"
    finally:
        app.stop()
        double.stop()


@pytest.mark.parametrize("js_file", ENTRA_SUITES, ids=[p.name.removesuffix(".test.mjs") for p in ENTRA_SUITES])
def test_entra_id_behind_the_service(js_file: Path, entra_suites: dict[Path, FileRun]) -> None:
    entra_suites[js_file].check(NODE_TIMEOUT)


def test_suites_exist() -> None:
    assert all(path.is_file() for path in HUB_SUITES)
    assert SCALE_OUT and AZURE


@pytest.mark.parametrize("js_file", HUB_SUITES, ids=[p.name.removesuffix(".test.mjs") for p in HUB_SUITES])
def test_hub_suite_behind_the_service(js_file: Path, hub_suites: dict[Path, FileRun]) -> None:
    hub_suites[js_file].check(NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", SCALE_OUT, ids=[p.name.removesuffix(".test.mjs") for p in SCALE_OUT])
def test_scale_out_behind_the_service(js_file: Path, scale_out_suites: dict[Path, FileRun]) -> None:
    scale_out_suites[js_file].check(NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", AZURE, ids=[p.name.removesuffix(".test.mjs") for p in AZURE])
def test_azure_suite(js_file: Path, azure_suites: tuple[dict[Path, FileRun], list[str]]) -> None:
    runs, logs = azure_suites
    runs[js_file].check(NODE_TIMEOUT)
    _clean(logs)
