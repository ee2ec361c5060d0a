"""The in-memory lifetime manager driven with plain objects: routing, encode-once, client results."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from typing import Any

import pytest

from signalr_chat.signalr import HubConnection, HubException, UnencodableValue
from signalr_chat.signalr.hubs import InMemoryHubLifetimeManager
from signalr_chat.signalr.protocol import (
    JSON,
    MESSAGEPACK,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    JsonHubProtocol,
)


class CountingJson(JsonHubProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.encodes = 0

    def encode_invocation(self, target: str, arguments: Any) -> bytes:
        self.encodes += 1
        return super().encode_invocation(target, arguments)


class FakeConnection:
    """What the lifetime manager needs of a hub connection, and a record of what it got."""

    def __init__(self, connection_id: str, protocol: HubProtocol, user: str | None = None) -> None:
        self.connection_id = connection_id
        self.protocol = protocol
        self.user_identifier = user
        self.received: list[bytes] = []
        self.messages: list[HubMessage] = []

    def write(self, message: HubMessage) -> None:
        self.messages.append(message)

    def write_encoded(self, data: bytes, sequenced: bool = True) -> None:
        self.received.append(data)

    def backpressure(self) -> None:
        return None  # always keeps up


def test_a_plain_object_satisfies_the_connection_protocol() -> None:
    """The manager needs nothing but the HubConnection Protocol's members, so a plain object drives it."""
    assert isinstance(FakeConnection("a", JSON), HubConnection)
    assert not isinstance(object(), HubConnection)


async def connected(manager: InMemoryHubLifetimeManager, *connections: FakeConnection) -> None:
    for connection in connections:
        await manager.on_connected(connection)


def names(*connections: FakeConnection) -> list[str]:
    return [c.connection_id for c in connections if c.received]


async def test_broadcast_is_encoded_once_per_protocol_and_shared() -> None:
    counting = CountingJson()
    manager = InMemoryHubLifetimeManager(protocols=[counting, MESSAGEPACK])
    json_clients = [FakeConnection(f"j{i}", counting) for i in range(50)]
    msgpack_clients = [FakeConnection(f"m{i}", MESSAGEPACK) for i in range(50)]
    await connected(manager, *json_clients, *msgpack_clients)

    await manager.send_all("Tick", (1, "two"))

    assert counting.encodes == 1
    json_bytes = {id(c.received[0]) for c in json_clients}
    assert len(json_bytes) == 1, "every JSON connection gets the very same bytes object"
    assert json_clients[0].received == [b'{"type":1,"target":"Tick","arguments":[1,"two"]}\x1e']
    assert msgpack_clients[0].received == [MESSAGEPACK.encode_invocation("Tick", [1, "two"])]
    assert len({id(c.received[0]) for c in msgpack_clients}) == 1


async def test_every_protocol_in_use_is_encoded_before_anyone_gets_anything() -> None:
    """A value one protocol cannot encode fails the send as a whole: nobody gets half a broadcast."""
    counting = CountingJson()
    manager = InMemoryHubLifetimeManager(protocols=[counting, MESSAGEPACK])
    only_json = [FakeConnection(f"j{i}", counting) for i in range(3)]
    await connected(manager, *only_json)

    await manager.send_all("Tick", (1,))
    assert counting.encodes == 1 and all(c.received for c in only_json)

    for connection in only_json:
        connection.received.clear()
    with pytest.raises(UnencodableValue, match="Cannot send 'Tick'"):
        await manager.send_all("Tick", (2**70,))  # neither protocol writes a 71-bit integer
    with pytest.raises(UnencodableValue):
        await manager.send_groups(["g"], "Tick", (object(),))
    assert names(*only_json) == []


async def test_all_except_connections_and_users() -> None:
    manager = InMemoryHubLifetimeManager()
    a, b, c = (FakeConnection(x, JSON, user="u1" if x != "c" else "u2") for x in "abc")
    await connected(manager, a, b, c)

    await manager.send_all("M", (), exclude=["b"])
    assert names(a, b, c) == ["a", "c"]

    for conn in (a, b, c):
        conn.received.clear()
    await manager.send_connections(["b", "missing"], "M", ())
    assert names(a, b, c) == ["b"]

    for conn in (a, b, c):
        conn.received.clear()
    await manager.send_connection("c", "M", ())
    await manager.send_connection("missing", "M", ())
    assert names(a, b, c) == ["c"]

    for conn in (a, b, c):
        conn.received.clear()
    await manager.send_users(["u1"], "M", ())
    assert names(a, b, c) == ["a", "b"]


