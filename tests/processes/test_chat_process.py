"""The chat server as a process: history across restarts, clean shutdown, secrets kept out of
logs, and configuration mistakes reported plainly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.chat_fixtures import (
    JWT_SECRET,
    ChatServer,
    FakeAI,
    assert_clean_log,
    azure_settings,
    server_env,
    token_for,
)
from tests.support.fake_ai import DEFAULT_API_KEY, DEFAULT_BEARER_TOKEN
from tests.support.paths import JS_DIR, ROOT

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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("credential", ["api-key", "entra"])
def test_secrets_stay_out_of_debug_logs(fake_ai: FakeAI, tmp_path: Path, credential: str) -> None:
    settings = azure_settings(fake_ai, history_db=str(tmp_path / "h.db"))
    if credential == "entra":
        del settings["azure_openai_api_key"]
    env = server_env(fake_ai, **settings)
    env["LOG_LEVEL"] = "DEBUG"
    log = tmp_path / "server.log"
    server = ChatServer(env, log=log).start()
    token = token_for("dbg")
    try:
        reply = chat(server, token, "hello [[429-once]]", "again")
        assert reply["errors"] == []
        # browsers send the token in the query string (WebSockets, EventSource cannot set headers)
        request = urllib.request.Request(f"{server.base}/chatHub/negotiate?negotiateVersion=1&access_token={token}")
        with urllib.request.urlopen(request, data=b"", timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()
    text = log.read_text(errors="replace")
    assert "chat/completions" in text, "debug logging was on (the SDK logged its requests)"
    assert "access_token=***" in text, "the access log line of the negotiate is there, masked"
    for secret in (DEFAULT_API_KEY, DEFAULT_BEARER_TOKEN, JWT_SECRET, token.split(".")[2]):
        assert secret not in text, f"{secret[:12]}... appears in the log"
    assert_clean_log(log)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"ai_provider": "azure"}, "AZURE_OPENAI_ENDPOINT is required"),
        ({"azure_openai_endpoint": "http://127.0.0.1:9"}, "AZURE_OPENAI_DEPLOYMENT"),
        ({"local_model_path": "/nonexistent/model.gguf"}, "local model not found: /nonexistent/model.gguf"),
        ({"max_message_length": "0"}, "max_message_length"),
    ],
)
def test_configuration_mistakes_are_reported(
    fake_ai: FakeAI, tmp_path: Path, settings: dict[str, str], expected: str
) -> None:
    env = server_env(fake_ai, history_db=str(tmp_path / "h.db"), **settings)
    result = subprocess.run(
        [sys.executable, "-m", "signalr_chat", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, "a configuration mistake is a message, not a crash"
