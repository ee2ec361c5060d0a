"""What ASP.NET Core's Redis backplane puts on the wire, as plain functions on bytes (sans-I/O).

Channel names and MessagePack layouts follow `Microsoft.AspNetCore.SignalR.StackExchangeRedis`
(`RedisChannels`, `RedisProtocol`), so a Python server and an ASP.NET Core server can share one
Redis and one hub. The message type is implied by the channel; readers accept arrays longer
than they need, as .NET's do, and refuse shorter ones with .NET's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack


class BackplaneProtocolError(ValueError):
    """A backplane message that does not have the layout its channel implies."""


class RedisChannels:
    """`{prefix}{hub}:...` as bytes. The prefix is StackExchange.Redis's ChannelPrefix, joined
    with no separator; `hub` is the hub's name on every server (.NET: the hub's full type name)."""

    __slots__ = ("_base", "ack", "all", "groups", "returns")

    def __init__(self, hub_name: str, server_name: str, prefix: str = "") -> None:
        self._base = f"{prefix}{hub_name}:"
        self.all = self._name("all")
        self.groups = self._name("internal:groups")
        self.ack = self._name(f"internal:ack:{server_name}")
        self.returns = self._name(f"internal:return:{server_name}")

    def _name(self, rest: str) -> bytes:
        return (self._base + rest).encode()

    def connection(self, connection_id: str) -> bytes:
        return self._name(f"connection:{connection_id}")

    def group(self, group: str) -> bytes:
        return self._name(f"group:{group}")

    def user(self, user_id: str) -> bytes:
        return self._name(f"user:{user_id}")

    def ack_of(self, server_name: str) -> bytes:
        return self._name(f"internal:ack:{server_name}")


def _array(data: bytes, minimum: int, kind: str) -> list[Any]:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BackplaneProtocolError(f"Invalid {kind} message: {exc}") from None
    if not isinstance(value, list):
        raise BackplaneProtocolError(f"Invalid {kind} message: not an array.")
    if len(value) < minimum:
        raise BackplaneProtocolError(f"Insufficient items in {kind} array.")
    return value


def _string(value: Any, kind: str) -> str:
    if not isinstance(value, str):
        raise BackplaneProtocolError(f"Invalid {kind} message: expected a string.")
    return value


def _int(value: Any, kind: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BackplaneProtocolError(f"Invalid {kind} message: expected an integer.")
    return value


# -- invocations: to all, a group, a user or a connection -----------------------------------
@dataclass(frozen=True, slots=True)
class RedisInvocation:
    """Framed bytes per hub protocol name; with `invocation_id`, the caller awaits a client
    result on `return_channel`."""

    payloads: dict[str, bytes]
    excluded: tuple[str, ...] = ()
    invocation_id: str | None = None
    return_channel: str | None = None


def write_invocation(
    payloads: dict[str, bytes],
    excluded: tuple[str, ...] | list[str] = (),
    invocation_id: str | None = None,
    return_channel: str | None = None,
) -> bytes:
    items: list[Any] = [list(excluded), payloads]
    if invocation_id is not None:
        items += [invocation_id, return_channel]
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


def read_invocation(data: bytes) -> RedisInvocation:
    items = _array(data, 2, "Invocation")
    excluded, payloads = items[0], items[1]
    if not isinstance(excluded, list) or not all(isinstance(i, str) for i in excluded):
        raise BackplaneProtocolError("Invalid Invocation message: excluded ids must be strings.")
    if not isinstance(payloads, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes) for k, v in payloads.items()
    ):
        raise BackplaneProtocolError("Invalid Invocation message: payloads must map protocol names to bytes.")
    if len(items) > 3:
        return RedisInvocation(
            payloads, tuple(excluded), _string(items[2], "Invocation"), _string(items[3], "Invocation")
        )
    return RedisInvocation(payloads, tuple(excluded))


# -- group membership of a connection on another server, and its ack -------------------------
class GroupAction(IntEnum):
    """What a GroupCommand does; numbered as .NET's, so ASP.NET Core servers on the same Redis read it."""

    ADD = 1  # 0 is unused on purpose, as in .NET's GroupAction
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class GroupCommand:
    """A group change for a connection on another server: the server holding it applies it and acks `id`
    on `server_name`'s ack channel."""

    id: int
    server_name: str
    action: GroupAction
    group: str
    connection_id: str


def write_group_command(command: GroupCommand) -> bytes:
    items = [command.id, command.server_name, int(command.action), command.group, command.connection_id]
    return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]


def read_group_command(data: bytes) -> GroupCommand:
    items = _array(data, 5, "GroupCommand")
    try:
        action = GroupAction(_int(items[2], "GroupCommand"))
    except ValueError:
        raise BackplaneProtocolError(f"Invalid GroupCommand message: unknown action {items[2]}.") from None
    return GroupCommand(
        _int(items[0], "GroupCommand"),
        _string(items[1], "GroupCommand"),
        action,
        _string(items[3], "GroupCommand"),
        _string(items[4], "GroupCommand"),
    )


def write_ack(ack_id: int) -> bytes:
    return msgpack.packb([ack_id])  # type: ignore[no-any-return]


def read_ack(data: bytes) -> int:
    return _int(_array(data, 1, "Ack")[0], "Ack")


# -- a client's answer, returned to the server that asked -------------------------------------
def write_completion(protocol_name: str, framed_completion: bytes) -> bytes:
    """`framed_completion` is the Completion as the client's own protocol frames it."""
    return msgpack.packb([protocol_name, framed_completion], use_bin_type=True)  # type: ignore[no-any-return]


def read_completion(data: bytes) -> tuple[str, bytes]:
    items = _array(data, 2, "Completion")
    if not isinstance(items[1], bytes):
        raise BackplaneProtocolError("Invalid Completion message: expected bytes.")
    return _string(items[0], "Completion"), items[1]
