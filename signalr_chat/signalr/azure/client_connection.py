"""A client connection that Azure SignalR Service carries, as a connection of our connection layer.

The service holds the client's socket; the app server sees an OpenConnection, the client's
bytes inside ConnectionData, and a CloseConnection. Here that becomes an ordinary `Connection`
whose transport is a server connection to the service, so the hub layer runs on it unchanged
and does the hub handshake itself (the client's request arrives verbatim), as the SDK's
ClientConnectionContext lets ASP.NET Core's HubConnectionHandler do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Protocol
from urllib.parse import parse_qsl

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from ..connections import Connection, RequestInfo, TransportFeatures, TransportKind, User
from .tokens import principal_from_claims
from .wire import CloseConnection, ConnectionData, DataMessageType, OpenConnection, frame

log = logging.getLogger(__name__)

#: The service delivers to the client over whatever transport it chose; to the hub a service
#: connection behaves as a WebSocket does (binary allowed, pings and client timeout apply).
SERVICE_FEATURES = TransportFeatures(
    TransportKind.WEBSOCKETS, binary=True, inherent_keep_alive=False, reconnectable=False, polled=False
)
#: Header names as the SDK's code spells them (the spec's "Asrs-Migrated-From" is not used).
MIGRATE_FROM = "Asrs-Migrate-From"
MIGRATE_TO = "Asrs-Migrate-To"
INSTANCE_ID = "Asrs-Instance-Id"
#: A ConnectionData payload carries at most this much of a client's pending records.
MAX_PAYLOAD = 64 * 1024
_RECORD_SEPARATOR = b"\x1e"
#: The error of a CloseConnection for a connection ended without a goodbye (.NET's ConnectionAbortedException).
ABORTED = "The connection was aborted."


class Carrier(Protocol):
    """The server connection a client connection rides on."""

    @property
    def connected(self) -> bool: ...

    def schedule(self, transport: ServiceTransport) -> None:
        """Flush this client's pending records at the end of the loop turn."""

    def write(self, data: bytes) -> None:
        """Queue whole service-protocol frames."""

    def forget(self, transport: ServiceTransport) -> None:
        """The client connection is over: no more frames for or from it."""


class ServiceTransport:
    """The Transport of a client connection the service carries: records out as ConnectionData.

    The first record a hub writes is its handshake response; it leaves alone, tagged as a
    handshake (the newest SDK tags it so), and a client migrated in from another server never
    sees it: from the client's point of view the connection never dropped.
    """

    features = SERVICE_FEATURES
    __slots__ = (
        "_partial",
        "_woken",
        "carrier",
        "closed",
        "connection",
        "handshake_sent",
        "instance_id",
        "migrated_in",
        "paused",
    )

    def __init__(
        self, connection: Connection, carrier: Carrier, *, migrated_in: bool = False, instance_id: str | None = None
    ) -> None:
        self.connection = connection
        self.carrier = carrier
        self.migrated_in = migrated_in
        self.instance_id = instance_id
        self.handshake_sent = False
        #: No more output: the service closed the client, it moved away, or we sent CloseConnection.
        self.closed = False
        #: The service asked us to hold this client's output (ConnectionFlowControl Pause).
        self.paused = False
        self._woken = False
        self._partial: bytearray | None = None

    # -- Transport ----------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return not self.closed and self.carrier.connected

    def wake(self) -> None:
        if not self._woken and not self.closed and not self.paused:
            self._woken = True
            self.carrier.schedule(self)

    def take_frames(self, out: bytearray) -> None:
        """Called by the carrier at flush time: every pending record, as ConnectionData frames."""
        self._woken = False
        connection = self.connection
        if self.closed or self.paused:
            return
        connection_id = connection.id
        while connection.has_pending:
            data = connection.take_pending(MAX_PAYLOAD)
            if not self.handshake_sent:
                self.handshake_sent = True
                end = data.find(_RECORD_SEPARATOR) + 1
                handshake, data = data[:end], data[end:]
                if not self.migrated_in:
                    out += frame(ConnectionData(connection_id, handshake, data_message_type=DataMessageType.HANDSHAKE))
                if not data:
                    continue
            out += frame(ConnectionData(connection_id, data))

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        """The hub ended the connection: what it wrote, then CloseConnection, so the service closes the client."""
        if self.closed:
            return
        out = bytearray()
        self.take_frames(out)
        self._end(out)

    def drop(self) -> None:
        """End at once, nothing more flushed; the service still hears of it, or the client would hang."""
        if not self.closed:
            self._end(bytearray(), ABORTED)

    def _end(self, out: bytearray, error: str = "") -> None:
        self.closed = True
        out += frame(CloseConnection(self.connection.id, error))
        self.carrier.write(bytes(out))
        self.carrier.forget(self)

    # -- from the service ---------------------------------------------------------------
    def received(self, payload: bytes, partial: bool) -> bytes | None:
        """A ConnectionData's payload; partial ones wait for the rest (None until it comes)."""
        if partial:
            if self._partial is None:
                self._partial = bytearray()
            self._partial += payload
            return None
        if self._partial is not None:
            self._partial += payload
            payload, self._partial = bytes(self._partial), None
        return payload

    def reconnected(self) -> None:
        """ConnectionReconnect: the client came back through the service; half a message is void."""
        self._partial = None

    def closed_by_service(self, migrated_to: str | None) -> None:
        """The client left, or moved to another server: nothing more is sent, and no CloseConnection."""
        self.closed = True
        self._partial = None
        if migrated_to is not None and self.connection.has_pending:
            self.connection.take_pending()  # the hub's Close must not reach a client that lives on elsewhere
        self.carrier.forget(self)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self.connection.has_pending:
            self.wake()


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    lowered = name.lower()
    for key, values in headers.items():
        if key.lower() == lowered and values:
            return values[0]
    return None


