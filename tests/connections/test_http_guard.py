"""The HTTP guard in process, on aiohttp's real request handler, with raw loopback sockets.

tests/processes/test_slow_sockets.py drives the whole server as a process; this file checks what
those tests cannot see: the guard's one sweep stops once nothing is watched (an idle
server's loop is not woken by it), and finished requests leave nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from signalr_chat.hosting.http_guard import REQUEST_TIMEOUT, ConnectionGuard, HttpLimits
from tests.support.conditions import until

LIMITS = HttpLimits(request_header_timeout=0.3, min_request_body_rate=1000, min_request_body_grace=0.3)
pytestmark = pytest.mark.timeout(30)


#: The requests /ignore answered, so a test can see how much of their body was read.
IGNORED: list[web.BaseRequest] = []


async def echo(request: web.BaseRequest) -> web.Response:
    if request.path == "/ignore":
        IGNORED.append(request)
        return web.Response(text="ok")  # the body is left for aiohttp to read out after
    return web.Response(body=await request.read())


@asynccontextmanager
async def guarded() -> AsyncIterator[tuple[ConnectionGuard, int]]:
    guard = ConnectionGuard(LIMITS)
    server = await asyncio.get_running_loop().create_server(guard.protocol_factory(web.Server(echo)), "127.0.0.1", 0)
    try:
        yield guard, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        guard.close()


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def test_headers_that_never_finish_get_408_and_the_sweep_stops() -> None:
    async with guarded() as (guard, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HT")
        assert await asyncio.wait_for(reader.read(), 10) == REQUEST_TIMEOUT  # then closed
        await until(lambda: guard._sweep_handle is None)
        writer.close()


async def test_requests_that_complete_leave_nothing_watched() -> None:
    async with guarded() as (guard, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(50):  # one keep-alive connection, request after request
            writer.write(post(b"%d" % i))
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readexactly(len(b"%d" % i)) == b"%d" % i
        await until(lambda: guard._sweep_handle is None)  # swept once, then not re-armed
        assert not guard._awaiting_headers and not guard._bodies
        assert guard.connections == 1
        writer.close()
        await until(lambda: guard.connections == 0)


async def test_a_body_slower_than_the_minimum_rate_is_aborted_a_fast_one_is_not() -> None:
    async with guarded() as (guard, port):
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        fast_reader, fast = await asyncio.open_connection("127.0.0.1", port)
        body = b"x" * 2000
        slow.write(post(body)[:-1990])  # headers and 10 bytes: 1000 bytes/s is not kept up
        fast.write(post(body))
        assert (await fast_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(slow_reader.read(), 10) == b""  # aborted, no answer
        assert await fast_reader.readexactly(len(body)) == body
        await until(lambda: guard._sweep_handle is None)
        fast.close()
        slow.close()


async def test_a_connection_lost_while_watched_is_forgotten() -> None:
    async with guarded() as (guard, port):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\n")
        await until(lambda: bool(guard._awaiting_headers))
        writer.close()
        await until(lambda: guard.connections == 0)
        assert not guard._awaiting_headers
        await until(lambda: guard._sweep_handle is None)


async def test_bytes_of_a_request_already_answered_are_not_taken_for_a_new_one() -> None:
    """The rest of a body the handler never read arrives after the response, while aiohttp
    reads it out: those bytes start no header timer, and the connection serves on."""
    async with guarded() as (guard, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n0123456789")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(2) == b"ok"
        await until(lambda: guard._sweep_handle is None)  # the POST's own watch is over
        [request] = IGNORED[-1:]
        writer.write(b"0123456789")  # read out by aiohttp, not the start of a request
        await until(lambda: request.content.total_bytes == 20)
        await until(lambda: guard._sweep_handle is None)  # nothing watched (or a 408 sent)
        writer.write(b"0123456789" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
