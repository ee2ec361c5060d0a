"""A SignalR client connection as a bare asyncio.Protocol: no tasks, no futures per message.

As the SignalR clients do, the negotiate POST has a short connection of its own; the
WebSocket connection then carries the upgrade and the handshake, and after that every
frame goes straight to `on_message`, which the scenario's subclass overrides. Pings are
answered with pongs; nothing else is parsed unless a subclass asks for it.

(Reusing the negotiate connection for the upgrade would be cheaper for the client, but
aiohttp then keeps the negotiate response alive for the socket's whole life: ~4 KB of
RSS per connection that no browser would cause.)

An app server behind Azure SignalR Service answers negotiate with a redirect (`url`,
`accessToken`): the client then negotiates with the service (`client/negotiate`, the token
as a Bearer) and opens its WebSocket there, with `id` and `access_token` in the query, as
the stock clients do. The socket's `port` stays the app server's (where it negotiated).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket as sockets
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast
from urllib.parse import quote, urlsplit

import orjson

from . import wire

UPGRADE, HANDSHAKE, OPEN, CLOSED = range(4)


class HandshakeFailed(Exception):
    pass


class SignalRSocket(asyncio.Protocol):
    #: Offer permessage-deflate, as browsers do (set once per load-generator process).
    deflate = False

    def __init__(self, port: int, path: str, protocol: str) -> None:
        self.port = port
        self.path = path
        self.protocol = protocol
        self.opcode = wire.OP_TEXT if protocol == "json" else wire.OP_BINARY
        self.phase = UPGRADE
        self.token = ""
        #: A bearer token (sign-in): the negotiate's Authorization header, the WebSocket's
        #: `access_token` query parameter, as browsers send it.
        self.access_token: str | None = None
        #: After a negotiate redirect: the service's port and the WebSocket's request target.
        self.redirected: tuple[int, str] | None = None
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._http = wire.HttpResponses()
        self._buffer = bytearray()
        self._inflate: zlib._Decompress | None = None  # once the server accepts deflate
        self.frames_in = 0

    # -- setup ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        redirected = self.redirected
        if redirected is None:
            target = f"{self.path}?id={self.token}"
            if self.access_token:
                target += f"&access_token={quote(self.access_token, safe='')}"
            self.transport.write(wire.upgrade_request(target, self.port, self.deflate))
        else:
            self.transport.write(wire.upgrade_request(redirected[1], redirected[0], self.deflate))

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during setup: {exc}"))
        self.on_lost()

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeFailed(reason))
        if self.transport is not None:
            self.transport.close()

    def _setup(self, data: bytes) -> None:
        assert self.transport is not None
        if self.phase == HANDSHAKE:
            self._frames(data)
            return
        for status, headers, _body in self._http.feed(data):
            if status != 101:
                self._fail(f"upgrade: HTTP {status}")
                return
            if "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            elif self.deflate:
                self._fail("upgrade: permessage-deflate offered but not accepted")
                return
            self.phase = HANDSHAKE
            self.transport.write(wire.client_frame(wire.handshake(self.protocol), wire.OP_TEXT))
            rest = self._http.take_rest()
            if rest:
                self._frames(rest)
            return

    def _handshake_response(self, payload: bytes) -> None:
        end = payload.find(wire.RS)
        if end < 0 or b"error" in payload[:end]:
            self._fail(f"handshake: {payload[:200]!r}")
            return
        self.phase = OPEN
        self.opened.set_result(None)
        self.on_open()
        if end + 1 < len(payload):
            self.on_message(payload[end + 1 :])

    # -- frames -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.phase != OPEN:
            self._setup(data)
            return
        if not self._buffer and len(data) >= 2:
            # the common case: exactly one small unfragmented data frame
            length = data[1]
            if (
                length < 126
                and len(data) == length + 2
                and data[0] & (wire.RSV1 | 0x0F) in (wire.OP_TEXT, wire.OP_BINARY)
            ):
                self.frames_in += 1
                self.on_message(data[2:])
                return
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        frames, used = wire.parse_frames(buffer)
        del buffer[:used]
        for flagged, payload in frames:
            opcode = flagged & 0x0F
            if flagged & wire.RSV1 and self._inflate is not None:
                payload = self._inflate.decompress(payload + wire.DEFLATE_TAIL)
            if opcode == wire.OP_TEXT or opcode == wire.OP_BINARY:
                self.frames_in += 1
                if self.phase == OPEN:
                    self.on_message(payload)
                elif self.phase == HANDSHAKE:
                    self._handshake_response(payload)
            elif opcode == wire.OP_PING and self.transport is not None:
                self.transport.write(wire.client_frame(payload, wire.OP_PONG))
            elif opcode == wire.OP_CLOSE and self.transport is not None:
                with contextlib.suppress(Exception):
                    self.transport.write(wire.client_frame(payload[:2], wire.OP_CLOSE))
                self.transport.close()

    # -- for subclasses -----------------------------------------------------------
    def on_open(self) -> None:
        """The handshake is done."""

    def on_message(self, payload: bytes) -> None:
        """One data frame's payload: one or more SignalR records."""

    def on_lost(self) -> None:
        """The TCP connection is gone."""

    def send(self, data: bytes) -> None:
        if self.transport is not None and self.phase == OPEN:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and self.phase != CLOSED:
            with contextlib.suppress(Exception):
                self.transport.write(wire.client_frame(b"\x03\xe8", wire.OP_CLOSE))
            self.transport.close()


S = TypeVar("S", bound=SignalRSocket)


#: Linux: bind() picks the address only; the port is chosen at connect() time, per destination.
IP_BIND_ADDRESS_NO_PORT = getattr(sockets, "IP_BIND_ADDRESS_NO_PORT", 24)