def rightmost_forwarded(forwarded_for: Sequence[str]) -> str | None:
    """The last `X-Forwarded-For` hop: the address the service saw its client connect from (what
    the client sent ahead of it is the client's own say, and could name anyone)."""
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    return hops[-1] if hops and hops[-1] else None


def request_info(
    message: OpenConnection,
    hub_path: str,
    client_address: Callable[[Sequence[str]], str | None] | None = None,
) -> RequestInfo:
    """The client's request as the service reports it: headers, query, cookies, address and path.
    The address is read from the service's `X-Forwarded-For` by `client_address` (by default the
    rightmost hop: the service is the proxy, and it appends the address it saw)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, values in message.headers.items():
        for value in values:
            headers.add(name, value)
    query_string = (message.query_string or "").lstrip("?")
    query = MultiDictProxy(MultiDict(parse_qsl(query_string, keep_blank_values=True)))
    cookies: dict[str, str] = {}
    if "Cookie" in headers:
        try:
            parsed = SimpleCookie(headers["Cookie"])
            cookies = {name: morsel.value for name, morsel in parsed.items()}
        except CookieError:
            log.debug("connection %s: unreadable Cookie header", message.connection_id)
    remote = (client_address or rightmost_forwarded)(headers.getall("X-Forwarded-For", []))
    path = query.get("asrs.op") or hub_path
    return RequestInfo(CIMultiDictProxy(headers), query, cookies, remote, path)


def user_of(message: OpenConnection) -> User | None:
    """The principal the service's claims describe; None for a client with no user id (anonymous)."""
    by_type: dict[str, list[str]] = {}
    for claim_type, value in message.claims:
        by_type.setdefault(claim_type, []).append(value)
    user_id, claims, _auth_type = principal_from_claims({t: v[0] if len(v) == 1 else v for t, v in by_type.items()})
    return None if user_id is None else User(user_id, claims)


def migrated_from(message: OpenConnection) -> str | None:
    return _first(message.headers, MIGRATE_FROM)


def migrated_to(message: CloseConnection) -> str | None:
    return _first(message.headers, MIGRATE_TO)


def instance_of(message: OpenConnection) -> str | None:
    return _first(message.headers, INSTANCE_ID)
