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

As Kestrel's heartbeat does, one sweep per server checks the watched connections about
once a second; a request costs a dictionary insert when its first bytes arrive, and the
sweep learns from aiohttp's request handler (what it waits for, its count of requests,
its current request) whether the headers are done and how the body is coming. No
middleware and no timer per request: both showed in the long-polling profile, where every
send is a POST. A WebSocket or an event stream is one long request: none of the timeouts
apply to it once it is open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

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
    the one sweep over the connections being watched."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.connections = 0
        # connections where a request's first bytes arrived, with their time and aiohttp's
        # count of parsed requests then
        self._awaiting_headers: dict[_GuardedConnection, tuple[float, int]] = {}
        # requests whose body is still arriving, with the time their first byte came
        self._bodies: dict[_GuardedConnection, tuple[BaseRequest, float]] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._period = max(0.05, min(1.0, limits.request_header_timeout / 2))

    def protocol_factory(self, make: Callable[[], RequestHandler]) -> Callable[[], asyncio.Protocol]:
        """Wraps aiohttp's protocol factory (the site's `runner.server`)."""

        def create() -> asyncio.Protocol:
            if self.connections >= self.limits.max_connections:
                return _Refused()
            return _GuardedConnection(self, make())

        return create

    def watch(self, connection: _GuardedConnection, requests: int) -> None:
        """A request's first bytes arrived (aiohttp had parsed `requests`): its headers are due."""
        loop = asyncio.get_running_loop()
        self._awaiting_headers[connection] = (loop.time(), requests)
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._period, self._sweep)

    def forget(self, connection: _GuardedConnection) -> None:
        self._awaiting_headers.pop(connection, None)
        self._bodies.pop(connection, None)

    def _sweep(self) -> None:
        self._sweep_handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits = self.limits
        header_deadline = now - limits.request_header_timeout
        for connection, (since, requests) in list(self._awaiting_headers.items()):
            handler = connection.handler
            if handler._request_count != requests:  # aiohttp parsed the request: headers done
                del self._awaiting_headers[connection]
                request = handler._current_request
                if limits.min_request_body_rate > 0 and request is not None and not request.content.is_eof():
                    self._bodies[connection] = (request, since)
                connection.watched = False
            elif since <= header_deadline:
                del self._awaiting_headers[connection]
                connection.headers_too_slow()
        rate, grace = limits.min_request_body_rate, limits.min_request_body_grace
        for connection, (request, started) in list(self._bodies.items()):
            if connection.handler._current_request is not request or request.content.is_eof():
                del self._bodies[connection]  # read whole, or the request is over
                continue
            elapsed = now - started
            received: int = request.content.total_bytes
            if elapsed >= grace and received < rate * elapsed:
                del self._bodies[connection]
                log.debug("connection aborted: request body at %.0f bytes/s", received / elapsed)
                connection.abort()
        if self._awaiting_headers or self._bodies:
            self._sweep_handle = loop.call_later(self._period, self._sweep)

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
    """aiohttp's protocol for one connection, telling the guard when a request's bytes begin."""

    __slots__ = ("_guard", "_transport", "handler", "watched")

    def __init__(self, guard: ConnectionGuard, handler: RequestHandler) -> None:
        self._guard = guard
        self.handler = handler
        self._transport: asyncio.Transport | None = None
        #: In the guard's watch list: further bytes need no bookkeeping until the sweep.
        self.watched = False

    # -- the asyncio protocol, passed through ------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._guard.connections += 1
        # a connection that sends nothing is aiohttp's: its keep-alive timer runs from here
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        handler = self.handler
        if not self.watched:
            waiter = handler._waiter
            requests = handler._request_count
            if (waiter is not None and not waiter.done()) or (requests == 0 and not handler._messages):
                # aiohttp waits for a request (or has had none yet): these are a request's
                # first bytes. Bytes that come while a request is parsed but not yet handled,
                # handled, or read out after it (a WebSocket's frames, the rest of a body)
                # find aiohttp waiting for nothing.
                self.watched = True
                self._guard.watch(self, requests)
        handler.data_received(data)

    def eof_received(self) -> bool | None:
        self.handler.eof_received()
        return None  # aiohttp's answer: close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self._guard
        guard.connections -= 1
        guard.forget(self)
        self._transport = None
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    # -- what the sweep decides ------------------------------------------------------------
    def headers_too_slow(self) -> None:
        self.watched = False
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