def source_addresses(count: int, per_address: int = 20_000) -> list[str]:
    """Loopback source addresses, so more than one port range's worth of sockets can reach one port."""
    return [f"127.0.0.{1 + i // per_address}" for i in range(count)]


async def connect(factory: Callable[[], asyncio.Protocol], port: int, source: str) -> None:
    """Connect from `source` without bind() reserving a port: a plain bind(addr, 0) searches the
    whole port range under a lock and fails long before connect() would run out of 4-tuples."""
    loop = asyncio.get_running_loop()
    sock = _socket(source)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise


def _socket(source: str) -> sockets.socket:
    sock = sockets.socket(sockets.AF_INET, sockets.SOCK_STREAM)
    try:
        sock.setsockopt(sockets.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Collect(asyncio.Protocol):
    """Sends one `Connection: close` request and keeps everything until the server closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = bytearray()
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.data))


@dataclass(frozen=True, slots=True)
class Redirect:
    """A negotiate answer that sends the client to Azure SignalR Service."""

    url: str
    access_token: str


async def negotiate(port: int, path: str, source: str = "127.0.0.1", access_token: str | None = None) -> str | Redirect:
    """POST {path}/negotiate?negotiateVersion=1 on a connection of its own; the connection
    token, or the redirect of an app server behind Azure SignalR Service."""
    headers = {"Connection": "close"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    request = wire.http_request("POST", f"{path}/negotiate?negotiateVersion=1", port, headers)
    collect = _Collect(request)
    await connect(lambda: collect, port, source)
    return _token(await collect.done)


async def follow(redirect: Redirect, source: str = "127.0.0.1") -> tuple[int, str]:
    """Negotiate with the service a redirect names, as the stock clients do: `{url path}/negotiate`
    with the redirect's query and the access token as a Bearer. Returns the service's port and the
    WebSocket's request target (`{url}&id={connectionToken}&access_token={token}`)."""
    parts = urlsplit(redirect.url)
    if parts.hostname != "127.0.0.1" or parts.port is None:
        raise HandshakeFailed(f"negotiate: redirect to {redirect.url!r}, not a loopback port")
    query = parts.query + "&" if parts.query else ""
    headers = {"Connection": "close"}
    if redirect.access_token:
        headers["Authorization"] = f"Bearer {redirect.access_token}"
    negotiate_target = f"{parts.path.rstrip('/')}/negotiate?{query}negotiateVersion=1"
    collect = _Collect(wire.http_request("POST", negotiate_target, parts.port, headers))
    await connect(lambda: collect, parts.port, source)
    token = _token(await collect.done)
    if isinstance(token, Redirect):
        raise HandshakeFailed(f"negotiate: redirected again, to {token.url!r}")
    target = f"{parts.path}?{query}id={quote(token, safe='')}"
    if redirect.access_token:
        target += f"&access_token={quote(redirect.access_token, safe='')}"
    return parts.port, target


def _token(raw: bytes) -> str | Redirect:
    responses = wire.HttpResponses().feed(raw)
    if not responses:
        raise HandshakeFailed(f"negotiate: no response ({raw[:100]!r})")
    status, _headers, body = responses[0]
    document = orjson.loads(body) if status == 200 else {"error": f"negotiate: HTTP {status}"}
    if "error" in document:
        raise HandshakeFailed(str(document["error"]))
    if "url" in document:
        return Redirect(str(document["url"]), str(document.get("accessToken") or ""))
    return str(document.get("connectionToken") or document["connectionId"])


async def open_many(
    factory: Callable[[int], S],
    count: int,
    *,
    concurrency: int = 64,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
    setup_ns: list[int] | None = None,
) -> tuple[list[S], int]:
    """Open `count` connections, at most `concurrency` in setup at once; returns the opened ones and the failures.

    Each negotiates at its socket's own port (a scaled-out run spreads them over instances)
    and connects there, or where a negotiate redirect sends it (Azure SignalR Service).
    The limit keeps the server's accept backlog (128 in aiohttp) from overflowing, which
    would cost whole-second SYN retransmits rather than measure anything. `setup_ns`
    collects each opened connection's negotiate-to-handshake time.
    """
    gate = asyncio.Semaphore(concurrency)
    addresses = source_addresses(count)
    opened: list[S | None] = [None] * count
    done = itertools.count(1)
    failures = 0

    async def one(index: int) -> None:
        nonlocal failures
        async with gate:
            socket = factory(index)
            port = socket.port
            source = addresses[index]
            started = time.perf_counter_ns()
            try:
                answer = await asyncio.wait_for(negotiate(port, socket.path, source, socket.access_token), timeout)
                if isinstance(answer, Redirect):
                    socket.redirected = await asyncio.wait_for(follow(answer, source), timeout)
                    port = socket.redirected[0]
                else:
                    socket.token = answer
                await asyncio.wait_for(connect(lambda: socket, port, source), timeout)
                await asyncio.wait_for(socket.opened, timeout)
            except (OSError, TimeoutError, HandshakeFailed) as exc:
                failures += 1
                if failures <= 3:
                    print(f"connection {index} failed: {exc!r}", flush=True)
                socket.close()
                return
            opened[index] = socket
            if setup_ns is not None:
                setup_ns.append(time.perf_counter_ns() - started)
            if on_progress is not None:
                on_progress(next(done))

    await asyncio.gather(*(one(i) for i in range(count)))
    return [s for s in opened if s is not None], failures


def close_all(sockets: Sequence[SignalRSocket]) -> None:
    for socket in sockets:
        socket.close()
