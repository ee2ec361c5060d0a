"""Signed-in users' history outlives the server process (SQLite); shutdown is clean."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from .chat_fixtures import ChatServer, FakeAI, assert_clean_log, azure_settings, server_env, token_for

JS_DIR = Path(__file__).resolve().parent / "js"

# One connection of the stock JS client: send the messages, print the history as JSON.
CLIENT = """
import * as signalR from "@microsoft/signalr";
const [url, token, ...messages] = process.argv.slice(1);
const options = token ? { accessTokenFactory: () => token } : {};
const c = new signalR.HubConnectionBuilder().withUrl(url, options).configureLogging(signalR.LogLevel.None).build();
const errors = [];
c.on("ReceiveError", (text) => { errors.push(text); });
await c.start();
for (const message of messages) await c.invoke("SendMessage", message);
const history = await c.invoke("GetHistory");
await c.stop();
console.log(JSON.stringify({ history, errors }));
"""


def chat(server: ChatServer, token: str | None, *messages: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    result = subprocess.run(
        [node, "--input-type=module", "-e", CLIENT, f"{server.base}/chatHub", token or "", *messages],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.timeout(120)
def test_signed_in_history_survives_a_restart(fake_ai: FakeAI, tmp_path: Path) -> None:
    nonce = uuid.uuid4().hex[:8]
    log = tmp_path / "server.log"
    server = ChatServer(server_env(fake_ai, **azure_settings(fake_ai, history_db=str(tmp_path / "h.db"))), log=log)
    server.start()
    try:
        alice = token_for("alice")
        first = chat(server, alice, f"remember {nonce}")
        assert first["errors"] == []
        assert [m["role"] for m in first["history"]] == ["user", "assistant"]
        anonymous = chat(server, None, f"anonymous {nonce}")
        assert len(anonymous["history"]) == 2

        server.restart()

        again = chat(server, alice, f"and now {nonce}")
        assert again["history"][:2] == first["history"], "alice's first turn came back from SQLite"
        assert len(again["history"]) == 4
        upstream = fake_ai.requests_with(f"and now {nonce}")[-1]["body"]["messages"]
        assert [m["role"] for m in upstream] == ["system", "user", "assistant", "user"]
        assert upstream[1]["content"] == f"remember {nonce}"
        assert chat(server, None)["history"] == [], "a new anonymous connection starts empty"
        assert chat(server, token_for("bob"))["history"] == [], "users are isolated"
    finally:
        server.stop()
    assert_clean_log(log)
