"""The in-memory lifetime manager over stand-in connections: routing, and encode-once."""

from __future__ import annotations

from typing import Any

import pytest

from signalr_chat.signalr.lifetime import InMemoryHubLifetimeManager
from signalr_chat.signalr.protocol import JSON, MESSAGEPACK, HubProtocol, JsonHubProtocol


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
        self.group_names: set[str] = set()
        self.received: list[bytes] = []

    def write_encoded(self, data: bytes, sequenced: bool = True) -> None:
        self.received.append(data)


async def connected(manager: InMemoryHubLifetimeManager, *connections: FakeConnection) -> None:
    for connection in connections:
        await manager.on_connected(connection)  # type: ignore[arg-type]


def names(*connections: FakeConnection) -> list[str]:
    return [c.connection_id for c in connections if c.received]


async def test_broadcast_is_encoded_once_per_protocol_and_shared() -> None:
    counting = CountingJson()
    manager = InMemoryHubLifetimeManager()
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
    await manager.send_users(["u1"], "M", ())
    assert names(a, b, c) == ["a", "b"]


async def test_groups_and_cleanup_on_disconnect() -> None:
    manager = InMemoryHubLifetimeManager()
    a, b, c = (FakeConnection(x, JSON) for x in "abc")
    await connected(manager, a, b, c)
    await manager.add_to_group("a", "room")
    await manager.add_to_group("b", "room")
    await manager.add_to_group("c", "other")

    await manager.send_groups(["room"], "M", (), exclude=["a"])
    assert names(a, b, c) == ["b"]

    b.received.clear()
    await manager.send_groups(["room", "other"], "M", ())
    assert names(a, b, c) == ["a", "b", "c"]
    assert len(a.received) == 1, "a member of two targeted groups gets one copy"

    await manager.remove_from_group("a", "room")
    await manager.on_disconnected(b)  # type: ignore[arg-type]
    for conn in (a, b, c):
        conn.received.clear()
    await manager.send_groups(["room"], "M", ())
    assert names(a, b, c) == []
    assert "room" not in manager.groups, "empty groups are forgotten"


async def test_client_result_for_unknown_connection() -> None:
    manager = InMemoryHubLifetimeManager()
    with pytest.raises(ConnectionError, match="does not exist"):
        await manager.invoke_connection("nobody", "M", (), 1.0)
