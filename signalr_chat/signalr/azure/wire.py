"""The Azure SignalR Service protocol between an app server and the service, on bytes (sans-I/O).

In default mode the app server does not accept clients itself: it opens outbound WebSockets to
Azure SignalR Service (ASRS) and the service multiplexes every client connection over them as
service messages. This module is that wire format and nothing else, plain functions and frozen
dataclasses on bytes like `signalr.redis.wire`, so the layouts can be checked byte for byte
against the SDK's golden vectors without a socket or an event loop.

Layouts follow what the current .NET SDK (`Azure/azure-signalr`) writes:
`src/Microsoft.Azure.SignalR.Protocols/ServiceProtocol.cs` and `ServiceMessage.cs` at commit
`37152ed9`, checked against `ServiceProtocolFacts.cs` at the same commit. The reader also takes
what the 2024-03 SDK (`31686ed7`) and older ones write (shorter arrays), since deployed SDKs of
every age talk to the same service. `specs/ServiceProtocol.md` in that repository is stale; the
code wins.

A frame is a VarInt length prefix (at most 5 bytes, below 2 GB) followed by one MessagePack
array `[type, ...]`. Most types end with the extension-members map `E` (int keys 1..6, only the
present ones, in key order; `80` when empty). `encode` gives the unframed array, `frame` adds
the prefix, `decode` reads one unframed array and `FrameReader` splits a byte stream into
messages however it was cut into WebSocket messages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Final, TypeAlias

import msgpack


class ServiceProtocolError(ValueError):
    """Bytes that are not a service message or frame as the SDK writes them."""


# -- enumerations --------------------------------------------------------------------------------
class MessageType(IntEnum):
    """`ServiceProtocolConstants`: the first element of every array."""

    HANDSHAKE_REQUEST = 1
    HANDSHAKE_RESPONSE = 2
    PING = 3
    OPEN_CONNECTION = 4
    CLOSE_CONNECTION = 5
    CONNECTION_DATA = 6
    MULTI_CONNECTION_DATA = 7
    USER_DATA = 8
    MULTI_USER_DATA = 9
    BROADCAST_DATA = 10
    JOIN_GROUP = 11
    LEAVE_GROUP = 12
    GROUP_BROADCAST_DATA = 13
    MULTI_GROUP_BROADCAST_DATA = 14
    SERVICE_ERROR = 15
    USER_JOIN_GROUP = 16
    USER_LEAVE_GROUP = 17
    JOIN_GROUP_WITH_ACK = 18
    LEAVE_GROUP_WITH_ACK = 19
    ACK = 20
    CHECK_USER_IN_GROUP_WITH_ACK = 21
    SERVICE_EVENT = 22
    CHECK_GROUP_EXISTENCE_WITH_ACK = 23
    CHECK_CONNECTION_EXISTENCE_WITH_ACK = 24
    CHECK_USER_EXISTENCE_WITH_ACK = 25
    USER_JOIN_GROUP_WITH_ACK = 26
    USER_LEAVE_GROUP_WITH_ACK = 27
    ACCESS_KEY_REQUEST = 28
    ACCESS_KEY_RESPONSE = 29
    CLOSE_CONNECTION_WITH_ACK = 30
    CLOSE_CONNECTIONS_WITH_ACK = 31
    CLOSE_USER_CONNECTIONS_WITH_ACK = 32
    CLOSE_GROUP_CONNECTIONS_WITH_ACK = 33
    CLIENT_INVOCATION = 34
    CLIENT_COMPLETION = 35
    ERROR_COMPLETION = 36
    SERVICE_MAPPING = 37
    CONNECTION_RECONNECT = 38
    CONNECTION_FLOW_CONTROL = 39
    GROUP_MEMBER_QUERY = 40


class ConnectionType(IntEnum):
    """Kind of server connection, in the HandshakeRequest (and the URL for on-demand ones)."""

    DEFAULT = 0  # the fixed connections of the primary endpoint; carry clients
    ON_DEMAND = 1  # opened when the service pings `target`; not restarted when it ends
    WEAK = 2  # secondary endpoints: send only, never carry clients


class MigrationLevel(IntEnum):
    """HandshakeRequest's `migrationLevel`: whether the service may move this server's clients elsewhere."""

    OFF = 0
    SHUTDOWN_ONLY = 1  # GracefulShutdown.Mode == MigrateClients
    ANY = 2


class DataMessageType(IntEnum):
    """ConnectionData E key 5: what the one hub message in the payload is (newest SDK)."""

    UNKNOWN = 0  # not written: the 2024-03 SDK sends untagged chunks
    HANDSHAKE = 1
    INVOCATION = 2  # Invocation, StreamInvocation, StreamItem, Completion, CancelInvocation
    OTHER = 3  # Ping, Ack, Sequence
    CLOSE = 4


class AckStatus(IntEnum):
    """Ack's `status`: how the service answered a `...WithAck` request (OK: done; NOT_FOUND: no such target)."""

    OK = 1
    NOT_FOUND = 2
    TIMEOUT = 3
    INTERNAL_SERVER_ERROR = 4


class ServiceEventObjectType(IntEnum):
    """ServiceEvent's `objectType`: what the service's event is about."""

    SERVICE_INSTANCE = 0
    CONNECTION = 1
    USER = 2
    GROUP = 3
    SERVER_CONNECTION = 4


class ServiceEventKind(IntEnum):
    """ServiceEvent's `kind`: what the service reports about that object (BUFFER_FULL: back-pressure)."""

    RELOADING = 0
    INVALID = 1
    NOT_EXISTED = 2
    BUFFER_FULL = 3


class FlowControlType(IntEnum):
    """ConnectionFlowControl's `connectionType` (not the handshake's ConnectionType)."""

    CLIENT = 1
    SERVER = 2


class FlowControlOperation(IntEnum):
    """ConnectionFlowControl's `operation`: pause or resume a client, or take a server connection offline."""

    PAUSE = 1  # service -> server: stop forwarding this client's outgoing messages
    PAUSE_ACK = 2  # server -> service, once per Pause
    RESUME = 3
    OFFLINE = 4  # with SERVER: that server connection is going away; send through others


class GracefulShutdownMode(IntEnum):
    """The `n` of the `["shutdown", "fin:n"]` ping."""

    OFF = 0  # drop the clients
    MIGRATE_CLIENTS = 1
    WAIT_FOR_CLIENTS_CLOSE = 2


# -- framing limits ------------------------------------------------------------------------------
MAX_VARINT_BYTES: Final = 5
MAX_FRAME_LENGTH: Final = 0x7FFFFFFF  # the SDK's parser refuses 2 GB and more
# The SDK sets no limit below 2 GB. A frame from the service carries one client's message (or a
# piece of one), which the hub's own receive limit bounds far lower, so 16 MiB is generous and
# still keeps a broken or hostile peer from making the reader buffer gigabytes.
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024

Payloads: TypeAlias = dict[str, bytes]  # hub protocol name -> complete framed hub message
Headers: TypeAlias = dict[str, tuple[str, ...]]
Claims: TypeAlias = tuple[tuple[str, str], ...]  # (type, value) pairs; a type may repeat

_OVER_2GB: Final = "Messages over 2GB in size are not supported."


# -- messages -----------------------------------------------------------------------------------
# One frozen dataclass per type. Fields follow the C# constructors, then the settable properties,
# then the E members the type carries (`tracing_id` key 1, `ttl` 2, `protocol` 3, `filter` 4,
# `data_message_type` 5, `is_partial` 6). Lists are tuples and maps dicts, stored as read:
# use `find_payload`/`find_header` for the case-insensitive lookups the SDK does.
@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """Server -> service, first on every server connection: protocol version, connection type, migration."""

    version: int
    connection_type: int = ConnectionType.DEFAULT
    target: str = ""  # the service instance id for ON_DEMAND; written as "" for DEFAULT
    migration_level: int = MigrationLevel.OFF
    allow_stateful_reconnects: bool = False
    message_type: ClassVar[MessageType] = MessageType.HANDSHAKE_REQUEST


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """Service -> server, the first frame back: an empty `error_message` means the connection is up."""

    error_message: str | None = ""  # empty or None: success
    connection_id: str | None = None
    message_type: ClassVar[MessageType] = MessageType.HANDSHAKE_RESPONSE


