"""A negotiated connection, independent of the transport that carries it.

The layer above writes encoded bytes into an ordered, bounded outbox; whichever transport
is attached drains it (a WebSocket frame, an SSE event, a long-poll response). Pending
records leave together, so a burst costs one frame, and a client that cannot keep up
is dropped rather than allowed to stall anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from multidict import CIMultiDictProxy, MultiMapping

from ..protocol.negotiate import TransportKind
from .auth import User
from .background import BackgroundTasks

if TYPE_CHECKING:
    from aiohttp import web

    from .inbound import PostedSends
    from .telemetry import ConnectionTelemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransportFeatures:
    """What a transport can do, so the layer above never asks which transport it is.

    ASP.NET Core tells its hub layer the same through connection features
    (IHttpTransportFeature, ITransferFormatFeature, IConnectionInherentKeepAliveFeature).
    """

    kind: TransportKind
    #: Carries binary messages (MessagePack); Server-Sent Events carry text only.
    binary: bool
    #: The transport itself shows the client is alive (a long poll): no pings, no client timeout.
    inherent_keep_alive: bool
    #: A dropped socket can be replaced by a new one under stateful reconnect.
    reconnectable: bool
    #: The client collects what is sent by asking (a poll): an ended connection stays
    #: registered until its last records are collected.
    polled: bool


class Transport(Protocol):
    """What a connection asks of the transport attached to it: send soon, close, or drop; `features` says
    what it can do, so nothing above asks which transport it is."""

    features: TransportFeatures

    @property
    def active(self) -> bool:
        """Bytes can reach the client now (a socket is open, a poll is outstanding)."""

    def wake(self) -> None:
        """Bytes are pending: send them soon."""

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        """Flush what is pending, then end the transport."""

    def drop(self) -> None:
        """End the transport at once, flushing nothing, as a failing network would."""


class Application(Protocol):
    """What runs on a connection: the hub layer, or a raw connection handler."""

    def start(self) -> None: ...

    async def receive(self, data: bytes) -> None: ...

    def on_closing(self) -> None:
        """The connection has begun to end (`dispose`): nothing more is read, and what is
        written from now on is dropped. `on_closed` follows once the transport is gone."""

    async def on_transport_ended(self, exception: BaseException | None) -> None:
        """The attached transport is gone; the application decides whether the connection is."""

    @property
    def accepts_reconnect(self) -> bool:
        """A new socket may take over this connection (stateful reconnect)."""

    def on_reconnected(self) -> None:
        """A new socket took over: replay what the client missed."""

    async def on_closed(self, error: BaseException | None) -> None:
        """The connection is over, exactly once."""

    def tick(self, now: float) -> None:
        """The shared heartbeat, once a second: keep-alive and timeouts."""

    def close_requested(self) -> None:
        """The server wants the connection closed (its authentication expired): close it the
        application's way, as ASP.NET Core's IConnectionLifetimeNotificationFeature.RequestClose."""

    def user_refreshed(self, user: User) -> None:
        """The connection's user presented a newer authentication (`Connection.user` is it now)."""


class ConnectionOwner(Protocol):
    """Who keeps a connection: its endpoint's ConnectionManager."""

    @property
    def tasks(self) -> BackgroundTasks:
        """Runs the connection's background work, and cancels what is left when the owner closes."""

    def on_disposed(self, connection: Connection) -> None:
        """The connection has ended (its transport is closed; its application is told next)."""


