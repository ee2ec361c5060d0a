"""The chat through the stock @microsoft/signalr client: `tests/js/chat/*.test.mjs` under
Node, against `python -m signalr_chat` processes talking to the fake Azure OpenAI.

The Node files get every server's address in the environment (see `chat_env`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .chat_fixtures import ChatServer, FakeAI, token_for

JS_DIR = Path(__file__).resolve().parent / "js"
CHAT_JS_FILES = sorted((JS_DIR / "chat").glob("*.test.mjs"))
NODE_TIMEOUT = 240


def test_chat_js_suite_exists() -> None:
    assert CHAT_JS_FILES, f"no *.test.mjs files in {JS_DIR / 'chat'}"


@pytest.fixture(scope="module")
def chat_env(
    fake_ai: FakeAI,
    chat_server: ChatServer,
    tight_chat_server: ChatServer,
    entra_chat_server: ChatServer,
    entra_v1_chat_server: ChatServer,
    openai_chat_server: ChatServer,
    local_chat_server: ChatServer,
) -> dict[str, str]:
    tokens = {user: token_for(user) for user in ("alice", "bob", "carol", "dave")}
    tokens["expired"] = token_for("eve", lifetime=-60)
    return {
        **os.environ,
        "SIGNALR_BASE_URL": chat_server.base,
        "CHAT_URL": chat_server.base,
        "CHAT_TIGHT_URL": tight_chat_server.base,
        "CHAT_ENTRA_URL": entra_chat_server.base,
        "CHAT_ENTRA_V1_URL": entra_v1_chat_server.base,
        "CHAT_OPENAI_URL": openai_chat_server.base,
        "CHAT_LOCAL_URL": local_chat_server.base,
        "FAKE_AI_URL": fake_ai.base,
        "CHAT_TOKENS": json.dumps(tokens),
    }


@pytest.mark.parametrize("js_file", CHAT_JS_FILES, ids=[p.name.removesuffix(".test.mjs") for p in CHAT_JS_FILES])
def test_chat_js(js_file: Path, chat_env: dict[str, str]) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    try:
        result = subprocess.run(
            [node, "--test", "--test-reporter=spec", str(js_file.relative_to(JS_DIR))],
            cwd=JS_DIR,
            env=chat_env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{js_file.name} did not finish in {NODE_TIMEOUT} s\n{exc.stdout}\n{exc.stderr}")
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"{js_file.name} failed (exit {result.returncode})\n{output}"
