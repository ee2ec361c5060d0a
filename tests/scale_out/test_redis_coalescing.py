"""A burst through Redis reaches each connection in few frames, in order, and nothing waits for long.

Two Redis lifetime managers on one real redis-server. The connections flush as the WebSocket
transport does: everything written to one in a loop turn leaves as one frame at the end of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from signalr_chat.signalr.protocol import JSON, InvocationMessage
from signalr_chat.signalr.redis import RedisHubLifetimeManager
from tests.hubs.test_lifetime import FakeConnection
from tests.support.conditions import until
from tests.support.redis_server import RedisServer

#: Longer than any wait in these tests: a message that waited for it would fail them.
LONG = 30.0
BURST = 20


class FramedConnection(FakeConnection):
    """Records what it is written per loop turn: one frame each, as FlushScheduler sends them."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(connection_id, JSON)
        self.frames: list[list[str]] = []
        self._pending: list[str] | None = None

    def write_encoded(self, data: bytes, sequenced: bool = True) -> None:
        super().write_encoded(data, sequenced)
        if self._pending is None:
            self._pending = []
            asyncio.get_running_loop().call_soon(self._flush)
        for message in JSON.decoder(None).feed(data):
            assert isinstance(message, InvocationMessage)
            self._pending.append(str(message.arguments[0]))

    def _flush(self) -> None:
        assert self._pending is not None
        self.frames.append(self._pending)
        self._pending = None

    @property
    def texts(self) -> list[str]:
        return [text for frame in self.frames for text in frame]


async def managers(redis_server: RedisServer, window: float) -> tuple[RedisHubLifetimeManager, RedisHubLifetimeManager]:
    pair = []
    for _ in range(2):
        m = RedisHubLifetimeManager(redis_server.url, timeout=2.0, coalesce_window=window)
        m.configure("Tests.Hub", ["json"])
        await m.start()
        pair.append(m)
    return pair[0], pair[1]


@pytest.fixture
async def closing() -> AsyncIterator[list[RedisHubLifetimeManager]]:
    started: list[RedisHubLifetimeManager] = []
    yield started
    for m in started:
        await m.aclose()


async def burst(sender: RedisHubLifetimeManager, receiver: FramedConnection, first: int) -> list[str]:
    """A hub method's loop of awaited sends to all; returns what was sent once all arrived."""
    sent = [str(first + i) for i in range(BURST)]
    for text in sent:
        await sender.send_all("m", (text,))
    await until(lambda: receiver.texts[-1:] == sent[-1:], "the whole burst")
    return sent


@pytest.mark.parametrize("window", [1.0, 0.0])
async def test_a_burst_shares_frames_on_the_receiving_server(
    redis_server: RedisServer, closing: list[RedisHubLifetimeManager], window: float
) -> None:
    a, b = await managers(redis_server, window)
    closing += [a, b]
    here, there = FramedConnection("here"), FramedConnection("there")
    await a.on_connected(here)  # the sender's server, as in the benchmark
    await b.on_connected(there)
    sent = await burst(a, there, 0)
    await until(lambda: len(here.texts) == BURST, "the burst on the sender's server")
    for connection in (here, there):
        assert connection.texts == sent  # in order, each once
        if window:
            # the first goes at once, the rest wait together for the next delivery
            assert len(connection.frames) <= 3, connection.frames
        else:
            assert len(connection.frames) == BURST  # off: each its own frame, as before


async def test_a_message_after_a_quiet_spell_does_not_wait(
    redis_server: RedisServer, closing: list[RedisHubLifetimeManager]
) -> None:
    a, b = await managers(redis_server, LONG)
    closing += [a, b]
    there = FramedConnection("there")
    await b.on_connected(there)
    await a.send_all("m", ("first",))
    await until(lambda: there.texts == ["first"], "the first message, not held", timeout=LONG / 3)


async def test_a_group_change_never_overtakes_a_held_message(
    redis_server: RedisServer, closing: list[RedisHubLifetimeManager]
) -> None:
    """Sent to the group before the connection left it: it must still get it, and at once."""
    a, b = await managers(redis_server, LONG)
    closing += [a, b]
    there = FramedConnection("there")
    await b.on_connected(there)
    await a.add_to_group("there", "g")  # through Redis: the connection is on b
    await a.send_all("m", ("opens the burst",))
    await until(lambda: there.texts == ["opens the burst"], "the first message")
    await a.send_groups(["g"], "m", ("held",))  # within the window: held on b
    await a.remove_from_group("there", "g")  # a group command on b: what was held goes first
    await until(lambda: there.texts == ["opens the burst", "held"], "the held message", timeout=LONG / 3)
    assert "g" not in b.groups_of("there")


async def test_closing_delivers_what_is_held(redis_server: RedisServer, closing: list[RedisHubLifetimeManager]) -> None:
    a, b = await managers(redis_server, LONG)
    closing.append(a)
    there = FramedConnection("there")
    await b.on_connected(there)
    await a.send_all("m", ("first",))
    await until(lambda: there.texts == ["first"], "the first message")
    await a.send_all("m", ("held",))
    # the PUBLISH has returned, so Redis has written it to b's subscription; b reads it and holds it
    await until(lambda: b._coalescer._inbox, "b holding the second message", timeout=LONG / 3)
    await b.aclose()
    await until(lambda: there.texts == ["first", "held"], "the held message at close", timeout=1.0)
