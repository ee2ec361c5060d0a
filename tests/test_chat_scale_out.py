"""The chat across instances: two `python -m signalr_chat` processes on one real Redis
(REDIS_URL, so HISTORY_STORE=redis by default), the fake Azure OpenAI, and the stock JS
client signed in as one user on both (`tests/js/chat_scale_out/`).

Then Redis is killed: the user's calls fail with a clear error within REDIS_TIMEOUT, and
the servers' logs hold no traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chat_fixtures import ChatServer, FakeAI, assert_clean_log, azure_settings, server_env, token_for
from .node_runner import JS_DIR, run_node_suite
from .redis_server import RedisServer

SUITE = JS_DIR / "chat_scale_out"
NODE_TIMEOUT = 240
USERS = ("amy", "ben", "cat", "dan", "eve", "fay")
#: Messages per user per minute on both servers (the JS suite's users each send fewer).
RATE_LIMIT = 4


@pytest.fixture
def two_servers(fake_ai: FakeAI, redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[ChatServer, ChatServer]]:
    servers = []
    settings = azure_settings(
        fake_ai,
        redis_url=redis_server.url,
        redis_timeout="1",
        reply_grace_seconds="2",
        rate_limit_messages=str(RATE_LIMIT),
        rate_limit_window_seconds="60",
    )
    try:
        for name in ("a", "b"):
            servers.append(ChatServer(server_env(fake_ai, **settings), log=tmp_path / f"{name}.log").start())
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
    for name in ("a", "b"):
        assert_clean_log(tmp_path / f"{name}.log")


def test_the_chat_across_two_instances_and_without_redis(
    two_servers: tuple[ChatServer, ChatServer], fake_ai: FakeAI, redis_server: RedisServer
) -> None:
    a, b = two_servers
    env = {
        **os.environ,
        "SIGNALR_BASE_URL": a.base,
        "CHAT_A_URL": a.base,
        "CHAT_B_URL": b.base,
        "FAKE_AI_URL": fake_ai.base,
        "CHAT_TOKENS": json.dumps({user: token_for(user) for user in USERS}),
    }
    across = SUITE / "across_instances.test.mjs"
    run_node_suite([across], env, NODE_TIMEOUT)[across].check(NODE_TIMEOUT)

    redis_server.kill()
    down = SUITE / "redis_down.test.mjs"
    run_node_suite([down], env, NODE_TIMEOUT)[down].check(NODE_TIMEOUT)
