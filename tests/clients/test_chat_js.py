"""The chat through the stock @microsoft/signalr client: `tests/js/chat/*.test.mjs` under
Node, against `python -m signalr_chat` processes talking to the fake Azure OpenAI.

The files run under `node --test`, in parallel (see node_runner.py), with every
server's address in the environment (see `chat_env`); each file is a test here, passing or
failing on its own results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.chat_fixtures import JWT_SECRET, ChatServer, FakeAI, token_for
from tests.support.node_runner import JS_DIR, FileRun, run_node_suite

CHAT_JS_FILES = sorted((JS_DIR / "chat").glob("*.test.mjs"))
NODE_TIMEOUT = 240


def test_chat_js_suite_exists() -> None:
    assert CHAT_JS_FILES, f"no *.test.mjs files in {JS_DIR / 'chat'}"


@pytest.fixture(scope="module")
def chat_env(
    fake_ai: FakeAI,
    chat_server: ChatServer,
    tight_chat_server: ChatServer,
    capped_chat_server: ChatServer,
    entra_chat_server: ChatServer,
    entra_v1_chat_server: ChatServer,
    openai_chat_server: ChatServer,
    local_chat_server: ChatServer,
) -> dict[str, str]:
    tokens = {
        user: token_for(user) for user in ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivan")
    }
    tokens["expired"] = token_for("eve", lifetime=-60)
    return {
        **os.environ,
        "SIGNALR_BASE_URL": chat_server.base,
        "CHAT_URL": chat_server.base,
        "CHAT_TIGHT_URL": tight_chat_server.base,
        "CHAT_CAPPED_URL": capped_chat_server.base,
        "CHAT_ENTRA_URL": entra_chat_server.base,
        "CHAT_ENTRA_V1_URL": entra_v1_chat_server.base,
        "CHAT_OPENAI_URL": openai_chat_server.base,
        "CHAT_LOCAL_URL": local_chat_server.base,
        "FAKE_AI_URL": fake_ai.base,
        "CHAT_TOKENS": json.dumps(tokens),
        # token_refresh.test.mjs signs tokens that live a few seconds, from the moment it needs them
        "CHAT_JWT_SECRET": JWT_SECRET,
    }


@pytest.fixture(scope="module")
def chat_js_suite(chat_env: dict[str, str]) -> dict[Path, FileRun]:
    return run_node_suite(CHAT_JS_FILES, chat_env, NODE_TIMEOUT)


@pytest.mark.parametrize("js_file", CHAT_JS_FILES, ids=[p.name.removesuffix(".test.mjs") for p in CHAT_JS_FILES])
def test_chat_js(js_file: Path, chat_js_suite: dict[Path, FileRun]) -> None:
    chat_js_suite[js_file].check(NODE_TIMEOUT)
