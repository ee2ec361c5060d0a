"""Issue 22: guests cannot mint their way past the limits. New guest ids per client address are
capped, and anonymous messages are counted per address across guests and connections, in
memory and in Redis (the backends the composition root chooses); a forged or edited guest id
is refused. End to end through the stock client: tests/js/chat/guest_limits.test.mjs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from signalr_chat.app.application import _conversations
from signalr_chat.app.settings import Settings
from signalr_chat.chat.addresses import address_key
from signalr_chat.chat.conversations import ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.redis_guests import SharedGuestSessions
from signalr_chat.chat.scale_out import HISTORY_NEEDS_REDIS, open_redis
from signalr_chat.chat.service import Caller, ChatService, Limits, Rejected
from tests.support.redis_server import RedisServer

HOME, ELSEWHERE = "198.51.100.7", "203.0.113.9"
RATE_LIMITED = "You are sending messages too quickly. Please wait"


class _NoModel:
    name = "fake:none"
    models = ("none",)
    context_tokens = 4096
    max_output_tokens = 256


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _service(backend: str, request: pytest.FixtureRequest, **settings: Any) -> AsyncIterator[ConversationService]:
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        settings |= {"redis_url": server.url, "history_store": "redis"}
    chosen = Settings(**settings)
    redis = open_redis(chosen, HISTORY_NEEDS_REDIS) if backend == "redis" else None
    chat = ChatService(cast(Any, _NoModel()), Limits.from_settings(chosen), chosen.system_prompt)
    conversations, _, closes = _conversations(chosen, chat, redis)
    try:
        yield conversations
    finally:
        for backend_part in closes:
            await backend_part.close()
        if redis is not None:
            await redis.aclose()


class Visitors:
    """Anonymous connections as the hub makes them: each may become a guest (UseGuestSession)."""

    def __init__(self, conversations: ConversationService) -> None:
        self.conversations = conversations
        self.count = 0

    async def fresh_guest(self, address: str | None) -> Caller:
        self.count += 1
        connection = Caller(f"c{self.count}", address=address)
        guest = await self.conversations.use_guest(connection, None)
        return Caller(connection.connection_id, guest=guest, address=address)

    async def send(self, caller: Caller) -> str:
        """'answered', or the text the caller is shown."""
        try:
            await self.conversations.check(caller, "hello")
        except Rejected as exc:
            return exc.user_message
        return "answered"


async def test_fresh_guests_from_one_address_are_refused_after_the_address_limit(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The issue's scenario: RATE_LIMIT_MESSAGES=3, each message from a fresh guest, one address."""
    async for conversations in _service(backend, request, rate_limit_messages=3, guest_new_per_address=0):
        visitors = Visitors(conversations)
        outcomes = [await visitors.send(await visitors.fresh_guest(HOME)) for _ in range(45)]
        assert outcomes[:9] == ["answered"] * 9, "3 x RATE_LIMIT_MESSAGES per address by default"
        assert all(outcome.startswith(RATE_LIMITED) for outcome in outcomes[9:]), outcomes[9:]
        # a connection that is no guest (a seed client) counts against its address too
        assert (await visitors.send(Caller("seed", address=HOME))).startswith(RATE_LIMITED)
        # another address, and a signed-in user at this one, are not affected
        assert await visitors.send(await visitors.fresh_guest(ELSEWHERE)) == "answered"
        assert await visitors.send(Caller("signed-in", user="ann", address=HOME)) == "answered"


