"""Slow, idle and surplus sockets against `python -m signalr_chat`, with raw sockets on
127.0.0.1: Kestrel's request-header timeout, keep-alive timeout, minimum request-body
rate and a connection cap (signalr_chat/hosting/http_guard.py).

The servers run with small limits (1 s for headers and bodies, 3 s idle) so nothing waits long; every wait is for the
server to act (a socket it closes), bounded by a generous socket timeout.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest

from tests.support.chat_fixtures import ChatServer, assert_clean_log, offline_env

pytestmark = pytest.mark.timeout(60)

#: How long a test waits for the server to act before calling it a failure.
PATIENCE = 15.0
TIGHT = {
    "http_request_header_timeout_seconds": "1",
    "http_keep_alive_timeout_seconds": "3",
    "http_min_request_body_rate": "240",
    "http_min_request_body_grace_seconds": "1",
}


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    log = tmp_path_factory.mktemp("tight-http") / "server.log"
    server = ChatServer(offline_env(log_level="DEBUG", **TIGHT), log=log).start()
    try:
        yield server
    finally:
        server.stop()
    assert_clean_log(log)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    log = tmp_path_factory.mktemp("capped-http") / "server.log"
    server = ChatServer(offline_env(http_max_connections="3"), log=log).start()
    try:
        yield server
    finally:
        server.stop()
    assert_clean_log(log)


def connect(server: ChatServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def closed_by_server(sock: socket.socket, pace: float) -> bool:
    """True once the server has acted on the socket; waits at most `pace` seconds."""
    readable, _, _ = select.select([sock], [], [], pace)
    return bool(readable)  # it answered (408) and closed, or reset


def test_half_a_request_line_gets_408(tight: ChatServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET / HT")
        started = time.monotonic()
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response
    assert time.monotonic() - started < PATIENCE


def test_trickled_headers_get_408(tight: ChatServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        try:
            while sent < 100 and not closed_by_server(sock, pace=0.3):
                sock.sendall(f"X-Trickle-{sent}: y\r\n".encode())
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_until_closed(sock)
    assert sent < 100, "the server never timed the headers out"
    assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response


def test_a_silent_connection_is_closed(tight: ChatServer) -> None:
    with connect(tight) as sock:
        assert read_until_closed(sock) == b""


def test_an_idle_keep_alive_connection_is_closed(tight: ChatServer) -> None:
    with connect(tight) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:200]
    assert b"Connection: close" not in response.split(b"\r\n\r\n", 1)[0], "kept alive, then closed for idling"


def negotiate(server: ChatServer) -> str:
    request = urllib.request.Request(f"{server.base}/chatHub/negotiate?negotiateVersion=1", method="POST")
    with urllib.request.urlopen(request, timeout=PATIENCE) as response:
        return str(json.load(response)["connectionToken"])


def test_a_slow_request_body_is_cut_off(tight: ChatServer) -> None:
    token = negotiate(tight)
    with connect(tight) as sock:
        sock.sendall(f"POST /chatHub?id={token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode())
        sent = 0
        try:
            while sent < 200 and not closed_by_server(sock, pace=0.3):
                sock.sendall(b"{")
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_until_closed(sock)
    assert sent < 200, "a body at ~3 bytes/s was never cut off"
    assert b" 200 " not in response


async def test_websockets_and_fast_bodies_are_not_affected(tight: ChatServer) -> None:
    """A WebSocket is one long request: it outlives every timeout. A quick POST body passes."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{tight.base}/chatHub/negotiate?negotiateVersion=1") as response:
            token = (await response.json())["connectionToken"]
        async with session.ws_connect(f"{tight.base.replace('http', 'ws')}/chatHub?id={token}") as ws:
            await ws.send_str('{"protocol":"json","version":1}\x1e')
            assert (await ws.receive(timeout=PATIENCE)).data == "{}\x1e"
            # an idle socket opened now is closed after the 3 s timeout: the WebSocket, older, is not
            with connect(tight) as idle:
                assert read_until_closed(idle) == b""
            await ws.send_str('{"type":1,"invocationId":"1","target":"GetHistory","arguments":[]}\x1e')
            reply = await ws.receive(timeout=PATIENCE)
            assert json.loads(reply.data.split("\x1e")[0]) == {"type": 3, "invocationId": "1", "result": []}
        # long polling's sends: a body that arrives at once is never slow
        async with session.post(f"{tight.base}/chatHub/negotiate?negotiateVersion=1") as response:
            url = f"{tight.base}/chatHub?id={(await response.json())['connectionToken']}"
        async with session.get(url) as first_poll:
            assert first_poll.status == 200
        async with session.post(url, data=b'{"protocol":"json","version":1}\x1e') as sent:
            assert sent.status == 200


def served(server: ChatServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.base}/", timeout=PATIENCE) as page:
            return page.status == 200
    except OSError:
        return False


def test_connections_over_the_cap_get_503(capped: ChatServer) -> None:
    held = [connect(capped) for _ in range(3)]
    try:
        with connect(capped) as surplus:
            assert read_until_closed(surplus).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        held.pop().close()
        deadline = time.monotonic() + PATIENCE
        while not served(capped):  # the server notices the freed slot as soon as the FIN arrives
            assert time.monotonic() < deadline, "a freed slot was never reused"
    finally:
        for sock in held:
            sock.close()
