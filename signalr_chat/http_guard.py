"""Kestrel's connection limits for aiohttp: slow or idle sockets are timed out, and the
process holds a bounded number of connections.

aiohttp has no request-header or request-body timeout, and a fresh connection that sends
nothing is never closed, so headers trickled one every few seconds, half a request line or
a POST body sent a byte at a time would each hold a socket (and its buffers) forever. The
guard wraps every connection's aiohttp protocol and, like Kestrel:

- closes a connection that sends nothing for the keep-alive timeout, before its first
  request and between requests (that is aiohttp's own keep-alive timer, given the value);
- answers `408 Request Timeout` and closes when a request's headers are not complete
  within the request-header timeout of its first byte;
- aborts a connection whose request body arrives slower than the minimum data rate on
  average, once the grace period has passed;
- answers `503 Service Unavailable` and closes a connection accepted while the process
  already holds its maximum.

It knows a request has begun (its headers were parsed) from a middleware, which also
hands over the request so the body's progress can be read. A WebSocket or an event
stream is one long request: none of the timeouts apply to it once it is open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Kestrel's defaults, except the connection cap, which Kestrel leaves unlimited."""

    request_header_timeout: float = 30.0
    keep_alive_timeout: float = 130.0
    #: Bytes per second a request body must average after the grace period; 0 turns it off.
    min_request_body_rate: float = 240.0
    min_request_body_grace: float = 5.0
    max_connections: int = 60_000


class ConnectionGuard:
    """Shared by every connection of one server: the limits, the count of connections, and
    one sweep over the requests that are being watched.

    As Kestrel's heartbeat does, one timer per server checks every watched request about
    once a second, instead of a timer armed and cancelled for each request: a request
    costs two dictionary operations, and the loop wakes only while something is watched.
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.connections = 0
        # connections whose request has begun but whose headers have not all arrived, with
        # the time of the first byte; insertion order is arrival order, so the oldest is first
        self._awaiting_headers: dict[_GuardedConnection, float] = {}
        # requests whose body is still arriving, with the time the request began
        self._bodies: dict[_GuardedConnection, tuple[web.Request, float]] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._period = max(0.05, min(1.0, limits.request_header_timeout / 2))

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wraps aiohttp's protocol factory (the site's `runner.server`)."""

        def create() -> asyncio.Protocol:
            if self.connections >= self.limits.max_connections:
                return _Refused()
            return _GuardedConnection(self, make())

        return create

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        connection = transport.get_protocol() if transport is not None else None
        if not isinstance(connection, _GuardedConnection):
            return await handler(request)  # served by some other site: nothing to guard
        connection.request_started(request)
        try:
            return await handler(request)
        finally:
            connection.request_ended()

    # -- what the connections report -------------------------------------------------------
    def headers_begun(self, connection: _GuardedConnection) -> None:
        loop = asyncio.get_running_loop()
        self._awaiting_headers[connection] = loop.time()
        self._keep_sweeping(loop)

    def headers_done(self, connection: _GuardedConnection) -> None:
        self._awaiting_headers.pop(connection, None)

    def body_begun(self, connection: _GuardedConnection, request: web.Request) -> None:
        loop = asyncio.get_running_loop()
        self._bodies[connection] = (request, loop.time())
        self._keep_sweeping(loop)

    def body_done(self, connection: _GuardedConnection) -> None:
        self._bodies.pop(connection, None)

    # -- the sweep ---------------------------------------------------------------------------
    def _keep_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._period, self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits = self.limits
        deadline = now - limits.request_header_timeout
        for connection, since in list(self._awaiting_headers.items()):
            if since > deadline:
                break  # every later one began later still
            del self._awaiting_headers[connection]
            connection.headers_too_slow()
        rate, grace = limits.min_request_body_rate, limits.min_request_body_grace
        for connection, (request, started) in list(self._bodies.items()):
            elapsed = now - started
            if elapsed < grace:
                break  # the rest began later: still in their grace period
            if request.content.is_eof():
                continue  # read whole; the request itself is still running
            received: int = request.content.total_bytes
            if received < rate * elapsed:
                del self._bodies[connection]
                log.debug("connection aborted: request body at %.0f bytes/s", received / elapsed)
                connection.abort()
        if self._awaiting_headers or self._bodies:
            self._keep_sweeping(loop)

    def close(self) -> None:
        """The server is stopping: no sweep outlives it."""
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None


class _Refused(asyncio.Protocol):
    """A connection over the cap: told so at once and closed, before it costs anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        log.debug("connection refused: the maximum number of connections is reached")
        # uvloop's transports do not subclass asyncio's, so no isinstance check here
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(SERVICE_UNAVAILABLE)
        writer.close()


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's protocol for one connection, reporting to the guard what Kestrel would time."""

    __slots__ = ("_awaiting_headers", "_guard", "_in_flight", "_inner", "_transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._in_flight = 0
        self._awaiting_headers = False

    # -- the asyncio protocol, passed through ------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._guard.connections += 1
        # a connection that sends nothing is aiohttp's: its keep-alive timer runs from here
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._in_flight == 0 and not self._awaiting_headers:
            # the first byte of a request: its headers must all arrive in time
            self._awaiting_headers = True
            self._guard.headers_begun(self)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self._guard
        guard.connections -= 1
        guard.headers_done(self)
        guard.body_done(self)
        self._transport = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- requests, from the middleware ------------------------------------------------------
    def request_started(self, request: web.Request) -> None:
        self._in_flight += 1
        if self._awaiting_headers:
            self._awaiting_headers = False
            self._guard.headers_done(self)
        if self._guard.limits.min_request_body_rate > 0 and not request.content.is_eof():
            self._guard.body_begun(self, request)

    def request_ended(self) -> None:
        self._in_flight -= 1
        self._guard.body_done(self)
        # between requests aiohttp's keep-alive timer takes over

    # -- what the sweep decides ------------------------------------------------------------
    def headers_too_slow(self) -> None:
        self._awaiting_headers = False
        if self._transport is not None:
            log.debug("connection closed: request headers not received in time")
            self._transport.write(REQUEST_TIMEOUT)  # nothing else is being written: no request runs
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through the guard (aiohttp's TCPSite, wrapped)."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._guard = guard
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )
