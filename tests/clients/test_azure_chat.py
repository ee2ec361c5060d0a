"""The chat behind Azure SignalR Service (its double): AZURE_SIGNALR_CONNECTION_STRING.

A `python -m signalr_chat` process with the connection string dials the double; the stock
client negotiates with the chat, follows the redirect and chats through the double. The seed
contracts' suites (SendMessage with its five events, ClearHistory, GetHistory; AskAi with
typing/partial/completed; StreamMessage) run unchanged over WebSockets in JSON and
MessagePack, the transport the double offers. A wrong key leaves the chat not ready, with
the refusal in /readyz and one line in its log.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.azure_fixtures import DoubleProcess
from tests.support.chat_fixtures import (
    ChatServer,
    FakeAI,
    assert_clean_log,
    azure_settings,
    serve_chat,
    server_env,
    token_for,
)
from tests.support.conditions import until
from tests.support.node_runner import JS_DIR, FileRun, run_node_suite

SEED_SUITES = [JS_DIR / "chat" / "seed1.test.mjs", JS_DIR / "chat" / "seed2.test.mjs"]
HANDOVER = JS_DIR / "chat_azure" / "handover.test.mjs"
NODE_TIMEOUT = 240


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleProcess]:
    double = DoubleProcess()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture(scope="module")
def service_chat(
    fake_ai: FakeAI, double: DoubleProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChatServer]:
    settings = azure_settings(
        fake_ai, reply_grace_seconds="2", azure_signalr_connection_string=double.connection_string()
    )
    for server in serve_chat(fake_ai, tmp_path_factory.mktemp("azure-chat"), **settings):
        double.wait_servers("chathub", 1, connections=5)
        double.wait_servers("chat", 1, connections=5)
        yield server


@pytest.fixture(scope="module")
def seed_suites(service_chat: ChatServer, fake_ai: FakeAI) -> dict[Path, FileRun]:
    tokens = {user: token_for(user) for user in ("alice", "bob", "carol", "dave")}
    env = {
        **os.environ,
        "SIGNALR_BEHIND_SERVICE": "1",
        "SIGNALR_TRANSPORTS": "WebSockets",
        "SIGNALR_BASE_URL": service_chat.base,
        "CHAT_URL": service_chat.base,
        "FAKE_AI_URL": fake_ai.base,
        "CHAT_TOKENS": json.dumps(tokens),
    }
    return run_node_suite(SEED_SUITES, env, NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", SEED_SUITES, ids=[p.name.removesuffix(".test.mjs") for p in SEED_SUITES])
def test_seed_contracts_through_the_service(js_file: Path, seed_suites: dict[Path, FileRun]) -> None:
    seed_suites[js_file].check(NODE_TIMEOUT)


def _readyz(base: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_chat_is_ready_once_its_server_connections_are_up(service_chat: ChatServer) -> None:
    assert _readyz(service_chat.base) == (200, {"status": "ready"})


async def test_a_wrong_key_leaves_the_chat_not_ready_with_the_refusal(
    fake_ai: FakeAI, double: DoubleProcess, tmp_path: Path
) -> None:
    wrong = double.connection_string(key="W" * 44)
    log = tmp_path / "server.log"
    settings = azure_settings(fake_ai, azure_signalr_connection_string=wrong, history_db=str(tmp_path / "h.db"))
    server = ChatServer(server_env(fake_ai, **settings), log=log).start()
    try:
        await until(lambda: "refused" in str(_readyz(server.base)[1]), "the refusal in /readyz")
        status, body = _readyz(server.base)
        assert status == 503
        problem = str(body["problems"]["azure_signalr"])  # type: ignore[index]
        assert "refused by Azure SignalR Service: HTTP 401" in problem, problem
        # the pool retries with back-off (1 s, 2 s, ...): wait for a retry, then count the lines
        await until(lambda: len(double.state()["refusals"]) >= 2 * 5 + 2, "retries after the first", timeout=15)
    finally:
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "refused by Azure SignalR Service" in line]
    assert len(lines) == 2, f"one line per hub, not one per retry:\n{text}"  # chathub and chat


def test_sigterm_hands_the_chats_clients_over_to_another_instance(fake_ai: FakeAI, tmp_path: Path) -> None:
    """The drain's handover: the service's shutdown handshake moves the clients (the JS file
    checks they never notice), then the instance ends cleanly."""
    double = DoubleProcess()
    servers: list[ChatServer] = []
    try:
        for name in ("a", "b"):
            settings = azure_settings(
                fake_ai, azure_signalr_connection_string=double.connection_string(), history_store="memory"
            )
            servers.append(ChatServer(server_env(fake_ai, **settings), log=tmp_path / f"{name}.log").start())
        double.wait_servers("chathub", 2, connections=5)
        first, second = servers
        assert first.process is not None
        env = {
            **os.environ,
            "SIGNALR_BEHIND_SERVICE": "1",
            "SIGNALR_TRANSPORTS": "WebSockets",
            "SIGNALR_BASE_URL": first.base,
            "CHAT_INSTANCES": f"{first.base},{second.base}",
            "CHAT_FIRST_PID": str(first.process.pid),
            "AZURE_DOUBLE_URL": double.url,
        }
        run_node_suite([HANDOVER], env, NODE_TIMEOUT)[HANDOVER].check(NODE_TIMEOUT)
        assert first.process.wait(30) == 0, "the drained instance exits cleanly"
        assert not double.state()["stray"], "nothing was written for a client that had moved"
    finally:
        for server in servers:
            server.stop()
        double.stop()
    for name in ("a", "b"):
        assert_clean_log(tmp_path / f"{name}.log")
