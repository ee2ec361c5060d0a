"""The chat through the stock @microsoft/signalr client: `tests/js/chat/*.test.mjs` under
Node, against `python -m signalr_chat` processes talking to the fake Azure OpenAI.

The Node files get every server's address in the environment (see `chat_env`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .chat_fixtures import ChatServer, FakeAI, token_for
from .node_runner import JS_DIR, run_node_test

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
    run_node_test(js_file, chat_env, NODE_TIMEOUT)
