"""Health endpoints and the graceful drain on SIGTERM.

In process: what /healthz and /readyz answer, and the 503 a draining endpoint gives a
negotiate. As a process: SIGTERM while 50 stock JS clients stream slow replies among 200
connections; /readyz turns 503 before any client is closed, a late client is refused,
every reply stops at the limit and is stored as far as it got, every client gets Close
with allowReconnect, and the process exits 0 within the bound.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from signalr_chat.app.application import HEALTH, create_app
from signalr_chat.app.drain import COLLECT_SECONDS, STOP_GRACE_SECONDS, GracefulDrain
from signalr_chat.hosting.server import DRAIN
from tests.support.chat_fixtures import (
    ChatServer,
    FakeAI,
    assert_clean_log,
    azure_settings,
    offline_settings,
    server_env,
    token_for,
)
from tests.support.node_runner import JS_DIR

STREAMS = 50
CONNECTIONS = 200
DRAIN_LIMIT = 2.0
#: The drain's bound, plus aiohttp's shutdown_timeout for the last handlers.
EXIT_BOUND = DRAIN_LIMIT + STOP_GRACE_SECONDS + COLLECT_SECONDS + 5


async def test_health_and_readiness(aiohttp_client: Any) -> None:
    app = create_app(offline_settings())
    client: TestClient[Any, Any] = await aiohttp_client(app)
    live = await client.get("/healthz")
    assert (live.status, await live.text()) == (200, "ok")
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})
    assert ready.headers["Cache-Control"] == "no-store"

    backplane = "disconnected"
    app[HEALTH].add_check("backplane", lambda: backplane)
    failing = await client.get("/readyz")
    assert failing.status == 503
    assert await failing.json() == {"status": "not ready", "problems": {"backplane": "disconnected"}}
    live = await client.get("/healthz")
    assert live.status == 200, "a dependency's trouble is not the process's: liveness holds"
    backplane = None  # type: ignore[assignment]
    assert (await client.get("/readyz")).status == 200


async def test_a_draining_endpoint_refuses_new_connections(aiohttp_client: Any) -> None:
    app = create_app(offline_settings())
    client: TestClient[Any, Any] = await aiohttp_client(app)
    open_before = await client.post("/chatHub/negotiate?negotiateVersion=1")
    assert open_before.status == 200
    token = (await open_before.json())["connectionToken"]

    drain = app[DRAIN]
    assert isinstance(drain, GracefulDrain)
    drain.begin()
    for endpoint_path in ("/chatHub", "/chat"):
        refused = await client.post(f"{endpoint_path}/negotiate?negotiateVersion=1")
        assert (refused.status, await refused.text()) == (503, "Server is shutting down")
    assert (await client.get("/readyz")).status == 503
    # skipNegotiation WebSockets are new connections too
    skipped = await client.get("/chatHub", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert skipped.status == 503
    # a connection negotiated before the drain still reaches its transport
    poll = await client.get(f"/chatHub?id={token}")
    assert poll.status == 200


def readyz(server: ChatServer) -> int:
    try:
        with urllib.request.urlopen(f"{server.base}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def stored_replies(db: Path) -> dict[str, list[tuple[str, str]]]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT conversation, role, content FROM messages ORDER BY id").fetchall()
    found: dict[str, list[tuple[str, str]]] = {}
    for conversation, role, content in rows:
        found.setdefault(conversation, []).append((role, content))
    return found


@dataclass
class Drained:
    result: dict[str, Any]
    exit_code: int
    took: float
    stored: dict[str, list[tuple[str, str]]]
    log: str


def drain_during_replies(
    fake: FakeAI, tmp_path: Path, *, streams: int, idle: int, marker: str, limit: float, bound: float
) -> Drained:
    """SIGTERM once `streams` replies to `{marker} drain-{i}` have tokens; what everyone saw."""
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    db = tmp_path / "history.sqlite3"
    env = server_env(fake, **azure_settings(fake, history_db=str(db), drain_timeout_seconds=str(limit)))
    env["LOG_LEVEL"] = "INFO"
    log = tmp_path / "server.log"
    server = ChatServer(env, log=log).start()
    clients = subprocess.Popen(
        [node, "chat/drain_clients.mjs"],
        cwd=JS_DIR,
        env={
            **env,
            "SIGNALR_BASE_URL": server.base,
            "DRAIN_TOKENS": json.dumps([token_for(f"drain{i}") for i in range(streams)]),
            "DRAIN_IDLE": str(idle),
            "DRAIN_MARKER": marker,
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert clients.stdin is not None and clients.stdout is not None
    try:
        assert clients.stdout.readline().strip() == "streaming"
        assert readyz(server) == 200
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while readyz(server) != 503:
            pass
        clients.stdin.write("draining\n")
        clients.stdin.flush()
        result = json.loads(clients.stdout.readline())
        exit_code = server.process.wait(timeout=bound)
        took = time.monotonic() - signalled
        clients.wait(timeout=30)
    finally:
        if clients.poll() is None:
            clients.kill()
        server.stop()
    text = log.read_text()
    assert_clean_log(log)
    return Drained(result, exit_code, took, stored_replies(db), text)


def assert_everyone_told_to_reconnect(drained: Drained, connections: int) -> None:
    result = drained.result
    assert drained.exit_code == 0
    assert result["closedEarly"] == 0, "/readyz turned 503 before any client was closed"
    assert "Server is shutting down" in result["refused"] and "503" in result["refused"], result["refused"]
    assert len(result["clients"]) == connections
    for client in result["clients"]:
        assert client["closeMessage"], client
        assert client["reconnecting"] == {"error": None}, f"Close(allowReconnect) starts a clean reconnect: {client}"


@pytest.mark.timeout(240)
def test_sigterm_stops_replies_at_the_limit_and_stores_them(fake_ai: FakeAI, tmp_path: Path) -> None:
    """200 connections, 50 of them streaming 20-second replies, a 2-second limit."""
    drained = drain_during_replies(
        fake_ai, tmp_path, streams=STREAMS, idle=CONNECTIONS - STREAMS, marker="[[slow]]", limit=2, bound=EXIT_BOUND
    )
    assert drained.took <= EXIT_BOUND
    assert_everyone_told_to_reconnect(drained, CONNECTIONS)
    for index, client in enumerate(drained.result["clients"][:STREAMS]):
        reply = client["reply"]
        assert reply["error"] is None and reply["ended"], f"the reply ended normally: {client}"
        assert 3 <= len(reply["tokens"]) < 400, "stopped at the limit, not finished"
        assert drained.stored[f"user:drain{index}"] == [
            ("user", f"[[slow]] drain-{index}"),
            ("assistant", "".join(reply["tokens"])),
        ], "stored exactly as far as the client got"
    assert "drain limit of 2 s reached: 50 replies stopped" in drained.log, drained.log[-3000:]


@pytest.mark.timeout(240)
def test_sigterm_lets_replies_within_the_limit_finish(fake_ai: FakeAI, tmp_path: Path) -> None:
    """Replies of 300 tokens (1.5 s) under a 20-second limit finish whole before Close."""
    drained = drain_during_replies(
        fake_ai,
        tmp_path,
        streams=5,
        idle=0,
        marker="[[tokens:300]]",
        limit=20,
        bound=20 + STOP_GRACE_SECONDS + COLLECT_SECONDS + 5,
    )
    assert_everyone_told_to_reconnect(drained, 5)
    for index, client in enumerate(drained.result["clients"]):
        reply = client["reply"]
        assert reply["error"] is None and reply["ended"]
        assert len(reply["tokens"]) == 300, "the whole reply, before the Close"
        assert drained.stored[f"user:drain{index}"][1] == ("assistant", "".join(reply["tokens"]))
    assert "drain limit" not in drained.log