@dataclass(frozen=True, slots=True)
class Ping:
    """Flat key/value string pairs; `[]` is the plain keep-alive. See the ping helpers below."""

    messages: tuple[str, ...] = ()
    message_type: ClassVar[MessageType] = MessageType.PING

    def get(self, key: str) -> str | None:
        """The value after the first `key` at an even index, as the SDK's TryGetValue scans."""
        messages = self.messages
        for i in range(0, len(messages) - 1, 2):
            if messages[i] == key:
                return messages[i + 1]
        return None


@dataclass(frozen=True, slots=True)
class OpenConnection:
    """Service -> server: a client connected; its claims, headers, query and protocol make a `Connection`."""

    connection_id: str
    claims: Claims = ()
    headers: Headers = field(default_factory=dict)
    query_string: str | None = ""  # the client's query to the service, without a leading '?'
    tracing_id: int | None = None
    protocol: str | None = None  # the client's hub protocol, read by the service from its handshake
    message_type: ClassVar[MessageType] = MessageType.OPEN_CONNECTION


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Both ways: the service says a client left (nothing is sent back), the server that the hub ended it."""

    connection_id: str
    error_message: str = ""  # a nil on the wire (old writers) reads as ""
    headers: Headers = field(default_factory=dict)
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLOSE_CONNECTION


@dataclass(frozen=True, slots=True)
class ConnectionData:
    """Both ways: one client's raw SignalR bytes, its handshake included; a partial one waits for the rest."""

    connection_id: str
    payload: bytes  # raw transport bytes of the client's SignalR connection
    tracing_id: int | None = None
    data_message_type: int = DataMessageType.UNKNOWN
    is_partial: bool = False
    message_type: ClassVar[MessageType] = MessageType.CONNECTION_DATA


@dataclass(frozen=True, slots=True)
class MultiConnectionData:
    """Server -> service: one hub message, a payload per protocol, for these connections (or one client)."""

    connection_ids: tuple[str, ...]
    payloads: Payloads
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.MULTI_CONNECTION_DATA


@dataclass(frozen=True, slots=True)
class UserData:
    """Server -> service: one hub message for every connection of a user."""

    user_id: str
    payloads: Payloads
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.USER_DATA


@dataclass(frozen=True, slots=True)
class MultiUserData:
    """Server -> service: one hub message for every connection of these users."""

    user_ids: tuple[str, ...]
    payloads: Payloads
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.MULTI_USER_DATA


@dataclass(frozen=True, slots=True)
class BroadcastData:
    """Server -> service: one hub message for every client of the hub but the excluded connections."""

    payloads: Payloads
    excluded_connection_ids: tuple[str, ...] = ()
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.BROADCAST_DATA


@dataclass(frozen=True, slots=True)
class JoinGroup:
    """Server -> service: add a connection to a group, unacknowledged (JoinGroupWithAck waits for an Ack)."""

    connection_id: str
    group: str
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.JOIN_GROUP


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    """Server -> service: remove a connection from a group, unacknowledged (LeaveGroupWithAck waits)."""

    connection_id: str
    group: str | None
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.LEAVE_GROUP


@dataclass(frozen=True, slots=True)
class GroupBroadcastData:
    """Server -> service: one hub message for a group but the excluded connections and users."""

    group: str
    payloads: Payloads
    excluded_connection_ids: tuple[str, ...] = ()
    excluded_user_ids: tuple[str, ...] = ()
    caller_user_id: str | None = None
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.GROUP_BROADCAST_DATA


@dataclass(frozen=True, slots=True)
class MultiGroupBroadcastData:
    """Server -> service: one hub message for the connections of these groups."""

    groups: tuple[str, ...]
    payloads: Payloads
    tracing_id: int | None = None
    filter: str | None = None
    message_type: ClassVar[MessageType] = MessageType.MULTI_GROUP_BROADCAST_DATA


@dataclass(frozen=True, slots=True)
class ServiceError:
    """Service -> server: this server connection failed; the server writes no more and reads until it closes."""

    error_message: str
    message_type: ClassVar[MessageType] = MessageType.SERVICE_ERROR


@dataclass(frozen=True, slots=True)
class UserJoinGroup:
    """Server -> service (Management SDK): add a user's connections to a group, for `ttl` seconds if set."""

    user_id: str
    group: str
    tracing_id: int | None = None
    ttl: int | None = None  # seconds
    message_type: ClassVar[MessageType] = MessageType.USER_JOIN_GROUP


@dataclass(frozen=True, slots=True)
class UserLeaveGroup:
    """Server -> service (Management SDK): remove a user's connections from a group."""

    user_id: str
    group: str | None
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.USER_LEAVE_GROUP


@dataclass(frozen=True, slots=True)
class JoinGroupWithAck:
    """Server -> service: add a connection to a group; the service answers with an Ack of the same id."""

    connection_id: str
    group: str
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.JOIN_GROUP_WITH_ACK


@dataclass(frozen=True, slots=True)
class LeaveGroupWithAck:
    """Server -> service: remove a connection from a group; the service answers with an Ack of the same id."""

    connection_id: str
    group: str | None
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.LEAVE_GROUP_WITH_ACK


@dataclass(frozen=True, slots=True)
class Ack:
    """Service -> server: the answer to a `...WithAck` request or a GroupMemberQuery, matched by `ack_id`."""

    ack_id: int
    status: int  # an AckStatus; kept as read, since the service may use values the SDK does not name
    message: str | None = ""
    payload: bytes | None = None  # GroupMemberQuery's reply, msgpack
    message_type: ClassVar[MessageType] = MessageType.ACK


@dataclass(frozen=True, slots=True)
class CheckUserInGroupWithAck:
    """Server -> service (Management SDK): is the user in the group? The Ack's status answers."""

    user_id: str
    group: str
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CHECK_USER_IN_GROUP_WITH_ACK


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """Service -> server: a warning about an object (a connection, a user, a group ...), such as a full buffer."""

    object_type: int  # a ServiceEventObjectType
    id: str | None
    kind: int  # a ServiceEventKind
    message: str
    message_type: ClassVar[MessageType] = MessageType.SERVICE_EVENT


@dataclass(frozen=True, slots=True)
class CheckGroupExistenceWithAck:
    """Server -> service (Management SDK): does the group exist? The Ack's status answers."""

    group: str
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CHECK_GROUP_EXISTENCE_WITH_ACK


@dataclass(frozen=True, slots=True)
class CheckConnectionExistenceWithAck:
    """Server -> service (Management SDK): does the connection exist? The Ack's status answers."""

    connection_id: str
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CHECK_CONNECTION_EXISTENCE_WITH_ACK


@dataclass(frozen=True, slots=True)
class CheckUserExistenceWithAck:
    """Server -> service (Management SDK): does the user have a connection? The Ack's status answers."""

    user_id: str
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CHECK_USER_EXISTENCE_WITH_ACK


@dataclass(frozen=True, slots=True)
class UserJoinGroupWithAck:
    """Server -> service (Management SDK): UserJoinGroup, answered by an Ack of the same id."""

    user_id: str
    group: str
    ack_id: int
    tracing_id: int | None = None
    ttl: int | None = None  # seconds
    message_type: ClassVar[MessageType] = MessageType.USER_JOIN_GROUP_WITH_ACK