async def test_groups_and_cleanup_on_disconnect() -> None:
    manager = InMemoryHubLifetimeManager()
    a, b, c = (FakeConnection(x, JSON) for x in "abc")
    await connected(manager, a, b, c)
    await manager.add_to_group("a", "room")
    await manager.add_to_group("b", "room")
    await manager.add_to_group("b", "lobby")
    await manager.add_to_group("c", "other")

    await manager.send_groups(["room"], "M", (), exclude=["a"])
    assert names(a, b, c) == ["b"]

    b.received.clear()
    await manager.send_groups(["room", "other"], "M", ())
    assert names(a, b, c) == ["a", "b", "c"]
    assert len(a.received) == 1, "a member of two targeted groups gets one copy"

    await manager.remove_from_group("a", "room")
    assert manager.groups_of("b") == {"room", "lobby"}
    await manager.on_disconnected(b)
    assert manager.groups_of("b") == frozenset()
    for conn in (a, b, c):
        conn.received.clear()
    await manager.send_groups(["room", "lobby"], "M", ())
    assert names(a, b, c) == []
    assert "room" not in manager.groups and "lobby" not in manager.groups, "empty groups are forgotten"


async def test_group_changes_for_an_unknown_connection_are_an_error() -> None:
    manager = InMemoryHubLifetimeManager()
    with pytest.raises(ConnectionError, match=r"Connection 'ghost' does not exist\."):
        await manager.add_to_group("ghost", "room")
    with pytest.raises(ConnectionError, match=r"Connection 'ghost' does not exist\."):
        await manager.remove_from_group("ghost", "room")
    assert manager.groups == {}


async def test_client_result_for_unknown_connection() -> None:
    manager = InMemoryHubLifetimeManager()
    with pytest.raises(ConnectionError, match="does not exist"):
        await manager.invoke_connection("nobody", "M", (), 1.0)


async def _asked(connection: FakeConnection) -> InvocationMessage:
    """The invocation the manager writes to the client; taken, so the next call waits for a new one."""
    while not connection.messages:
        await asyncio.sleep(0)
    message = connection.messages.pop()
    assert isinstance(message, InvocationMessage)
    return message


async def test_client_results_are_settled_through_the_manager() -> None:
    manager = InMemoryHubLifetimeManager()
    a, b = FakeConnection("a", JSON), FakeConnection("b", JSON)
    await connected(manager, a, b)

    call = asyncio.create_task(manager.invoke_connection("a", "GetName", ("x",), 5.0))
    asked = await _asked(a)
    assert (asked.target, asked.arguments) == ("GetName", ["x"])
    invocation_id = asked.invocation_id
    assert invocation_id is not None and len(invocation_id) == 22, "16 random bytes, base64, '==' trimmed"
    assert len(base64.b64decode(invocation_id + "==")) == 16

    manager.set_connection_result("b", CompletionMessage.with_result(invocation_id, "wrong connection"))
    assert not call.done(), "only the asked connection may answer"
    manager.set_connection_result("a", CompletionMessage.with_result(invocation_id, "Ada"))
    assert await call == "Ada"

    failing = asyncio.create_task(manager.invoke_connection("a", "GetName", (), 5.0))
    asked = await _asked(a)
    assert asked.invocation_id != invocation_id
    assert asked.invocation_id is not None
    manager.set_connection_result("a", CompletionMessage.with_error(asked.invocation_id, "no name"))
    with pytest.raises(HubException, match="no name"):
        await failing


async def test_a_client_leaving_fails_its_pending_results_and_times_out() -> None:
    manager = InMemoryHubLifetimeManager()
    a = FakeConnection("a", JSON)
    await connected(manager, a)
    call = asyncio.create_task(manager.invoke_connection("a", "Slow", (), None))
    await _asked(a)
    await manager.on_disconnected(a)
    with pytest.raises(ConnectionError, match=r"Connection 'a' disconnected\."):
        await call

    await connected(manager, a)
    with pytest.raises(TimeoutError):
        await manager.invoke_connection("a", "Slow", (), 0.01)


@dataclasses.dataclass
class _Point:
    x: int


async def test_hub_name_and_protocols_come_from_map_hub_unless_given() -> None:
    manager = InMemoryHubLifetimeManager()
    manager.configure("Chat.Hubs.ChatHub", ["json"])
    assert manager.hub_name == "Chat.Hubs.ChatHub"
    assert [p.name for p in manager.protocols] == ["json"]
    manager.configure("Other", ["messagepack"])  # a second path sharing the manager
    assert manager.hub_name == "Chat.Hubs.ChatHub"
    assert [p.name for p in manager.protocols] == ["json", "messagepack"]
    await connected(manager, FakeConnection("j", JSON), FakeConnection("m", MESSAGEPACK))
    assert set(manager.serialize("M", (_Point(1),)).payloads) == {"json", "messagepack"}


async def test_a_protocol_nobody_here_uses_is_not_encoded() -> None:
    manager = InMemoryHubLifetimeManager()
    json_client, msgpack_client = FakeConnection("j", JSON), FakeConnection("m", MESSAGEPACK)
    await connected(manager, json_client)
    assert set(manager.serialize("M", (1,)).payloads) == {"json"}
    await connected(manager, msgpack_client)
    assert set(manager.serialize("M", (1,)).payloads) == {"json", "messagepack"}
    await manager.on_disconnected(msgpack_client)
    await manager.on_disconnected(msgpack_client)  # twice: counted once
    assert set(manager.serialize("M", (1,)).payloads) == {"json"}
