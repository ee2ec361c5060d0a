"""The HTTP guard's sweep on plain objects: one timer per server, only while something is watched.

tests/test_slow_sockets.py drives the real server over sockets; this file checks what those
cannot see: that a request in flight or finished leaves no timer behind, so an idle server's
loop is not woken by the guard.
"""

from __future__ import annotations

import asyncio
from typing import Any

from signalr_chat.http_guard import REQUEST_TIMEOUT, ConnectionGuard, HttpLimits

LIMITS = HttpLimits(request_header_timeout=0.2, min_request_body_grace=0.2)


class Transport:
    """What the guard does to a socket, recorded."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class Inner(asyncio.Protocol):
    """aiohttp's protocol stand-in: it only counts what it was handed."""

    def __init__(self) -> None:
        self.received = b""

    def data_received(self, data: bytes) -> None:
        self.received += data


class Content:
    def __init__(self, eof: bool) -> None:
        self.eof = eof
        self.total_bytes = 0

    def is_eof(self) -> bool:
        return self.eof


class Request:
    def __init__(self, eof: bool) -> None:
        self.content = Content(eof)


def connect(guard: ConnectionGuard) -> tuple[Any, Transport, Inner]:
    inner = Inner()
    connection: Any = guard.protocol_factory(lambda: inner)()
    transport = Transport()
    connection.connection_made(transport)
    return connection, transport, inner


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_headers_that_never_finish_get_408_and_the_sweep_stops() -> None:
    guard = ConnectionGuard(LIMITS)
    connection, transport, inner = connect(guard)
    connection.data_received(b"GET / HT")
    assert inner.received == b"GET / HT"  # passed through untouched
    await until(lambda: transport.closed)
    assert transport.written == REQUEST_TIMEOUT
    await until(lambda: guard._sweep_handle is None)


async def test_requests_that_begin_in_time_leave_nothing_watched() -> None:
    guard = ConnectionGuard(LIMITS)
    connections = [connect(guard) for _ in range(100)]
    assert guard.connections == 100
    for connection, _, _ in connections:
        connection.data_received(b"POST /chat HTTP/1.1\r\n\r\n")
        connection.request_started(Request(eof=True))
        connection.request_ended()
    assert not guard._awaiting_headers and not guard._bodies
    # the one sweep armed by the first request runs once, finds nothing, and is not re-armed
    await until(lambda: guard._sweep_handle is None)
    assert not any(transport.closed or transport.aborted for _, transport, _ in connections)
    for connection, _, _ in connections:
        connection.connection_lost(None)
    assert guard.connections == 0


async def test_a_body_slower_than_the_minimum_rate_is_aborted_a_fast_one_is_not() -> None:
    guard = ConnectionGuard(LIMITS)
    slow, slow_transport, _ = connect(guard)
    fast, fast_transport, _ = connect(guard)
    slow_request, fast_request = Request(eof=False), Request(eof=False)
    for connection, request in ((slow, slow_request), (fast, fast_request)):
        connection.data_received(b"POST /chat HTTP/1.1\r\n")
        connection.request_started(request)
    fast_request.content.total_bytes = 1_000_000
    await until(lambda: slow_transport.aborted)
    assert not fast_transport.aborted
    fast_request.content.eof = True
    fast.request_ended()
    slow.connection_lost(None)
    await until(lambda: guard._sweep_handle is None)


async def test_a_connection_lost_while_watched_is_forgotten() -> None:
    guard = ConnectionGuard(LIMITS)
    connection, transport, _ = connect(guard)
    connection.data_received(b"GET / HTTP/1.1\r\n")
    connection.connection_lost(None)
    assert not guard._awaiting_headers
    await until(lambda: guard._sweep_handle is None)
    assert transport.written == b""
