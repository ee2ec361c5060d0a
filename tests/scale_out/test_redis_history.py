"""What only the Redis history store has to show, against a real redis-server: instances
sharing it, writers racing, and Redis down, hung or restarted empty. (The behaviour every
store shares is tested once for all of them in test_conversation_parts.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.history import ConversationInfo, HistoryUnavailable
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.hosting import ConfigurationError
from tests.scale_out.test_redis_sentinel import Sentinel
from tests.support.redis_server import RedisServer

#: A bound the test waits for, so a hang fails the test instead of stalling the run.
NEVER = 30.0


def turn(i: int) -> list[ChatMessage]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


@pytest.fixture
async def two_instances(redis_server: RedisServer) -> AsyncIterator[tuple[RedisHistoryStore, RedisHistoryStore]]:
    """Two stores with clients of their own, as two server processes would have."""
    a = RedisHistoryStore(redis_server.url, keep=6, timeout=1.0)
    b = RedisHistoryStore(redis_server.url, keep=6, timeout=1.0)
    yield a, b
    await a.close()
    await b.close()


async def test_instances_see_the_same_conversations(
    two_instances: tuple[RedisHistoryStore, RedisHistoryStore],
) -> None:
    a, b = two_instances
    await a.save_conversation("user:ann", ConversationInfo("c1", "From A", 1.0, 1.0))
    await a.append("user:ann/c1", turn(1))
    await b.append("user:ann/c1", turn(2))
    assert await b.conversations("user:ann") == [ConversationInfo("c1", "From A", 1.0, 1.0)]
    assert await a.load("user:ann/c1") == await b.load("user:ann/c1") == turn(1) + turn(2)
    await b.forget_conversation("user:ann", "c1")
    assert await a.conversations("user:ann") == []


async def test_racing_appends_never_lose_a_turn_halfway_or_break_the_trim(
    two_instances: tuple[RedisHistoryStore, RedisHistoryStore],
) -> None:
    """Append is push + trim in one MULTI/EXEC: each turn's two messages stay together, and
    the trim holds whatever order two instances' writes land in."""
    a, b = two_instances
    await asyncio.gather(*(store.append("user:ann", turn(i)) for i in range(40) for store in (a, b)))
    kept = await a.load("user:ann")
    assert len(kept) == 6
    for question, answer in zip(kept[::2], kept[1::2], strict=True):
        assert question["role"] == "user" and answer["role"] == "assistant"
        assert answer["content"] == "a" + question["content"][1:], kept


async def test_redis_down_is_a_clear_error_within_the_timeout(redis_server: RedisServer) -> None:
    store = RedisHistoryStore(redis_server.url, keep=6, timeout=0.5)
    try:
        await store.append("user:ann", turn(1))
        redis_server.kill()
        with pytest.raises(HistoryUnavailable):
            await asyncio.wait_for(store.load("user:ann"), NEVER)
        with pytest.raises(HistoryUnavailable):
            await asyncio.wait_for(store.append("user:ann", turn(2)), NEVER)
        redis_server.start()  # back, empty: the store reconnects by itself
        assert await store.load("user:ann") == []
        await store.append("user:ann", turn(3))
        assert await store.load("user:ann") == turn(3)
    finally:
        await store.close()


async def test_a_hung_redis_is_a_clear_error_within_the_timeout(redis_server: RedisServer) -> None:
    """SIGSTOP: the socket stays open and nothing answers; only the timeout ends the wait."""
    store = RedisHistoryStore(redis_server.url, keep=6, timeout=0.5)
    try:
        await store.append("user:ann", turn(1))
        redis_server.pause()
        with pytest.raises(HistoryUnavailable):
            await asyncio.wait_for(store.conversations("user:ann"), NEVER)
        redis_server.resume()
        assert await store.load("user:ann") == turn(1)
    finally:
        redis_server.resume()
        await store.close()


def test_redis_is_the_default_with_redis_url_and_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HISTORY_STORE", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings().history_store == "sqlite"
    assert Settings(redis_url="redis://127.0.0.1:1/0").history_store == "redis"
    assert Settings(redis_url="redis://127.0.0.1:1/0", history_store="sqlite").history_store == "sqlite"
    with pytest.raises(ValueError, match="history_store=redis needs REDIS_URL"):
        Settings(history_store="redis")


def test_configuration_error_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from signalr_chat.chat.scale_out import HISTORY_NEEDS_REDIS, open_redis

    monkeypatch.delitem(sys.modules, "signalr_chat.chat.redis_history", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"signalr-chat\[redis\]"):
        open_redis(Settings(redis_url="redis://127.0.0.1:1/0"), HISTORY_NEEDS_REDIS)


async def test_a_sentinel_url_reaches_the_master_it_names(redis_server: RedisServer) -> None:
    """REDIS_URL=redis+sentinel://... is read as the backplane reads it: the store asks the
    sentinel for the master (failover itself is the backplane's test_redis_sentinel.py)."""
    sentinel = Sentinel(redis_server.port)
    through_sentinel = RedisHistoryStore(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster", keep=6)
    direct = RedisHistoryStore(redis_server.url, keep=6)
    try:
        await through_sentinel.append("user:ann", turn(1))
        assert await direct.load("user:ann") == turn(1)
    finally:
        await through_sentinel.close()
        await direct.close()
        sentinel.close()