@dataclass(frozen=True, slots=True)
class UserLeaveGroupWithAck:
    """Server -> service (Management SDK): UserLeaveGroup, answered by an Ack of the same id."""

    user_id: str
    group: str | None
    ack_id: int
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.USER_LEAVE_GROUP_WITH_ACK


@dataclass(frozen=True, slots=True)
class AccessKeyRequest:
    """Server -> service under Entra ID (on connect, then every 10 min): asks for the client-token key."""

    token: str | None
    kid: str | None = None
    message_type: ClassVar[MessageType] = MessageType.ACCESS_KEY_REQUEST


@dataclass(frozen=True, slots=True)
class AccessKeyResponse:
    """Service -> server: the key id and access key asked for, or the error type and message."""

    kid: str | None = None
    access_key: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    message_type: ClassVar[MessageType] = MessageType.ACCESS_KEY_RESPONSE


@dataclass(frozen=True, slots=True)
class CloseConnectionWithAck:
    """Obsolete in the SDK; kept so the reader and the golden vectors cover it."""

    connection_id: str
    ack_id: int
    reason: str | None = None
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLOSE_CONNECTION_WITH_ACK


@dataclass(frozen=True, slots=True)
class CloseConnectionsWithAck:
    """Obsolete in the SDK; kept so the reader and the golden vectors cover it."""

    ack_id: int
    reason: str | None = None
    excluded_connection_ids: tuple[str, ...] = ()
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLOSE_CONNECTIONS_WITH_ACK


@dataclass(frozen=True, slots=True)
class CloseUserConnectionsWithAck:
    """Server -> service (Management SDK): close a user's connections but the excluded; Ack'd."""

    user_id: str
    ack_id: int
    reason: str | None = None
    excluded_connection_ids: tuple[str, ...] = ()
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLOSE_USER_CONNECTIONS_WITH_ACK


@dataclass(frozen=True, slots=True)
class CloseGroupConnectionsWithAck:
    """Server -> service (Management SDK): close a group's connections but the excluded; Ack'd."""

    group: str
    ack_id: int
    reason: str | None = None
    excluded_connection_ids: tuple[str, ...] = ()
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLOSE_GROUP_CONNECTIONS_WITH_ACK


@dataclass(frozen=True, slots=True)
class ClientInvocation:
    """Both ways: a server asks a client for a result; the client's server hears of it, to route the answer."""

    invocation_id: str
    connection_id: str
    caller_server_id: str
    payloads: Payloads
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLIENT_INVOCATION


@dataclass(frozen=True, slots=True)
class ClientCompletion:
    """`protocol` goes on the wire twice: as the fifth element and as E key 3."""

    invocation_id: str
    connection_id: str
    caller_server_id: str
    protocol: str | None
    payload: bytes
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.CLIENT_COMPLETION


@dataclass(frozen=True, slots=True)
class ErrorCompletion:
    """Both ways: a client result failed (or its client left); the service forwards it to the calling server."""

    invocation_id: str
    connection_id: str
    caller_server_id: str
    error: str | None
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.ERROR_COMPLETION


@dataclass(frozen=True, slots=True)
class ServiceMapping:
    """Service -> server: which service instance holds the client a pending client result was asked of."""

    invocation_id: str
    connection_id: str
    instance_id: str
    message_type: ClassVar[MessageType] = MessageType.SERVICE_MAPPING


@dataclass(frozen=True, slots=True)
class ConnectionReconnect:
    """Stateful reconnect: drop this client's buffered partial ConnectionData."""

    connection_id: str
    message_type: ClassVar[MessageType] = MessageType.CONNECTION_RECONNECT


@dataclass(frozen=True, slots=True)
class ConnectionFlowControl:
    """C# constructor order (id, operation, type); the wire has the type first."""

    connection_id: str
    operation: FlowControlOperation
    connection_type: FlowControlType
    message_type: ClassVar[MessageType] = MessageType.CONNECTION_FLOW_CONTROL


@dataclass(frozen=True, slots=True)
class GroupMemberQuery:
    """The reply is an Ack whose payload is msgpack `[[[connectionId, userId?], ...], token?]`.
    Still changing upstream (`max` becomes `MaxPageSize`/`Top` in the newest public API)."""

    group: str
    ack_id: int
    max: int
    continuation_token: str | None = None
    tracing_id: int | None = None
    message_type: ClassVar[MessageType] = MessageType.GROUP_MEMBER_QUERY


ServiceMessage: TypeAlias = (
    HandshakeRequest
    | HandshakeResponse
    | Ping
    | OpenConnection
    | CloseConnection
    | ConnectionData
    | MultiConnectionData
    | UserData
    | MultiUserData
    | BroadcastData
    | JoinGroup
    | LeaveGroup
    | GroupBroadcastData
    | MultiGroupBroadcastData
    | ServiceError
    | UserJoinGroup
    | UserLeaveGroup
    | JoinGroupWithAck
    | LeaveGroupWithAck
    | Ack
    | CheckUserInGroupWithAck
    | ServiceEvent
    | CheckGroupExistenceWithAck
    | CheckConnectionExistenceWithAck
    | CheckUserExistenceWithAck
    | UserJoinGroupWithAck
    | UserLeaveGroupWithAck
    | AccessKeyRequest
    | AccessKeyResponse
    | CloseConnectionWithAck
    | CloseConnectionsWithAck
    | CloseUserConnectionsWithAck
    | CloseGroupConnectionsWithAck
    | ClientInvocation
    | ClientCompletion
    | ErrorCompletion
    | ServiceMapping
    | ConnectionReconnect
    | ConnectionFlowControl
    | GroupMemberQuery
)


# -- case-insensitive lookups (the SDK's readers build OrdinalIgnoreCase dictionaries) -----------
def _find(mapping: Mapping[str, Any], key: str) -> Any:
    value = mapping.get(key)
    if value is not None:
        return value
    folded = key.casefold()
    for name, value in mapping.items():
        if name.casefold() == folded:
            return value
    return None


def find_payload(payloads: Mapping[str, bytes], protocol: str) -> bytes | None:
    """The payload for a hub protocol name (`json`, `messagepack`), ignoring case."""
    return _find(payloads, protocol)  # type: ignore[no-any-return]


def find_header(headers: Mapping[str, tuple[str, ...]], name: str) -> tuple[str, ...] | None:
    """An OpenConnection/CloseConnection header's values, ignoring the name's case."""
    return _find(headers, name)  # type: ignore[no-any-return]


# -- pings (`RuntimeServicePingMessages`): flat key/value pairs -----------------------------------
KEEPALIVE_PING: Final = Ping()


def keepalive_ping(clients_in_hub: int, clients_on_connection: int) -> Ping:
    """The SDK's keep-alive, with the hub's client count and this connection's."""
    return Ping(("#clientInHub", str(clients_in_hub), "#client", str(clients_on_connection)))


def status_ping() -> Ping:
    """The server's periodic status ping; the code sends "1" where the spec says empty."""
    return Ping(("status", "1"))


def servers_ping() -> Ping:
    """Asks for the server ids during a multi-endpoint hot reload."""
    return Ping(("servers", ""))


def shutdown_ping(mode: GracefulShutdownMode | int) -> Ping:
    """The graceful-shutdown fin; the key is `shutdown` (the spec's `offline` is something else)."""
    return Ping(("shutdown", f"fin:{int(mode)}"))


def is_finack(ping: Ping) -> bool:
    return ping.get("shutdown") == "finack"


def ping_target(ping: Ping) -> str | None:
    """Rebalance: the service instance to open an on-demand connection to."""
    return ping.get("target")


def ping_offline(ping: Ping) -> str | None:
    """A service instance went away: clean up the clients whose `Asrs-Instance-Id` is this."""
    return ping.get("offline")


def is_echo(ping: Ping) -> bool:
    """The service asks for the identical ping back."""
    return ping.get("echo") is not None


