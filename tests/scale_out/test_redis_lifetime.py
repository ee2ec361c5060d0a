"""Two Redis lifetime managers ("servers") on one real redis-server, driven with plain objects.

Every routing of the in-memory manager, across servers; group changes and client results for
a connection on the other server; and what happens when Redis dies, restarts or hangs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from signalr_chat.signalr import HubException, UnencodableValue
from signalr_chat.signalr.protocol import JSON, MESSAGEPACK, CompletionMessage, HubProtocol, InvocationMessage
from signalr_chat.signalr.redis import BackplaneUnavailable, RedisHubLifetimeManager
from tests.hubs.test_lifetime import CountingJson, FakeConnection
from tests.support.conditions import until
from tests.support.redis_server import RedisServer

TIMEOUT = 1.0


def manager(server: RedisServer, **kwargs: object) -> RedisHubLifetimeManager:
    m = RedisHubLifetimeManager(server.url, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]
    m.configure("Tests.Hub", ["json", "messagepack"])
    return m


@pytest.fixture
async def servers(redis_server: RedisServer) -> AsyncIterator[tuple[RedisHubLifetimeManager, RedisHubLifetimeManager]]:
    a, b = manager(redis_server), manager(redis_server)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


def texts(connection: FakeConnection) -> list[str]:
    """What a JSON connection received, decoded."""
    out = []
    for data in connection.received:
        for message in JSON.decoder(None).feed(data):
            assert isinstance(message, InvocationMessage)
            out.append(f"{message.target}:{','.join(map(str, message.arguments))}")
    return out


async def test_every_routing_reaches_connections_on_both_servers(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager],
) -> None:
    a, b = servers
    a1, a2 = FakeConnection("a1", JSON, user="ann"), FakeConnection("a2", JSON, user="bob")
    b1, b2 = FakeConnection("b1", JSON, user="ann"), FakeConnection("b2", JSON)
    for m, c in ((a, a1), (a, a2), (b, b1), (b, b2)):
        await m.on_connected(c)
    everyone = (a1, a2, b1, b2)
    await a.add_to_group("a1", "g")
    await b.add_to_group("b1", "g")
    await b.add_to_group("b2", "h")

    async def sent(send: object, expected: set[FakeConnection], tag: str) -> None:
        await send  # type: ignore[misc]
        await until(lambda: all(f"{tag}:" in texts(c) for c in expected))
        # a marker to everyone after it: once it arrived, anything misrouted would have too
        await a.send_all("Mark", (tag,))
        await until(lambda: all(f"Mark:{tag}" in texts(c) for c in everyone))
        assert {c for c in everyone if f"{tag}:" in texts(c)} == expected

    await sent(a.send_all("all", ()), set(everyone), "all")
    await sent(b.send_all("allx", (), exclude=["a1", "b2"]), {a2, b1}, "allx")
    await sent(b.send_connection("a2", "one", ()), {a2}, "one")
    await sent(a.send_connections(["a1", "b2"], "some", ()), {a1, b2}, "some")
    await sent(b.send_groups(["g"], "group", ()), {a1, b1}, "group")
    await sent(a.send_groups(["g", "h"], "groups", ()), {a1, b1, b2}, "groups")
    await sent(a.send_groups(["g"], "gx", (), exclude=["b1"]), {a1}, "gx")
    await sent(b.send_users(["ann"], "user", ()), {a1, b1}, "user")
    await sent(b.send_users(["ann", "bob"], "users", ()), {a1, a2, b1}, "users")


async def test_each_connection_gets_its_own_protocols_bytes(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager],
) -> None:
    a, b = servers
    j, m = FakeConnection("j", JSON), FakeConnection("m", MESSAGEPACK)
    await b.on_connected(j)
    await b.on_connected(m)
    await a.send_all("Tick", (1, "two"))
    await until(lambda: bool(j.received and m.received))
    assert j.received == [JSON.encode(InvocationMessage("Tick", [1, "two"]))]
    assert m.received == [MESSAGEPACK.encode(InvocationMessage("Tick", [1, "two"]))]


async def test_group_membership_changed_from_the_other_server(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager],
) -> None:
    a, b = servers
    b1 = FakeConnection("b1", JSON)
    await b.on_connected(b1)
    await a.add_to_group("b1", "room")  # waits for b's ack
    assert b.groups_of("b1") == {"room"}
    await a.send_groups(["room"], "In", ())
    await until(lambda: texts(b1) == ["In:"])
    await a.remove_from_group("b1", "room")
    assert b.groups_of("b1") == frozenset()
    with pytest.raises(ConnectionError, match=re.escape("Connection 'nobody' does not exist.")):
        await a.add_to_group("nobody", "room")


async def test_disconnect_removes_groups_and_unsubscribes(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager], redis_server: RedisServer
) -> None:
    _, b = servers
    b1 = FakeConnection("b1", JSON, user="u")
    await b.on_connected(b1)
    await b.add_to_group("b1", "room")
    client = aioredis.from_url(redis_server.url)
    channels = [b"Tests.Hub:connection:b1", b"Tests.Hub:group:room", b"Tests.Hub:user:u"]
    assert [n for _, n in await client.pubsub_numsub(*channels)] == [1, 1, 1]
    await b.on_disconnected(b1)
    assert b.groups_of("b1") == frozenset()
    assert [n for _, n in await client.pubsub_numsub(*channels)] == [0, 0, 0]
    await client.aclose()


@pytest.mark.parametrize("protocol", [JSON, MESSAGEPACK], ids=["json", "messagepack"])
async def test_client_results_across_servers(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager], protocol: HubProtocol
) -> None:
    a, b = servers
    b1 = FakeConnection("b1", protocol)
    await b.on_connected(b1)

    async def answer(result: object = None, error: str | None = None) -> None:
        await until(lambda: bool(b1.received))
        (message,) = protocol.decoder(None).feed(b1.received.pop())
        assert isinstance(message, InvocationMessage) and message.invocation_id
        assert len(message.invocation_id) == 22  # 16 random bytes, base64, == trimmed
        if error is None:
            b.set_connection_result("b1", CompletionMessage.with_result(message.invocation_id, result))
        else:
            b.set_connection_result("b1", CompletionMessage.with_error(message.invocation_id, error))

    asking = asyncio.ensure_future(a.invoke_connection("b1", "Ask", ("q",), 10))
    await answer({"n": 42})
    assert await asking == {"n": 42}

    asking = asyncio.ensure_future(a.invoke_connection("b1", "Ask", ("q",), 10))
    await answer(error="No.")
    with pytest.raises(HubException, match=re.escape("No.")):
        await asking

    asking = asyncio.ensure_future(a.invoke_connection("b1", "Ask", ("q",), 10))
    await until(lambda: bool(b1.received))
    await b.on_disconnected(b1)  # the client leaves before answering
    with pytest.raises(HubException, match=re.escape("Connection disconnected.")):
        await asking

    with pytest.raises(ConnectionError, match=re.escape("Connection 'nobody' does not exist.")):
        await a.invoke_connection("nobody", "Ask", (), 10)


async def test_a_client_result_fails_when_the_owning_server_dies(redis_server: RedisServer) -> None:
    a, b = manager(redis_server), manager(redis_server)
    await a.start()
    await b.start()
    b1 = FakeConnection("b1", JSON)
    await b.on_connected(b1)
    asking = asyncio.ensure_future(a.invoke_connection("b1", "Ask", (), 60))
    await until(lambda: bool(b1.received))
    await b.aclose()  # b's process is gone: its subscriptions with it
    with pytest.raises(ConnectionError, match=re.escape("Connection 'b1' disconnected.")):
        await asyncio.wait_for(asking, 10 * TIMEOUT)  # found out long before the 60 s
    await a.aclose()


async def test_a_value_one_protocol_cannot_encode_fails_the_send_before_publishing(
    servers: tuple[RedisHubLifetimeManager, RedisHubLifetimeManager],
) -> None:
    a, b = servers
    b1 = FakeConnection("b1", JSON)
    await b.on_connected(b1)
    with pytest.raises(UnencodableValue, match="Cannot send 'Bad'"):
        await a.send_all("Bad", (object(),))
    await a.send_all("Good", ())
    await until(lambda: texts(b1) == ["Good:"])


async def test_redis_down_fails_sends_fast_keeps_local_relay_and_recovers(redis_server: RedisServer) -> None:
    a, b = manager(redis_server), manager(redis_server)
    await a.start()
    await b.start()
    a1, b1 = FakeConnection("a1", JSON), FakeConnection("b1", JSON)
    await a.on_connected(a1)
    await b.on_connected(b1)
    await b.add_to_group("b1", "room")
    try:
        redis_server.kill()
        await until(lambda: not a.connected and not b.connected)
        started = time.monotonic()
        with pytest.raises(BackplaneUnavailable, match="not sent"):
            await a.send_all("Lost", ())
        with pytest.raises(BackplaneUnavailable):
            await a.send_groups(["room"], "Lost", ())
        assert time.monotonic() - started < TIMEOUT  # at once, not after a timeout
        await a.send_connection("a1", "Relay", ("token",))  # a local connection never needs Redis
        assert texts(a1) == ["Relay:token"]

        redis_server.start()  # back, empty: every channel must be subscribed again
        await until(lambda: a.connected and b.connected)
        await a.send_all("Back", ())
        await a.send_groups(["room"], "Room", ())
        await a.send_connection("b1", "Direct", ())
        await until(lambda: texts(b1) == ["Back:", "Room:", "Direct:"])
        assert texts(a1) == ["Relay:token", "Back:"]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_hung_redis_is_detected_and_sends_fail_within_the_timeout(redis_server: RedisServer) -> None:
    a = manager(redis_server)
    await a.start()
    a1 = FakeConnection("a1", JSON)
    await a.on_connected(a1)
    try:
        redis_server.pause()
        started = time.monotonic()
        with pytest.raises(BackplaneUnavailable):
            await a.send_all("Hung", ())
        assert time.monotonic() - started < 3 * TIMEOUT
        await until(lambda: not a.connected)  # the health PING went unanswered
        redis_server.resume()
        await until(lambda: a.connected)
        await a.send_all("Back", ())
        await until(lambda: texts(a1) == ["Back:"])
    finally:
        redis_server.resume()
        await a.aclose()


async def test_starting_without_redis_serves_and_connects_later() -> None:
    server = RedisServer()  # not started
    a = manager(server)
    await a.start()  # waits at most the timeout, then serves
    a1 = FakeConnection("a1", JSON)
    await a.on_connected(a1)
    try:
        assert not a.connected
        with pytest.raises(BackplaneUnavailable):
            await a.send_all("Early", ())
        server.start()
        await until(lambda: a.connected)
        await a.send_all("Late", ())
        await until(lambda: texts(a1) == ["Late:"])
    finally:
        await a.aclose()
        server.close()


async def test_channel_prefix_and_hub_name_are_used_raw(redis_server: RedisServer) -> None:
    a = RedisHubLifetimeManager(redis_server.url, channel_prefix="MyApp", hub_name="Chat.Hubs.ChatHub", timeout=TIMEOUT)
    a.configure("ignored.default.Name", ["json"])
    await a.start()
    try:
        client = aioredis.from_url(redis_server.url)
        listener = client.pubsub()
        await listener.subscribe("MyAppChat.Hubs.ChatHub:all")
        confirmed = await listener.get_message(timeout=5)
        assert confirmed is not None and confirmed["type"] == "subscribe"
        await a.send_all("Hello", ())
        message = None
        deadline = time.monotonic() + 5
        while message is None or message["type"] != "message":
            assert time.monotonic() < deadline
            message = await listener.get_message(timeout=1)
        assert (
            message["data"]
            == b"\x92\x90\x81\xa4json\xc4"
            + bytes([len(b'{"type":1,"target":"Hello","arguments":[]}\x1e')])
            + b'{"type":1,"target":"Hello","arguments":[]}\x1e'
        )
        await listener.aclose()
        await client.aclose()
    finally:
        await a.aclose()


class DotnetPeer:
    """A raw Redis client playing an ASP.NET Core server of the same hub: its bytes, its channels."""

    def __init__(self, url: str, hub: str = "Tests.Hub", name: str = "DOTNET_0123") -> None:
        self.client = aioredis.from_url(url)
        self.listener = self.client.pubsub()
        self.hub, self.name = hub, name

    async def listen(self, *suffixes: str) -> None:
        await self.listener.subscribe(*(f"{self.hub}:{s}" for s in suffixes))
        for _ in suffixes:
            confirmed = await self.listener.get_message(timeout=5)
            assert confirmed is not None and confirmed["type"] == "subscribe"

    async def next(self) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = await self.listener.get_message(timeout=1)
            if message is not None and message["type"] == "message":
                return message["channel"], message["data"]
        raise AssertionError("nothing published")

    async def publish(self, suffix: str, data: bytes) -> int:
        return int(await self.client.publish(f"{self.hub}:{suffix}", data))

    async def close(self) -> None:
        await self.listener.aclose()
        await self.client.aclose()


async def test_a_dotnet_peers_bytes_are_understood_and_answered(redis_server: RedisServer) -> None:
    """Broadcast, group command with ack, and a client result, exactly as ASP.NET Core writes them."""
    ours = manager(redis_server)
    await ours.start()
    peer = DotnetPeer(redis_server.url)
    try:
        j, m = FakeConnection("j", JSON), FakeConnection("m", MESSAGEPACK)
        await ours.on_connected(j)
        await ours.on_connected(m)
        # a .NET broadcast: excluded ids, then framed bytes per protocol name, in bin
        payloads = {p.name: p.encode(InvocationMessage("FromDotnet", ["hi"])) for p in (JSON, MESSAGEPACK)}
        envelope = b"\x92\x91\xa1m\x82\xa4json\xc4" + bytes([len(payloads["json"])]) + payloads["json"]
        envelope += b"\xabmessagepack\xc4" + bytes([len(payloads["messagepack"])]) + payloads["messagepack"]
        assert await peer.publish("all", envelope) == 1
        await until(lambda: texts(j) == ["FromDotnet:hi"])
        assert m.received == []  # excluded by the peer; delivered in the same pass as j's

        # a .NET group add for our connection: applied here, acked to the peer's ack channel
        await peer.listen(f"internal:ack:{peer.name}", f"internal:return:{peer.name}")
        await peer.publish("internal:groups", b"\x95\x2a\xab" + peer.name.encode() + b"\x01\xa4room\xa1j")
        channel, ack = await peer.next()
        assert (channel, ack) == (f"Tests.Hub:internal:ack:{peer.name}".encode(), b"\x91\x2a")
        assert ours.groups_of("j") == {"room"}

        # a .NET client result: the 4-element invocation, answered on the peer's return channel
        ask = JSON.encode(InvocationMessage("Ask", [1], "AAAAAAAAAAAAAAAAAAAAAA"))
        return_channel = f"Tests.Hub:internal:return:{peer.name}".encode()
        await peer.publish(
            "connection:j",
            b"\x94\x90\x81\xa4json\xc4" + bytes([len(ask)]) + ask + b"\xb6AAAAAAAAAAAAAAAAAAAAAA"
            + b"\xd9" + bytes([len(return_channel)]) + return_channel,
        )  # fmt: skip
        await until(lambda: len(j.received) == 2)
        ours.set_connection_result("j", CompletionMessage.with_result("AAAAAAAAAAAAAAAAAAAAAA", 7))
        channel, data = await peer.next()
        framed = JSON.encode(CompletionMessage.with_result("AAAAAAAAAAAAAAAAAAAAAA", 7))
        assert (channel, data) == (return_channel, b"\x92\xa4json\xc4" + bytes([len(framed)]) + framed)
    finally:
        await peer.close()
        await ours.aclose()


async def test_a_broadcast_is_encoded_once_per_send_whatever_the_servers_and_connections(
    redis_server: RedisServer,
) -> None:
    counting = CountingJson()
    servers = [
        RedisHubLifetimeManager(redis_server.url, protocols=[counting, MESSAGEPACK], timeout=TIMEOUT) for _ in range(3)
    ]
    connections = [FakeConnection(f"c{i}", counting) for i in range(30)]
    try:
        for i, server in enumerate(servers):
            server.configure("Tests.Hub", [])
            await server.start()
            for connection in connections[i::3]:
                await server.on_connected(connection)
        await servers[0].send_all("Tick", (1,))
        await until(lambda: all(c.received for c in connections))
        assert counting.encodes == 1
        assert len({c.received[0] for c in connections}) == 1
    finally:
        for server in servers:
            await server.aclose()
