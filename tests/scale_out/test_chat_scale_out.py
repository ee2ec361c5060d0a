"""The chat across instances: two `python -m signalr_chat` processes on one real Redis
(REDIS_URL, so HISTORY_STORE=redis by default), the fake Azure OpenAI, and the stock JS
client signed in as one user on both (`tests/js/chat_scale_out/`).

Then Redis is killed: the user's calls fail with a clear error within REDIS_TIMEOUT, and
the servers' logs hold no traceback. And the page (headless Chromium) opened on B while a
reply streams from A shows it and follows it to its end.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.support.browser import OpenPage
from tests.support.chat_fixtures import ChatServer, FakeAI, assert_clean_log, azure_settings, server_env, token_for
from tests.support.node_runner import JS_DIR, run_node_suite
from tests.support.page import full, replies, send, wait_reply
from tests.support.redis_server import RedisServer

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


def test_the_page_on_b_shows_and_follows_the_reply_running_on_a(
    two_servers: tuple[ChatServer, ChatServer], fake_ai: FakeAI, new_page: OpenPage
) -> None:
    """The user opens the chat on another instance (a second tab, or a reload the balancer
    sent elsewhere) while a reply streams: it is there, and it streams on, exactly once."""
    a, b = two_servers
    token = token_for(f"page-{uuid.uuid4().hex[:8]}")
    on_a, _ = new_page(f"{a.base}/#token={token}")
    expect(on_a.locator("#status")).to_have_text("Connected")
    tag = uuid.uuid4().hex[:8]
    send(on_a, f"[[tokens:600]] {tag}")
    expect(replies(on_a).first.locator(".content")).to_contain_text("t40")

    on_b, _ = new_page(f"{b.base}/#token={token}")
    expect(on_b.locator("#status")).to_have_text("Connected")
    expect(on_b.locator(".message.user")).to_have_text(f"[[tokens:600]] {tag}")
    assert wait_reply(on_b, 1) == full(600)
    expect(replies(on_b)).to_have_count(1)
    assert wait_reply(on_a, 1) == full(600)
    [record] = fake_ai.requests_with(tag)
    assert record["outcome"] == "completed"