def ping_status(ping: Ping) -> bool | None:
    """The service's status: True if it has clients ("1"), False ("0"), None if not a status.
    Extra pairs (`clientcount`, `servercount`, `capacity`) are there through `ping.get`."""
    value = ping.get("status")
    if value == "1":
        return True
    if value == "0":
        return False
    return None


def ping_message_logging(ping: Ping) -> bool | None:
    """`d-m`: turn message tracing ids on ("1") or off ("0")."""
    value = ping.get("d-m")
    if value == "1":
        return True
    if value == "0":
        return False
    return None


def ping_servers(ping: Ping) -> tuple[int, tuple[str, ...]] | None:
    """The service's `servers` reply `<ticks>:<id1>;<id2>...` as (ticks, ids); None if absent or
    not in that form (our own request carries an empty value)."""
    value = ping.get("servers")
    if not value:
        return None
    ticks, sep, ids = value.partition(":")
    if not sep:
        return None
    try:
        stamp = int(ticks)
    except ValueError:
        return None
    return stamp, tuple(i for i in ids.split(";") if i)


# -- encoding ------------------------------------------------------------------------------------
# One packer for every message, as in the hub protocol: building a Packer allocates its buffer
# each time (a broadcast encodes in about half the time of `msgpack.packb`). A Packer is not
# thread-safe, so encode from one thread at a time: the event loop's. msgpack picks the smallest
# int encodings and str8 for 32..255-byte strings, as MessagePack-CSharp does (the golden vectors
# check both).
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)
_NO_EXT: Final[dict[int, Any]] = {}  # shared; never mutated


def _pack(value: Any) -> bytes:
    try:
        return _packer.pack(value)  # type: ignore[no-any-return]
    except BaseException:
        _packer.reset()
        raise


def _ext_tracing(tracing_id: int | None) -> dict[int, Any]:
    return _NO_EXT if tracing_id is None else {1: tracing_id}


def _ext_filter(tracing_id: int | None, filter_: str | None) -> dict[int, Any]:
    if filter_ is None:
        return _NO_EXT if tracing_id is None else {1: tracing_id}
    return {4: filter_} if tracing_id is None else {1: tracing_id, 4: filter_}


def _ext_ttl(tracing_id: int | None, ttl: int | None) -> dict[int, Any]:
    if ttl is None:
        return _ext_tracing(tracing_id)
    return {2: ttl} if tracing_id is None else {1: tracing_id, 2: ttl}


def _ext_protocol(tracing_id: int | None, protocol: str | None) -> dict[int, Any]:
    if protocol is None:
        return _ext_tracing(tracing_id)
    return {3: protocol} if tracing_id is None else {1: tracing_id, 3: protocol}


def _enc_handshake_request(m: HandshakeRequest) -> bytes:
    target = "" if m.connection_type == ConnectionType.DEFAULT else m.target
    return _pack([1, m.version, m.connection_type, target, m.migration_level, _NO_EXT, m.allow_stateful_reconnects])


def _enc_handshake_response(m: HandshakeResponse) -> bytes:
    return _pack([2, m.error_message, _NO_EXT, m.connection_id])


def _enc_ping(m: Ping) -> bytes:
    return _pack([3, *m.messages])


def _enc_open_connection(m: OpenConnection) -> bytes:
    ext = _ext_protocol(m.tracing_id, m.protocol)
    claims = dict(m.claims)
    if len(claims) == len(m.claims):
        return _pack([4, m.connection_id, claims, m.headers, m.query_string, ext])
    # A claim type may repeat (roles), which a dict cannot hold: write that map pair by pair.
    parts = [b"\x96\x04", _pack(m.connection_id), _map_header(len(m.claims))]
    parts += [_pack(claim_type) + _pack(value) for claim_type, value in m.claims]
    parts += [_pack(m.headers), _pack(m.query_string), _pack(ext)]
    return b"".join(parts)


def _map_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x80 | count,))
    if count < 0x10000:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


def _enc_close_connection(m: CloseConnection) -> bytes:
    return _pack([5, m.connection_id, m.error_message or "", m.headers, _ext_tracing(m.tracing_id)])


def _enc_connection_data(m: ConnectionData) -> bytes:
    if m.tracing_id is None and not m.data_message_type and not m.is_partial:
        return _pack([6, m.connection_id, m.payload, _NO_EXT])
    ext: dict[int, Any] = {}
    if m.tracing_id is not None:
        ext[1] = m.tracing_id
    if m.data_message_type:
        ext[5] = m.data_message_type
    if m.is_partial:
        ext[6] = True
    return _pack([6, m.connection_id, m.payload, ext])


def _enc_multi_connection_data(m: MultiConnectionData) -> bytes:
    return _pack([7, m.connection_ids, m.payloads, _ext_filter(m.tracing_id, m.filter)])


def _enc_user_data(m: UserData) -> bytes:
    return _pack([8, m.user_id, m.payloads, _ext_filter(m.tracing_id, m.filter)])


def _enc_multi_user_data(m: MultiUserData) -> bytes:
    return _pack([9, m.user_ids, m.payloads, _ext_filter(m.tracing_id, m.filter)])


def _enc_broadcast_data(m: BroadcastData) -> bytes:
    return _pack([10, m.excluded_connection_ids, m.payloads, _ext_filter(m.tracing_id, m.filter)])


def _enc_join_group(m: JoinGroup) -> bytes:
    return _pack([11, m.connection_id, m.group, _ext_tracing(m.tracing_id)])


def _enc_leave_group(m: LeaveGroup) -> bytes:
    return _pack([12, m.connection_id, m.group, _ext_tracing(m.tracing_id)])


def _enc_group_broadcast_data(m: GroupBroadcastData) -> bytes:
    return _pack(
        [
            13,
            m.group,
            m.excluded_connection_ids,
            m.payloads,
            _ext_filter(m.tracing_id, m.filter),
            m.excluded_user_ids,
            m.caller_user_id,
        ]
    )


def _enc_multi_group_broadcast_data(m: MultiGroupBroadcastData) -> bytes:
    return _pack([14, m.groups, m.payloads, _ext_filter(m.tracing_id, m.filter)])


def _enc_service_error(m: ServiceError) -> bytes:
    return _pack([15, m.error_message])


def _enc_user_join_group(m: UserJoinGroup) -> bytes:
    return _pack([16, m.user_id, m.group, _ext_ttl(m.tracing_id, m.ttl)])


def _enc_user_leave_group(m: UserLeaveGroup) -> bytes:
    return _pack([17, m.user_id, m.group, _ext_tracing(m.tracing_id)])


