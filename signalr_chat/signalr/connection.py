"""A negotiated connection, independent of the transport that carries it.

The hub layer writes encoded bytes into an ordered, bounded outbox; whichever transport
is attached drains it (a WebSocket frame, an SSE event, a long-poll response). Pending
records leave together, so a burst costs one frame, and a client that cannot keep up
is dropped rather than allowed to stall anyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from multidict import CIMultiDictProxy, MultiMapping

from .auth import User
from .background import spawn
from .options import TransportKind

if TYPE_CHECKING:
    from aiohttp import web

    from .telemetry import SignalRTelemetry
    from .transports.long_polling import LongPollingTransport

log = logging.getLogger(__name__)

#: POST bodies queued before a sender has to wait for them to be processed.
INBOUND_BACKLOG = 16


class Transport(Protocol):
    kind: TransportKind

    def wake(self) -> None:
        """Bytes are pending: send them soon."""

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        """Flush what is pending, then end the transport."""

    def drop(self) -> None:
        """End the transport at once, flushing nothing, as a failing network would."""


class Application(Protocol):
    """What runs on a connection: the hub layer, in this project."""

    def start(self) -> None: ...

    async def receive(self, data: bytes) -> None: ...

    async def transport_ended(self, exception: BaseException | None) -> None:
        """The attached transport is gone; the application decides whether the connection is."""

    async def closed(self, error: BaseException | None) -> None: ...

    def tick(self, now: float) -> None:
        """The shared heartbeat, once a second: keep-alive and timeouts."""


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


@dataclass(slots=True, eq=False)
class Connection:
    id: str
    token: str
    negotiate_version: int
    stateful_reconnect: bool = False
    user: User | None = None
    transport_kind: TransportKind | None = None
    transport: Transport | None = None
    request: RequestInfo | None = None
    application: Application | None = None
    #: Set by the hub layer after the handshake: MessagePack goes out in Binary frames.
    binary: bool = False
    max_buffer_size: int = 1024 * 1024
    #: True while a transport is attached (a WebSocket is open, a poll is outstanding).
    active: bool = False
    last_active: float = field(default_factory=time.monotonic)
    closed: bool = False
    #: The hub's `context.items`: application state for this connection.
    items: dict[str, Any] = field(default_factory=dict)
    #: The long-polling transport lives across polls; None for other transports.
    long_polling: LongPollingTransport | None = None
    #: A POST send is being processed (a concurrent one gets 409).
    posting: bool = False
    #: POST bodies waiting to be processed; created by the first POST (WebSockets never need it).
    _inbound: deque[bytes] | None = None
    _inbound_task: asyncio.Task[None] | None = None
    _pending: list[bytes] = field(default_factory=list)
    _pending_size: int = 0
    _on_dispose: Callable[[Connection], None] | None = None
    telemetry: SignalRTelemetry | None = None

    def send(self, data: bytes) -> bool:
        """Queue bytes for the client; False when the connection is gone or overflowing."""
        if self.closed:
            return False
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > self.max_buffer_size:
            log.warning("connection %s: %d bytes unsent, dropping slow client", self.id, self._pending_size)
            self._pending.clear()
            self._pending_size = 0
            if self.telemetry is not None:
                self.telemetry.slow_client_dropped()
            self.abort()
            return False
        if self.transport is not None:
            self.transport.wake()
        return True

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
            return data
        count, size = 1, len(pending[0])
        while count < len(pending) and size + len(pending[count]) <= limit:
            size += len(pending[count])
            count += 1
        data = b"".join(pending[:count])
        del pending[:count]
        self._pending_size -= size
        return data

    def receive_later(self, data: bytes) -> asyncio.Task[None] | None:
        """A POST body: answered at once, processed in arrival order, as ASP.NET's pipe does.

        Returns the task draining the backlog when it is long, so the sender can wait.
        """
        inbound = self._inbound
        if inbound is None:
            inbound = self._inbound = deque()
        inbound.append(data)
        if self._inbound_task is None:
            self._inbound_task = spawn(self._drain_inbound(inbound))
        return self._inbound_task if len(inbound) > INBOUND_BACKLOG else None

    async def _drain_inbound(self, inbound: deque[bytes]) -> None:
        try:
            while inbound and not self.closed and self.application is not None:
                await self.application.receive(inbound.popleft())
        except Exception as exc:  # a failing receive ends this connection, never the server
            log.exception("connection %s: processing a send failed", self.id)
            await self.dispose(exc)
        finally:
            if self.closed:
                inbound.clear()
            self._inbound_task = None

    def attach(self, transport: Transport) -> None:
        self.transport = transport
        self.active = True
        if self._pending:
            transport.wake()

    def detach(self, transport: Transport) -> None:
        """The transport went away; the connection may live on (long polling, stateful reconnect)."""
        if self.transport is transport:
            self.transport = None
            self.active = False
            self.last_active = time.monotonic()

    def abort(self) -> None:
        """End the connection now, from anywhere, without waiting for unsent data."""
        if self.closed:
            return
        if self.transport is not None:
            self.transport.drop()
        spawn(self.dispose(ConnectionAbortedError("The connection was aborted.")))

    async def dispose(self, error: BaseException | None = None, *, going_away: bool = False) -> None:
        """End the transport and the application exactly once."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport is not None:
            try:
                await transport.close(going_away=going_away, error=error is not None)
            except Exception:  # the peer may be gone already
                log.debug("connection %s: transport close failed", self.id, exc_info=True)
        self.transport = None
        self.active = False
        if self._on_dispose is not None:
            self._on_dispose(self)
        if self.application is not None:
            await self.application.closed(error)
