"""The floor: what aiohttp + orjson/msgpack cost with no SignalR layer at all.

It speaks just enough of the wire for the load generator (a stateless negotiate, the
handshake, one record per message) and does the least any SignalR server must: decode
each record, encode each answer. Broadcasts are encoded once per protocol and written as
one frame per message per socket (`send_frame`, no batching: the "frame-once" figure).
Groups are plain sets. Server-Sent Events and long polling are the same few lines over
an in-memory outbox, so the HTTP transports have a floor too.

Run as `python -m bench.floor_server --port 0`; prints `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import defaultdict
from typing import Any

import msgpack
import orjson
from aiohttp import WSMsgType, web

from tests.support.msgpack_wire import framed

from . import procfs, wire

HANDSHAKE_OK = b"{}" + wire.RS
#: permessage-deflate for clients that offer it (the deflate scenario sets BENCH_DEFLATE=1).
DEFLATE = os.environ.get("BENCH_DEFLATE") == "1"
NEGOTIATE_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


class Peer:
    """One client, over whichever transport; `send` takes one encoded record (or several)."""

    __slots__ = ("binary", "handshaken", "outbox", "ready", "socket")

    def __init__(self) -> None:
        self.binary = False
        self.handshaken = False
        self.socket: web.WebSocketResponse | None = None
        self.outbox: list[bytes] = []
        self.ready = asyncio.Event()

    async def send(self, data: bytes) -> None:
        socket = self.socket
        if socket is not None:
            await socket.send_frame(data, WSMsgType.BINARY if self.binary else WSMsgType.TEXT)
        else:
            self.outbox.append(data)
            self.ready.set()

    def take(self) -> bytes:
        data = b"".join(self.outbox)
        self.outbox.clear()
        self.ready.clear()
        return data


class Floor:
    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.peers: dict[str, Peer] = {}  # negotiated, by token (HTTP transports)
        self.sockets: set[Peer] = set()
        self.groups: defaultdict[str, set[Peer]] = defaultdict(set)

    # -- the SignalR minimum ----------------------------------------------------------
    async def receive(self, peer: Peer, data: bytes) -> None:
        """Records from a client, the handshake first."""
        if not peer.handshaken:
            end = data.find(wire.RS)
            peer.binary = b"messagepack" in data[:end]
            peer.handshaken = True
            await peer.send(HANDSHAKE_OK)
            data = data[end + 1 :]
        if peer.binary:
            for record in wire.split_records("messagepack", data):
                message = msgpack.unpackb(record, raw=False)
                if message[0] == 1:
                    await self.invoke(peer, message[3], message[4], message[2])
        else:
            for record in data.split(wire.RS)[:-1]:
                message = orjson.loads(record)
                if message["type"] == 1:
                    await self.invoke(peer, message["target"], message["arguments"], message.get("invocationId"))

    async def invoke(self, peer: Peer, target: str, arguments: list[Any], invocation_id: str | None) -> None:
        result: Any = None
        if target in ("Echo", "EchoAsync"):
            result = arguments[0]
        elif target == "Broadcast":
            await self.fan_out(self.sockets, "Broadcast", arguments)
        elif target == "SendToGroup":
            await self.fan_out(self.groups[arguments[0]], "Group", arguments[1:])
        elif target == "JoinGroup":
            self.groups[arguments[0]].add(peer)
        if invocation_id is not None:
            await peer.send(completion(peer.binary, invocation_id, result))

    async def fan_out(self, peers: set[Peer], target: str, arguments: list[Any]) -> None:
        encoded: dict[bool, bytes] = {}
        for peer in list(peers):
            if not peer.handshaken:
                continue
            data = encoded.get(peer.binary)
            if data is None:
                data = encoded[peer.binary] = invocation(peer.binary, target, arguments)
            await peer.send(data)

    # -- HTTP ---------------------------------------------------------------------------
    async def negotiate(self, request: web.Request) -> web.Response:
        token = str(next(self.ids))
        self.peers[token] = Peer()
        document = {
            "negotiateVersion": 1,
            "connectionId": token,
            "connectionToken": token,
            "availableTransports": NEGOTIATE_TRANSPORTS,
        }
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async def connect(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("id", "")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.peers.pop(token, None)
            return await self.websocket(request)
        peer = self.peers.get(token)
        if peer is None:
            return web.Response(status=404)
        if request.method == "POST":
            await self.receive(peer, await request.read())
            return web.Response()
        if request.method == "DELETE":
            self.drop(self.peers.pop(token, peer))
            return web.Response(status=202)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self.event_stream(request, peer)
        await peer.ready.wait()
        return web.Response(body=peer.take(), content_type="application/octet-stream")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(compress=DEFLATE)
        await socket.prepare(request)
        peer = Peer()
        peer.socket = socket
        self.sockets.add(peer)
        try:
            async for message in socket:
                if message.type is WSMsgType.TEXT:
                    await self.receive(peer, message.data.encode())
                elif message.type is WSMsgType.BINARY:
                    await self.receive(peer, message.data)
        finally:
            self.drop(peer)
        return socket

    async def event_stream(self, request: web.Request, peer: Peer) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b":\r\n")
        self.sockets.add(peer)
        try:
            while True:
                await peer.ready.wait()
                await response.write(b"data: " + peer.take() + b"\r\n\r\n")
        finally:
            self.drop(peer)

    def drop(self, peer: Peer) -> None:
        self.sockets.discard(peer)
        for members in self.groups.values():
            members.discard(peer)


def completion(binary: bool, invocation_id: str, result: Any) -> bytes:
    if binary:
        packed: bytes = msgpack.packb(
            [3, {}, invocation_id, 3, result] if result is not None else [3, {}, invocation_id, 2]
        )
        return framed(packed)
    body = {"type": 3, "invocationId": invocation_id, "result": result} if result is not None else None
    return orjson.dumps(body or {"type": 3, "invocationId": invocation_id}) + wire.RS


def invocation(binary: bool, target: str, arguments: list[Any]) -> bytes:
    if binary:
        packed: bytes = msgpack.packb([1, {}, None, target, arguments])
        return framed(packed)
    return orjson.dumps({"type": 1, "target": target, "arguments": arguments}) + wire.RS


def create_app() -> web.Application:
    floor = Floor()
    app = web.Application()
    app.router.add_post("/hub/negotiate", floor.negotiate)
    app.router.add_route("*", "/hub", floor.connect)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(create_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    procfs.serve_main(serve)


if __name__ == "__main__":
    main()