def _enc_join_group_with_ack(m: JoinGroupWithAck) -> bytes:
    return _pack([18, m.connection_id, m.group, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_leave_group_with_ack(m: LeaveGroupWithAck) -> bytes:
    return _pack([19, m.connection_id, m.group, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_ack(m: Ack) -> bytes:
    return _pack([20, m.ack_id, m.status, m.message, _NO_EXT, m.payload])


def _enc_check_user_in_group_with_ack(m: CheckUserInGroupWithAck) -> bytes:
    return _pack([21, m.user_id, m.group, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_service_event(m: ServiceEvent) -> bytes:
    return _pack([22, m.object_type, m.id, m.kind, m.message, _NO_EXT])


def _enc_check_group_existence_with_ack(m: CheckGroupExistenceWithAck) -> bytes:
    return _pack([23, m.group, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_check_connection_existence_with_ack(m: CheckConnectionExistenceWithAck) -> bytes:
    return _pack([24, m.connection_id, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_check_user_existence_with_ack(m: CheckUserExistenceWithAck) -> bytes:
    return _pack([25, m.user_id, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_user_join_group_with_ack(m: UserJoinGroupWithAck) -> bytes:
    return _pack([26, m.user_id, m.group, m.ack_id, _ext_ttl(m.tracing_id, m.ttl)])


def _enc_user_leave_group_with_ack(m: UserLeaveGroupWithAck) -> bytes:
    return _pack([27, m.user_id, m.group, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_access_key_request(m: AccessKeyRequest) -> bytes:
    return _pack([28, m.token, m.kid, _NO_EXT])


def _enc_access_key_response(m: AccessKeyResponse) -> bytes:
    return _pack([29, m.kid, m.access_key, m.error_type, m.error_message, _NO_EXT])


def _enc_close_connection_with_ack(m: CloseConnectionWithAck) -> bytes:
    return _pack([30, m.connection_id, m.reason, m.ack_id, _ext_tracing(m.tracing_id)])


def _enc_close_connections_with_ack(m: CloseConnectionsWithAck) -> bytes:
    return _pack([31, m.reason, m.ack_id, m.excluded_connection_ids, _ext_tracing(m.tracing_id)])


def _enc_close_user_connections_with_ack(m: CloseUserConnectionsWithAck) -> bytes:
    return _pack([32, m.user_id, m.reason, m.ack_id, m.excluded_connection_ids, _ext_tracing(m.tracing_id)])


def _enc_close_group_connections_with_ack(m: CloseGroupConnectionsWithAck) -> bytes:
    return _pack([33, m.group, m.reason, m.ack_id, m.excluded_connection_ids, _ext_tracing(m.tracing_id)])


def _enc_client_invocation(m: ClientInvocation) -> bytes:
    return _pack([34, m.invocation_id, m.connection_id, m.caller_server_id, m.payloads, _ext_tracing(m.tracing_id)])


def _enc_client_completion(m: ClientCompletion) -> bytes:
    ext = _ext_protocol(m.tracing_id, m.protocol)
    return _pack([35, m.invocation_id, m.connection_id, m.caller_server_id, m.protocol, m.payload, ext])


def _enc_error_completion(m: ErrorCompletion) -> bytes:
    return _pack([36, m.invocation_id, m.connection_id, m.caller_server_id, m.error, _ext_tracing(m.tracing_id)])


def _enc_service_mapping(m: ServiceMapping) -> bytes:
    return _pack([37, m.invocation_id, m.connection_id, m.instance_id, _NO_EXT])


def _enc_connection_reconnect(m: ConnectionReconnect) -> bytes:
    return _pack([38, m.connection_id, _NO_EXT])


_FLOW_CONTROL_INTS = struct.Struct(">BiBi")  # d2 <int32> d2 <int32>


def _enc_connection_flow_control(m: ConnectionFlowControl) -> bytes:
    # The SDK writes these two ints as int32 whatever their size, so they are not left to msgpack.
    ints = _FLOW_CONTROL_INTS.pack(0xD2, m.connection_type, 0xD2, m.operation)
    return b"".join((b"\x95\x27", _pack(m.connection_id), ints, b"\x80"))


def _enc_group_member_query(m: GroupMemberQuery) -> bytes:
    return _pack([40, _ext_tracing(m.tracing_id), m.group, m.ack_id, m.max, m.continuation_token])


_ENCODERS: Final[dict[type[Any], Callable[[Any], bytes]]] = {
    HandshakeRequest: _enc_handshake_request,
    HandshakeResponse: _enc_handshake_response,
    Ping: _enc_ping,
    OpenConnection: _enc_open_connection,
    CloseConnection: _enc_close_connection,
    ConnectionData: _enc_connection_data,
    MultiConnectionData: _enc_multi_connection_data,
    UserData: _enc_user_data,
    MultiUserData: _enc_multi_user_data,
    BroadcastData: _enc_broadcast_data,
    JoinGroup: _enc_join_group,
    LeaveGroup: _enc_leave_group,
    GroupBroadcastData: _enc_group_broadcast_data,
    MultiGroupBroadcastData: _enc_multi_group_broadcast_data,
    ServiceError: _enc_service_error,
    UserJoinGroup: _enc_user_join_group,
    UserLeaveGroup: _enc_user_leave_group,
    JoinGroupWithAck: _enc_join_group_with_ack,
    LeaveGroupWithAck: _enc_leave_group_with_ack,
    Ack: _enc_ack,
    CheckUserInGroupWithAck: _enc_check_user_in_group_with_ack,
    ServiceEvent: _enc_service_event,
    CheckGroupExistenceWithAck: _enc_check_group_existence_with_ack,
    CheckConnectionExistenceWithAck: _enc_check_connection_existence_with_ack,
    CheckUserExistenceWithAck: _enc_check_user_existence_with_ack,
    UserJoinGroupWithAck: _enc_user_join_group_with_ack,
    UserLeaveGroupWithAck: _enc_user_leave_group_with_ack,
    AccessKeyRequest: _enc_access_key_request,
    AccessKeyResponse: _enc_access_key_response,
    CloseConnectionWithAck: _enc_close_connection_with_ack,
    CloseConnectionsWithAck: _enc_close_connections_with_ack,
    CloseUserConnectionsWithAck: _enc_close_user_connections_with_ack,
    CloseGroupConnectionsWithAck: _enc_close_group_connections_with_ack,
    ClientInvocation: _enc_client_invocation,
    ClientCompletion: _enc_client_completion,
    ErrorCompletion: _enc_error_completion,
    ServiceMapping: _enc_service_mapping,
    ConnectionReconnect: _enc_connection_reconnect,
    ConnectionFlowControl: _enc_connection_flow_control,
    GroupMemberQuery: _enc_group_member_query,
}


def encode(message: ServiceMessage) -> bytes:
    """The unframed MessagePack array, byte for byte as the current SDK writes it."""
    try:
        encoder = _ENCODERS[type(message)]
    except KeyError:
        raise TypeError(f"not a service message: {message!r}") from None
    return encoder(message)


def varint(length: int) -> bytes:
    """The frame's length prefix: 7 bits a byte, low group first, high bit = more follows."""
    if length < 0x80:
        return bytes((length,))
    out = bytearray()
    while length >= 0x80:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def frame(message: ServiceMessage) -> bytes:
    """One WebSocket-ready frame: the VarInt length prefix and the encoded message."""
    body = encode(message)
    return varint(len(body)) + body


# -- decoding ------------------------------------------------------------------------------------
class _Map:
    """A MessagePack map as its (key, value) pairs: keeps repeated claim types, allows int keys
    without building a dict, and tells maps apart from arrays."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Any, Any]]) -> None:
        self.pairs = pairs


def _fail(what: str, expected: str, value: Any) -> ServiceProtocolError:
    return ServiceProtocolError(f"Invalid service message: {what} must be {expected}, got {_kind(value)}.")


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, _Map):
        return "a map"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _need(items: list[Any], count: int, name: str) -> None:
    if len(items) < count:
        raise ServiceProtocolError(
            f"Invalid service message: {name} needs at least {count} array elements, got {len(items)}."
        )


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise _fail(what, "a string", value)
    return value


def _opt_str(value: Any, what: str) -> str | None:
    if value is not None and type(value) is not str:
        raise _fail(what, "a string or nil", value)
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _fail(what, "an integer", value)
    return value


def _bin(value: Any, what: str) -> bytes:
    if type(value) is not bytes:
        raise _fail(what, "binary", value)
    return value


def _strs(value: Any, what: str) -> tuple[str, ...]:
    # Writers send an empty array for a null list; a nil is taken as empty too.
    if value is None:
        return ()
    if type(value) is not list:
        raise _fail(what, "an array of strings", value)
    for item in value:
        if type(item) is not str:
            raise _fail(f"an item of {what}", "a string", item)
    return tuple(value)


def _pairs(value: Any, what: str) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if type(value) is not _Map:
        raise _fail(what, "a map", value)
    return value.pairs


def _payloads(value: Any, what: str) -> Payloads:
    pairs = _pairs(value, what)
    for key, item in pairs:
        if type(key) is not str:
            raise _fail(f"a key of {what}", "a string", key)
        if type(item) is not bytes:
            raise _fail(f"the value of {what}[{key!r}]", "binary", item)
    return dict(pairs)


def _headers(value: Any, what: str) -> Headers:
    headers: Headers = {}
    for key, item in _pairs(value, what):
        headers[_str(key, f"a key of {what}")] = _strs(item, f"the value of {what}[{key!r}]")
    return headers


def _claims(value: Any, what: str) -> Claims:
    return tuple(
        (_str(k, f"a claim type in {what}"), _str(v, f"a claim value in {what}")) for k, v in _pairs(value, what)
    )


def _ext(items: list[Any], index: int, name: str) -> dict[int, Any]:
    """E at `items[index]` if the array reaches it, as {key: value} for keys 1..6; other keys are
    skipped, as the newest SDK skips them."""
    if len(items) <= index:
        return _NO_EXT
    pairs = _pairs(items[index], f"{name}.E")
    if not pairs:
        return _NO_EXT
    return {key: item for key, item in pairs if type(key) is int and 1 <= key <= 6}


def _tracing_id(ext: dict[int, Any], name: str) -> int | None:
    value = ext.get(1)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _fail(f"{name}.E[1] (TracingId)", "an unsigned integer", value)
    return value


def _ttl(ext: dict[int, Any], name: str) -> int | None:
    value = ext.get(2)
    return None if value is None else _int(value, f"{name}.E[2] (Ttl)")


def _protocol(ext: dict[int, Any], name: str) -> str | None:
    return _opt_str(ext.get(3), f"{name}.E[3] (Protocol)")


def _filter(ext: dict[int, Any], name: str) -> str | None:
    return _opt_str(ext.get(4), f"{name}.E[4] (Filter)")


def _enum(cls: type[IntEnum], value: int) -> int:
    try:
        return cls(value)
    except ValueError:
        return value  # a value this SDK does not name yet: keep it as read


def _dec_handshake_request(items: list[Any]) -> HandshakeRequest:
    n = "HandshakeRequest"
    _need(items, 2, n)
    count = len(items)
    connection_type: int = ConnectionType.DEFAULT
    target = ""
    migration: int = MigrationLevel.OFF
    if count >= 4:
        connection_type = _enum(ConnectionType, _int(items[2], f"{n}.connectionType"))
        target = _opt_str(items[3], f"{n}.target") or ""
    if count >= 5:
        migration = _enum(MigrationLevel, _int(items[4], f"{n}.migrationLevel"))
    _ext(items, 5, n)
    allow = False
    if count >= 7:
        allow = items[6]
        if type(allow) is not bool:
            raise _fail(f"{n}.allowStatefulReconnects", "a bool", allow)
    return HandshakeRequest(_int(items[1], f"{n}.version"), connection_type, target, migration, allow)


def _dec_handshake_response(items: list[Any]) -> HandshakeResponse:
    n = "HandshakeResponse"
    _need(items, 2, n)
    _ext(items, 2, n)
    connection_id = _opt_str(items[3], f"{n}.connectionId") if len(items) >= 4 else None
    return HandshakeResponse(_opt_str(items[1], f"{n}.errorMessage"), connection_id)


def _dec_ping(items: list[Any]) -> Ping:
    for item in items[1:]:
        if type(item) is not str:
            raise _fail("a Ping string", "a string", item)
    return Ping(tuple(items[1:]))


def _dec_open_connection(items: list[Any]) -> OpenConnection:
    n = "OpenConnection"
    _need(items, 3, n)
    headers: Headers = {}
    query: str | None = ""
    if len(items) >= 5:
        headers = _headers(items[3], f"{n}.headers")
        query = _opt_str(items[4], f"{n}.queryString")
    ext = _ext(items, 5, n)
    return OpenConnection(
        _str(items[1], f"{n}.connectionId"),
        _claims(items[2], f"{n}.claims"),
        headers,
        query,
        _tracing_id(ext, n),
        _protocol(ext, n),
    )


def _dec_close_connection(items: list[Any]) -> CloseConnection:
    n = "CloseConnection"
    _need(items, 3, n)
    headers = _headers(items[3], f"{n}.headers") if len(items) >= 4 else {}
    ext = _ext(items, 4, n)
    error = _opt_str(items[2], f"{n}.errorMessage") or ""
    return CloseConnection(_str(items[1], f"{n}.connectionId"), error, headers, _tracing_id(ext, n))


def _dec_connection_data(items: list[Any]) -> ConnectionData:
    n = "ConnectionData"
    _need(items, 3, n)
    connection_id = _str(items[1], f"{n}.connectionId")
    payload = _bin(items[2], f"{n}.payload")
    ext = _ext(items, 3, n)
    if ext is _NO_EXT:
        return ConnectionData(connection_id, payload)
    kind = ext.get(5, 0)
    partial = ext.get(6, False)
    if type(kind) is not int:
        raise _fail(f"{n}.E[5] (DataMessageType)", "an integer", kind)
    if type(partial) is not bool:
        raise _fail(f"{n}.E[6] (IsPartial)", "a bool", partial)
    return ConnectionData(connection_id, payload, _tracing_id(ext, n), _enum(DataMessageType, kind), partial)


def _dec_multi_connection_data(items: list[Any]) -> MultiConnectionData:
    n = "MultiConnectionData"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return MultiConnectionData(
        _strs(items[1], f"{n}.connectionIds"),
        _payloads(items[2], f"{n}.payloads"),
        _tracing_id(ext, n),
        _filter(ext, n),
    )


def _dec_user_data(items: list[Any]) -> UserData:
    n = "UserData"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return UserData(
        _str(items[1], f"{n}.userId"), _payloads(items[2], f"{n}.payloads"), _tracing_id(ext, n), _filter(ext, n)
    )


def _dec_multi_user_data(items: list[Any]) -> MultiUserData:
    n = "MultiUserData"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return MultiUserData(
        _strs(items[1], f"{n}.userIds"), _payloads(items[2], f"{n}.payloads"), _tracing_id(ext, n), _filter(ext, n)
    )


def _dec_broadcast_data(items: list[Any]) -> BroadcastData:
    n = "BroadcastData"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return BroadcastData(
        _payloads(items[2], f"{n}.payloads"),
        _strs(items[1], f"{n}.excludedConnectionIds"),
        _tracing_id(ext, n),
        _filter(ext, n),
    )


def _dec_join_group(items: list[Any]) -> JoinGroup:
    n = "JoinGroup"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return JoinGroup(_str(items[1], f"{n}.connectionId"), _str(items[2], f"{n}.group"), _tracing_id(ext, n))


def _dec_leave_group(items: list[Any]) -> LeaveGroup:
    n = "LeaveGroup"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return LeaveGroup(_str(items[1], f"{n}.connectionId"), _opt_str(items[2], f"{n}.group"), _tracing_id(ext, n))


def _dec_group_broadcast_data(items: list[Any]) -> GroupBroadcastData:
    n = "GroupBroadcastData"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    excluded_users: tuple[str, ...] = ()
    caller: str | None = None
    if len(items) >= 7:
        excluded_users = _strs(items[5], f"{n}.excludedUserIds")
        caller = _opt_str(items[6], f"{n}.callerUserId")
    return GroupBroadcastData(
        _str(items[1], f"{n}.group"),
        _payloads(items[3], f"{n}.payloads"),
        _strs(items[2], f"{n}.excludedConnectionIds"),
        excluded_users,
        caller,
        _tracing_id(ext, n),
        _filter(ext, n),
    )


def _dec_multi_group_broadcast_data(items: list[Any]) -> MultiGroupBroadcastData:
    n = "MultiGroupBroadcastData"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return MultiGroupBroadcastData(
        _strs(items[1], f"{n}.groups"), _payloads(items[2], f"{n}.payloads"), _tracing_id(ext, n), _filter(ext, n)
    )


def _dec_service_error(items: list[Any]) -> ServiceError:
    _need(items, 2, "ServiceError")
    return ServiceError(_str(items[1], "ServiceError.errorMessage"))


def _dec_user_join_group(items: list[Any]) -> UserJoinGroup:
    n = "UserJoinGroup"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return UserJoinGroup(_str(items[1], f"{n}.userId"), _str(items[2], f"{n}.group"), _tracing_id(ext, n), _ttl(ext, n))


def _dec_user_leave_group(items: list[Any]) -> UserLeaveGroup:
    n = "UserLeaveGroup"
    _need(items, 3, n)
    ext = _ext(items, 3, n)
    return UserLeaveGroup(_str(items[1], f"{n}.userId"), _opt_str(items[2], f"{n}.group"), _tracing_id(ext, n))


def _dec_join_group_with_ack(items: list[Any]) -> JoinGroupWithAck:
    n = "JoinGroupWithAck"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    return JoinGroupWithAck(
        _str(items[1], f"{n}.connectionId"),
        _str(items[2], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _tracing_id(ext, n),
    )


def _dec_leave_group_with_ack(items: list[Any]) -> LeaveGroupWithAck:
    n = "LeaveGroupWithAck"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    return LeaveGroupWithAck(
        _str(items[1], f"{n}.connectionId"),
        _opt_str(items[2], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _tracing_id(ext, n),
    )


def _dec_ack(items: list[Any]) -> Ack:
    n = "Ack"
    _need(items, 4, n)
    _ext(items, 4, n)
    payload: bytes | None = None
    if len(items) >= 6 and items[5] is not None:
        payload = _bin(items[5], f"{n}.payload")
    return Ack(
        _int(items[1], f"{n}.ackId"),
        _enum(AckStatus, _int(items[2], f"{n}.status")),
        _opt_str(items[3], f"{n}.message"),
        payload,
    )


def _dec_check_user_in_group_with_ack(items: list[Any]) -> CheckUserInGroupWithAck:
    n = "CheckUserInGroupWithAck"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    return CheckUserInGroupWithAck(
        _str(items[1], f"{n}.userId"), _str(items[2], f"{n}.group"), _int(items[3], f"{n}.ackId"), _tracing_id(ext, n)
    )


def _dec_service_event(items: list[Any]) -> ServiceEvent:
    n = "ServiceEvent"
    _need(items, 6, n)
    _ext(items, 5, n)
    return ServiceEvent(
        _enum(ServiceEventObjectType, _int(items[1], f"{n}.objectType")),
        _opt_str(items[2], f"{n}.id"),
        _enum(ServiceEventKind, _int(items[3], f"{n}.kind")),
        _str(items[4], f"{n}.message"),
    )


def _dec_check_group_existence_with_ack(items: list[Any]) -> CheckGroupExistenceWithAck:
    n = "CheckGroupExistenceWithAck"
    _need(items, 4, n)
    ext = _ext(items, 3, n)
    return CheckGroupExistenceWithAck(_str(items[1], f"{n}.group"), _int(items[2], f"{n}.ackId"), _tracing_id(ext, n))


def _dec_check_connection_existence_with_ack(items: list[Any]) -> CheckConnectionExistenceWithAck:
    n = "CheckConnectionExistenceWithAck"
    _need(items, 4, n)
    ext = _ext(items, 3, n)
    return CheckConnectionExistenceWithAck(
        _str(items[1], f"{n}.connectionId"), _int(items[2], f"{n}.ackId"), _tracing_id(ext, n)
    )


def _dec_check_user_existence_with_ack(items: list[Any]) -> CheckUserExistenceWithAck:
    n = "CheckUserExistenceWithAck"
    _need(items, 4, n)
    ext = _ext(items, 3, n)
    return CheckUserExistenceWithAck(_str(items[1], f"{n}.userId"), _int(items[2], f"{n}.ackId"), _tracing_id(ext, n))


def _dec_user_join_group_with_ack(items: list[Any]) -> UserJoinGroupWithAck:
    n = "UserJoinGroupWithAck"
    _need(items, 5, n)
    ext = _ext(items, 4, n)
    return UserJoinGroupWithAck(
        _str(items[1], f"{n}.userId"),
        _str(items[2], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _tracing_id(ext, n),
        _ttl(ext, n),
    )


def _dec_user_leave_group_with_ack(items: list[Any]) -> UserLeaveGroupWithAck:
    n = "UserLeaveGroupWithAck"
    _need(items, 5, n)
    ext = _ext(items, 4, n)
    return UserLeaveGroupWithAck(
        _str(items[1], f"{n}.userId"),
        _opt_str(items[2], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _tracing_id(ext, n),
    )


def _dec_access_key_request(items: list[Any]) -> AccessKeyRequest:
    n = "AccessKeyRequest"
    _need(items, 4, n)
    _ext(items, 3, n)
    return AccessKeyRequest(_opt_str(items[1], f"{n}.token"), _opt_str(items[2], f"{n}.kid"))


def _dec_access_key_response(items: list[Any]) -> AccessKeyResponse:
    n = "AccessKeyResponse"
    _need(items, 6, n)
    _ext(items, 5, n)
    return AccessKeyResponse(
        _opt_str(items[1], f"{n}.kid"),
        _opt_str(items[2], f"{n}.accessKey"),
        _opt_str(items[3], f"{n}.errorType"),
        _opt_str(items[4], f"{n}.errorMessage"),
    )


def _dec_close_connection_with_ack(items: list[Any]) -> CloseConnectionWithAck:
    n = "CloseConnectionWithAck"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    return CloseConnectionWithAck(
        _str(items[1], f"{n}.connectionId"),
        _int(items[3], f"{n}.ackId"),
        _opt_str(items[2], f"{n}.reason"),
        _tracing_id(ext, n),
    )


def _dec_close_connections_with_ack(items: list[Any]) -> CloseConnectionsWithAck:
    n = "CloseConnectionsWithAck"
    _need(items, 4, n)
    ext = _ext(items, 4, n)
    return CloseConnectionsWithAck(
        _int(items[2], f"{n}.ackId"),
        _opt_str(items[1], f"{n}.reason"),
        _strs(items[3], f"{n}.excludedConnectionIds"),
        _tracing_id(ext, n),
    )


def _dec_close_user_connections_with_ack(items: list[Any]) -> CloseUserConnectionsWithAck:
    n = "CloseUserConnectionsWithAck"
    _need(items, 5, n)
    ext = _ext(items, 5, n)
    return CloseUserConnectionsWithAck(
        _str(items[1], f"{n}.userId"),
        _int(items[3], f"{n}.ackId"),
        _opt_str(items[2], f"{n}.reason"),
        _strs(items[4], f"{n}.excludedConnectionIds"),
        _tracing_id(ext, n),
    )


def _dec_close_group_connections_with_ack(items: list[Any]) -> CloseGroupConnectionsWithAck:
    n = "CloseGroupConnectionsWithAck"
    _need(items, 5, n)
    ext = _ext(items, 5, n)
    return CloseGroupConnectionsWithAck(
        _str(items[1], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _opt_str(items[2], f"{n}.reason"),
        _strs(items[4], f"{n}.excludedConnectionIds"),
        _tracing_id(ext, n),
    )


def _dec_client_invocation(items: list[Any]) -> ClientInvocation:
    n = "ClientInvocation"
    _need(items, 6, n)
    ext = _ext(items, 5, n)
    return ClientInvocation(
        _str(items[1], f"{n}.invocationId"),
        _str(items[2], f"{n}.connectionId"),
        _str(items[3], f"{n}.callerServerId"),
        _payloads(items[4], f"{n}.payloads"),
        _tracing_id(ext, n),
    )


def _dec_client_completion(items: list[Any]) -> ClientCompletion:
    n = "ClientCompletion"
    _need(items, 7, n)
    ext = _ext(items, 6, n)
    protocol = _opt_str(items[4], f"{n}.protocol")
    if protocol is None:
        protocol = _protocol(ext, n)
    return ClientCompletion(
        _str(items[1], f"{n}.invocationId"),
        _str(items[2], f"{n}.connectionId"),
        _str(items[3], f"{n}.callerServerId"),
        protocol,
        _bin(items[5], f"{n}.payload"),
        _tracing_id(ext, n),
    )


def _dec_error_completion(items: list[Any]) -> ErrorCompletion:
    n = "ErrorCompletion"
    _need(items, 6, n)
    ext = _ext(items, 5, n)
    return ErrorCompletion(
        _str(items[1], f"{n}.invocationId"),
        _str(items[2], f"{n}.connectionId"),
        _str(items[3], f"{n}.callerServerId"),
        _opt_str(items[4], f"{n}.error"),
        _tracing_id(ext, n),
    )


def _dec_service_mapping(items: list[Any]) -> ServiceMapping:
    n = "ServiceMapping"
    _need(items, 5, n)
    _ext(items, 4, n)
    return ServiceMapping(
        _str(items[1], f"{n}.invocationId"), _str(items[2], f"{n}.connectionId"), _str(items[3], f"{n}.instanceId")
    )


def _dec_connection_reconnect(items: list[Any]) -> ConnectionReconnect:
    n = "ConnectionReconnect"
    _need(items, 3, n)
    _ext(items, 2, n)
    return ConnectionReconnect(_str(items[1], f"{n}.connectionId"))


def _dec_connection_flow_control(items: list[Any]) -> ConnectionFlowControl:
    n = "ConnectionFlowControl"
    _need(items, 4, n)  # the SDK's reader ignores E
    kind = _int(items[2], f"{n}.connectionType")
    operation = _int(items[3], f"{n}.operation")
    if kind not in (1, 2):
        raise ServiceProtocolError(f"Invalid service message: {n}.connectionType {kind} is not 1 or 2.")
    if not 1 <= operation <= 4:
        raise ServiceProtocolError(f"Invalid service message: {n}.operation {operation} is not 1..4.")
    return ConnectionFlowControl(
        _str(items[1], f"{n}.connectionId"), FlowControlOperation(operation), FlowControlType(kind)
    )


def _dec_group_member_query(items: list[Any]) -> GroupMemberQuery:
    n = "GroupMemberQuery"
    _need(items, 6, n)
    ext = _ext(items, 1, n)
    return GroupMemberQuery(
        _str(items[2], f"{n}.group"),
        _int(items[3], f"{n}.ackId"),
        _int(items[4], f"{n}.max"),
        _opt_str(items[5], f"{n}.continuationToken"),
        _tracing_id(ext, n),
    )


_DECODERS: Final[dict[int, Callable[[list[Any]], ServiceMessage]]] = {
    1: _dec_handshake_request,
    2: _dec_handshake_response,
    3: _dec_ping,
    4: _dec_open_connection,
    5: _dec_close_connection,
    6: _dec_connection_data,
    7: _dec_multi_connection_data,
    8: _dec_user_data,
    9: _dec_multi_user_data,
    10: _dec_broadcast_data,
    11: _dec_join_group,
    12: _dec_leave_group,
    13: _dec_group_broadcast_data,
    14: _dec_multi_group_broadcast_data,
    15: _dec_service_error,
    16: _dec_user_join_group,
    17: _dec_user_leave_group,
    18: _dec_join_group_with_ack,
    19: _dec_leave_group_with_ack,
    20: _dec_ack,
    21: _dec_check_user_in_group_with_ack,
    22: _dec_service_event,
    23: _dec_check_group_existence_with_ack,
    24: _dec_check_connection_existence_with_ack,
    25: _dec_check_user_existence_with_ack,
    26: _dec_user_join_group_with_ack,
    27: _dec_user_leave_group_with_ack,
    28: _dec_access_key_request,
    29: _dec_access_key_response,
    30: _dec_close_connection_with_ack,
    31: _dec_close_connections_with_ack,
    32: _dec_close_user_connections_with_ack,
    33: _dec_close_group_connections_with_ack,
    34: _dec_client_invocation,
    35: _dec_client_completion,
    36: _dec_error_completion,
    37: _dec_service_mapping,
    38: _dec_connection_reconnect,
    39: _dec_connection_flow_control,
    40: _dec_group_member_query,
}


def decode(data: bytes | bytearray | memoryview) -> ServiceMessage | None:
    """One unframed MessagePack array as a message; None for a type this module does not know
    (a newer service's), which the caller skips. Shorter arrays from older writers are accepted
    as the SDK's reader accepts them; longer ones have their extra elements ignored."""
    try:
        items = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True, object_pairs_hook=_Map)
    except Exception as exc:  # whatever msgpack raises here is about the bytes
        raise ServiceProtocolError(f"Invalid service message: {exc}") from None
    if type(items) is not list:
        raise ServiceProtocolError(f"Invalid service message: expected an array, got {_kind(items)}.")
    if not items:
        raise ServiceProtocolError("Invalid service message: empty array, no message type.")
    kind = items[0]
    if type(kind) is not int:
        raise _fail("the message type", "an integer", kind)
    decoder = _DECODERS.get(kind)
    return None if decoder is None else decoder(items)


def _read_varint(view: memoryview, offset: int, end: int) -> tuple[int, int]:
    """(length, index after the prefix), or (-1, offset) if the prefix is not all there yet."""
    length = 0
    shift = 0
    index = offset
    while index < end:
        byte = view[index]
        index += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            if length > MAX_FRAME_LENGTH:
                raise ServiceProtocolError(_OVER_2GB)
            return length, index
        shift += 7
        if index - offset >= MAX_VARINT_BYTES:
            raise ServiceProtocolError(_OVER_2GB)
    return -1, offset


class FrameReader:
    """Frames out of a byte stream cut anywhere: one frame over several WebSocket messages, or
    several frames in one. A length over `max_frame_size` (None: only the protocol's 2 GB
    bound) fails as soon as its prefix arrives, before any of the body is buffered. Unknown
    message types are skipped. After a ServiceProtocolError the stream is out of step, so the
    reader refuses further input: close the connection."""

    __slots__ = ("_buffer", "_failed", "_max_frame_size")

    def __init__(self, max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size is not None and max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive or None")
        self._buffer = bytearray()
        self._max_frame_size = max_frame_size
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held back for an incomplete frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[ServiceMessage]:
        if self._failed:
            raise ServiceProtocolError("The service stream already failed; no more frames can be read from it.")
        buffer = self._buffer
        source: bytes | bytearray | memoryview
        if buffer:
            buffer += data
            source = buffer
        else:
            source = data  # the usual case: parse the new bytes in place, no copy
        messages: list[ServiceMessage] = []
        offset = 0
        limit = self._max_frame_size
        try:
            with memoryview(source) as view:
                end = len(view)
                while offset < end:
                    length, start = _read_varint(view, offset, end)
                    if length < 0:
                        break
                    if limit is not None and length > limit:
                        raise ServiceProtocolError(
                            f"The service sent a {length}-byte frame; the maximum is {limit} bytes."
                        )
                    stop = start + length
                    if stop > end:
                        break
                    message = decode(view[start:stop])
                    if message is not None:
                        messages.append(message)
                    offset = stop
                if source is not buffer and offset < end:
                    buffer += view[offset:]
        except ServiceProtocolError:
            self._failed = True
            buffer.clear()
            raise
        if source is buffer:
            del buffer[:offset]
        return messages