async def test_one_guest_within_their_own_limit_never_meets_the_address_limit(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async for conversations in _service(backend, request, rate_limit_messages=3, rate_limit_messages_per_address=3):
        visitors = Visitors(conversations)
        guest = await visitors.fresh_guest(HOME)
        assert [await visitors.send(guest) for _ in range(3)] == ["answered"] * 3
        assert (await visitors.send(guest)).startswith(RATE_LIMITED)  # their own limit


async def test_new_guests_per_address_are_capped_and_live_ones_are_kept(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async for conversations in _service(backend, request, guest_new_per_address=3):
        visitors = Visitors(conversations)
        guests = [await visitors.fresh_guest(HOME) for _ in range(3)]
        with pytest.raises(Rejected, match="Too many new guest sessions from your network"):
            await visitors.fresh_guest(HOME)
        # a live guest coming back (a reload) costs nothing, and the id is theirs
        for guest in guests:
            assert await conversations.use_guest(Caller("reload", address=HOME), guest.guest) == guest.guest
        # a forged id is not a way around the cap: it asks for a new guest
        with pytest.raises(Rejected, match="Too many new guest sessions"):
            await conversations.use_guest(Caller("forger", address=HOME), "x" * 32)
        assert (await visitors.fresh_guest(ELSEWHERE)).guest is not None
        # an IPv6 host counts by its /64: varying the low bits mints nothing more
        for low in range(3):
            await visitors.fresh_guest(f"2001:db8:1:2::{low + 1}")
        with pytest.raises(Rejected, match="Too many new guest sessions"):
            await visitors.fresh_guest("2001:db8:1:2:ffff::1")
        # signed-in users are no guests, and are never counted
        assert await conversations.use_guest(Caller("signed-in", user="ann", address=HOME), None) is None


def test_address_keys() -> None:
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert address_key(None) is None
    assert address_key("") is None


def _edited(guest: str) -> str:
    """The same id with one character changed (still shaped like an id)."""
    last = "A" if guest[-1] != "A" else "B"
    return guest[:-1] + last


async def test_a_forged_or_edited_guest_id_is_refused_in_memory() -> None:
    guests = GuestSessions(ttl=100)
    guest = await guests.issue()
    assert len(guest) == 32 and GuestSessions.valid(guest)
    assert await guests.renew(guest)
    for forged in (_edited(guest), guest[::-1], "A" * 32, guest + "A", guest[:-1], None, 7):
        assert not await guests.renew(forged), forged
        assert await guests.use(forged) not in (forged, guest)


async def test_a_forged_or_edited_guest_id_is_refused_in_redis(redis_server: RedisServer) -> None:
    guests = SharedGuestSessions(redis_server.url, 100)
    try:
        guest = await guests.issue()
        assert await guests.renew(guest)
        for forged in (_edited(guest), guest[::-1], "A" * 32, guest + "A", "*" * 32, None):
            assert not await guests.renew(forged), forged
            assert await guests.use(forged) not in (forged, guest)
    finally:
        await guests.close()


def test_the_address_limit_is_never_below_one_visitors() -> None:
    assert Settings(rate_limit_messages=5).address_message_limit() == 15
    assert Settings(rate_limit_messages_per_address=0).address_message_limit() == 0
    with pytest.raises(ValueError, match="at least rate_limit_messages"):
        Settings(rate_limit_messages=5, rate_limit_messages_per_address=4)
    with pytest.raises(ValueError, match="not an address or network"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.internal")


async def test_the_address_limits_hold_across_instances_with_redis(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    """Two instances on one Redis: guests minted on either count against one cap, and their
    messages against one limit."""
    settings = {"rate_limit_messages": 3, "guest_new_per_address": 4}
    async for a in _service("redis", request, **settings):
        async for b in _service("redis", request, **settings):
            on_a, on_b = Visitors(a), Visitors(b)
            guests = [await (on_a if i % 2 else on_b).fresh_guest(HOME) for i in range(4)]
            with pytest.raises(Rejected, match="Too many new guest sessions"):
                await on_a.fresh_guest(HOME)
            with pytest.raises(Rejected, match="Too many new guest sessions"):
                await on_b.fresh_guest(HOME)
            outcomes = [await (on_a if i % 2 else on_b).send(guests[i % 4]) for i in range(12)]
            assert outcomes[:9] == ["answered"] * 9
            assert all(outcome.startswith(RATE_LIMITED) for outcome in outcomes[9:]), outcomes