class Unowned:
    """The owner of a connection no manager keeps (a test, a tool): its own tasks, no one to tell."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks = BackgroundTasks("connection")

    def on_disposed(self, connection: Connection) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """The HTTP request that started the transport, kept for the hub context."""

    headers: CIMultiDictProxy[str]
    query: MultiMapping[str]
    cookies: Mapping[str, str]
    remote: str | None = None
    path: str = ""

    @classmethod
    def from_request(cls, request: web.Request) -> RequestInfo:
        # aiohttp's headers and query are immutable views already: kept, not copied
        return cls(request.headers, request.query, request.cookies, request.remote, request.path)


@dataclass(slots=True, eq=False, weakref_slot=True)
class Connection:
    """One negotiated connection, the one place its id, token, user and request live: the layer above reads
    them here and copies none. Its bounded outbox is drained by whichever transport is attached."""

    id: str
    token: str
    negotiate_version: int
    stateful_reconnect: bool = False
    user: User | None = None
    #: Set when the first transport request arrives; a connection never changes transport.
    features: TransportFeatures | None = None
    transport: Transport | None = None
    request: RequestInfo | None = None
    application: Application | None = None
    #: Set by the layer above after its handshake: records go out in Binary frames.
    binary: bool = False
    max_buffer_size: int = 1024 * 1024
    last_active: float = field(default_factory=time.monotonic)
    disposed: bool = False
    #: The hub's `context.items`: application state for this connection.
    items: dict[str, Any] = field(default_factory=dict)
    #: Bodies POSTed by SSE and long-polling clients; created by the first POST.
    posted: PostedSends | None = None
    _pending: list[bytes] = field(default_factory=list)
    _pending_size: int = 0
    #: What senders waiting for the client to catch up wait on; created by the first wait.
    _room: asyncio.Future[None] | None = None
    #: Keeps the connection and its background tasks (the endpoint's ConnectionManager).
    owner: ConnectionOwner = field(default_factory=Unowned)
    telemetry: ConnectionTelemetry | None = None
    #: The heartbeat asked the application to close (its authentication expired), once.
    close_requested: bool = False

    @property
    def transport_kind(self) -> TransportKind | None:
        return self.features.kind if self.features is not None else None

    @property
    def active(self) -> bool:
        transport = self.transport
        return transport is not None and transport.active

    def send(self, data: bytes) -> bool:
        """Queue bytes for the client; False when the connection is gone or overflowing.

        Only what was already waiting counts against `max_buffer_size`: one record bigger
        than the bound goes through to a client that keeps up, while a client that lets
        more than the bound pile up (fan-out sends do not wait for it) is dropped.
        """
        if self.disposed:
            return False
        waiting = self._pending_size
        if waiting > self.max_buffer_size:
            log.warning("connection %s: %d bytes unsent, dropping slow client", self.id, waiting)
            self._pending.clear()
            self._pending_size = 0
            if self.telemetry is not None:
                self.telemetry.slow_client_dropped()
            self.abort()
            return False
        self._pending.append(data)
        self._pending_size = waiting + len(data)
        if self.transport is not None:
            self.transport.wake()
        return True

    def room(self) -> asyncio.Future[None] | None:
        """None while the client keeps up; else a future set once it has taken enough.

        Senders to this one client (a reply's tokens, stream items, results) wait on it, so
        a slow reader slows its sender down instead of being dropped.
        """
        if self._pending_size <= self.max_buffer_size // 2 or self.disposed:
            return None
        room = self._room
        if room is None:
            room = self._room = asyncio.get_running_loop().create_future()
        return room

    def _free_room(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def take_pending(self, limit: int | None = None) -> bytes:
        """The pending records as one chunk: all of them, or as many as fit in `limit` (at least one)."""
        pending = self._pending
        if limit is None or self._pending_size <= limit:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._pending_size = 0
            if self._room is not None:
                self._free_room()
            return data
        count, size = 1, len(pending[0])
        while count < len(pending) and size + len(pending[count]) <= limit:
            size += len(pending[count])
            count += 1
        data = b"".join(pending[:count])
        del pending[:count]
        self._pending_size -= size
        if self._room is not None and self._pending_size <= self.max_buffer_size // 2:
            self._free_room()
        return data

    def authentication_expired(self, now: float) -> bool:
        """The user's authentication has ended at Unix time `now`; anonymous ones never do."""
        return self.user is not None and self.user.expired(now)

    def refresh_user(self, user: User, *, only_later: bool = False) -> bool:
        """Adopt a newer authentication of the connection's own user; the application hears of it.

        Never another user (callers refuse that first), and never an older expiry than the one
        held, so refreshes that race (a /refresh and a poll) cannot move it backwards.
        `only_later` adopts only a strictly later expiry: a transport request that presents
        the token the connection already holds changes nothing.
        """
        current = self.user
        if current is None or current.id != user.id:
            return False
        old, new = current.expires_at, user.expires_at
        if only_later:
            if old is None or new is None or new <= old:
                return False
        elif old is not None and new is not None and new < old:
            return False
        self.user = user
        application = self.application
        if application is not None:
            application.user_refreshed(user)
        return True

    def attach(self, transport: Transport) -> None:
        self.transport = transport
        if self._pending:
            transport.wake()

    def detach(self, transport: Transport) -> None:
        """The transport went away; the connection may live on (stateful reconnect)."""
        if self.transport is transport:
            self.transport = None
            self.last_active = time.monotonic()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work for this connection in the background, kept (and cancelled at shutdown) by its owner."""
        return self.owner.tasks.spawn(coroutine)

    def abort(self) -> None:
        """End the connection now, from anywhere, without waiting for unsent data."""
        if self.disposed:
            return
        if self.transport is not None:
            self.transport.drop()
        self.spawn(self.dispose(ConnectionAbortedError("The connection was aborted.")))

    async def dispose(self, error: BaseException | None = None, *, going_away: bool = False) -> None:
        """End the transport and the application exactly once."""
        if self.disposed:
            return
        self.disposed = True
        if self.application is not None:
            self.application.on_closing()
        self._free_room()
        if self.posted is not None:
            self.posted.clear()
            self.posted = None  # it holds bound methods of ours: a cycle
        transport = self.transport
        if transport is not None:
            try:
                await transport.close(going_away=going_away, error=error is not None)
            except Exception:  # the peer may be gone already
                log.debug("connection %s: transport close failed", self.id, exc_info=True)
        self.transport = None
        self.owner.on_disposed(self)
        application = self.application
        if application is not None:
            await application.on_closed(error)
            # break the cycle connection <-> application, so reference counting frees both
            self.application = None
