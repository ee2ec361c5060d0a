"""Guests known to every instance (HISTORY_STORE=redis), against a real Redis: an id issued
by one instance is taken by another, and Redis forgets guests and their conversations by
itself after the TTL. Through two server processes: test_chat_scale_out.py."""

from __future__ import annotations

from signalr_chat.chat.history import ConversationInfo
from signalr_chat.chat.redis_guests import SharedGuestSessions
from signalr_chat.chat.redis_history import RedisHistoryStore
from tests.support.redis_server import RedisServer

TTL = 3600.0


async def test_a_guest_issued_on_a_is_known_on_b_and_expires_by_itself(redis_server: RedisServer) -> None:
    a, b = (SharedGuestSessions(redis_server.url, TTL) for _ in range(2))
    store = RedisHistoryStore(redis_server.url, keep=10, ttl=TTL)
    try:
        guest = await a.use(None)
        assert len(guest) == 32
        assert await b.use(guest) == guest, "another instance takes the id"
        assert await b.use("x" * 32) != "x" * 32, "an id no instance issued is not taken"
        assert await b.use(12345) != 12345

        await store.save_conversation(f"guest:{guest}", ConversationInfo("c1", "Kept a while", 1.0, 1.0))
        await store.append(f"guest:{guest}/c1", [{"role": "user", "content": "hi"}])
        await store.replace(f"guest:{guest}", [{"role": "user", "content": "default"}])
        keys = await store._redis.keys("*")
        assert len(keys) == 6, keys  # three guests (two issued for the bad ids), a list, two conversations
        for key in keys:
            assert 0 < await store._redis.pttl(key) <= TTL * 1000, f"{key!r} would never expire"
    finally:
        await a.close()
        await b.close()
        await store.close()


async def test_signed_in_users_history_never_expires(redis_server: RedisServer) -> None:
    store = RedisHistoryStore(redis_server.url, keep=10)
    try:
        await store.append("user:ann", [{"role": "user", "content": "hi"}])
        await store.save_conversation("user:ann", ConversationInfo("c1", "Kept", 1.0, 1.0))
        for key in await store._redis.keys("*"):
            assert await store._redis.pttl(key) == -1
    finally:
        await store.close()
