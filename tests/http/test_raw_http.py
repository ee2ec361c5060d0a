"""The wire, by hand: negotiate, WebSockets, SSE and long polling spoken with aiohttp's client.

Most tests talk to the `hub_server` fixture (tests/support/hub_app.py in its own process). Tests that
need special options (short timeouts, small limits, shutdown) build a server in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from bench.wire import client_frame
from signalr_chat.signalr import Hub, HubEndpoint, HubOptions, InMemoryHubLifetimeManager, map_hub
from signalr_chat.signalr.connections import Connection, ConnectionOptions
from signalr_chat.signalr.connections.transports.websockets import WebSocketTransport
from signalr_chat.signalr.hubs import HubConnectionContext
from signalr_chat.signalr.hubs.invocation_queue import JOB_OVERHEAD, WAITING_BUDGET
from tests.support.msgpack_wire import TIMESTAMP_PAST_9999, framed, pack, split_msgpack

pytestmark = pytest.mark.timeout(30)

RS = b"\x1e"
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
CLOSED_WITH_ERROR = "Connection closed with an error."
ALL_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


# -- wire helpers ----------------------------------------------------------------


def json_record(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + RS


def handshake(protocol: str = "json", version: int = 1) -> bytes:
    return json_record({"protocol": protocol, "version": version})


def split_json(buffer: bytearray) -> list[Any]:
    records: list[Any] = []
    while (end := buffer.find(RS)) >= 0:
        records.append(json.loads(bytes(buffer[:end])))
        del buffer[: end + 1]
    return records


def message_type(record: Any) -> int:
    return int(record["type"] if isinstance(record, dict) else record[0])


class Closed(Exception):
    """The server closed the WebSocket."""


class HubSocket:
    """A hand-driven hub connection over one aiohttp WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.binary = protocol == "messagepack"
        self.buffer = bytearray()
        self.frames: list[tuple[WSMsgType, bytes]] = []
        self.handshake_done = False
        self.records: deque[Any] = deque()

    async def frame(self, timeout: float = 5) -> bytes:
        message = await self.ws.receive(timeout=timeout)
        if message.type is WSMsgType.TEXT:
            data = message.data.encode()
        elif message.type is WSMsgType.BINARY:
            data = message.data
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise Closed(self.ws.close_code)
        else:
            raise AssertionError(f"unexpected frame {message!r}")
        self.frames.append((message.type, data))
        return bytes(data)

    async def send_raw(self, data: bytes, binary: bool | None = None) -> None:
        if binary if binary is not None else self.binary:
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data.decode())

    async def handshake(self, version: int = 1) -> dict[str, Any]:
        await self.ws.send_str(handshake(self.protocol, version).decode())
        return await self.handshake_response()

    async def handshake_response(self, timeout: float = 5) -> dict[str, Any]:
        while RS not in self.buffer:
            self.buffer += await self.frame(timeout)
        end = self.buffer.index(RS)
        response: dict[str, Any] = json.loads(bytes(self.buffer[:end]))
        del self.buffer[: end + 1]
        self.handshake_done = True
        return response

    def encode(self, record: Any) -> bytes:
        return framed(pack(record)) if self.binary else json_record(record)

    async def send(self, *records: Any) -> None:
        await self.send_raw(b"".join(self.encode(r) for r in records))

    async def invoke(self, target: str, *args: Any, invocation_id: str | None = None) -> None:
        if self.binary:
            await self.send([1, {}, invocation_id, target, list(args), []])
        else:
            record: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
            if invocation_id is not None:
                record["invocationId"] = invocation_id
            await self.send(record)

    async def recv(self, timeout: float = 5, pings: bool = False) -> Any:
        """The next hub message (pings skipped unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.records:
                self.records.extend(split_msgpack(self.buffer) if self.binary else split_json(self.buffer))
            while self.records:
                record = self.records.popleft()
                if pings or message_type(record) != 6:
                    return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no hub message in time")
            self.buffer += await self.frame(remaining)

    async def call(self, target: str, *args: Any, invocation_id: str = "1") -> Any:
        await self.invoke(target, *args, invocation_id=invocation_id)
        return await self.recv()

    async def wait_closed(self, timeout: float = 5) -> int | None:
        """Read (and keep) frames until the server closes; the close code."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.buffer += await self.frame(max(deadline - time.monotonic(), 0.01))
            except Closed:
                return self.ws.close_code


async def negotiate(
    session: aiohttp.ClientSession, base: str, path: str = "/testhub", query: str = "negotiateVersion=1"
) -> dict[str, Any]:
    async with session.post(f"{base}{path}/negotiate?{query}") as response:
        assert response.status == 200, await response.text()
        document: dict[str, Any] = await response.json()
        return document


def ws_url(base: str, path: str, token: str | None) -> str:
    url = base.replace("http://", "ws://") + path
    return f"{url}?id={token}" if token is not None else url


@asynccontextmanager
async def hub_socket(
    session: aiohttp.ClientSession,
    base: str,
    path: str = "/testhub",
    protocol: str = "json",
    *,
    do_handshake: bool = True,
) -> AsyncIterator[HubSocket]:
    token = (await negotiate(session, base, path))["connectionToken"]
    async with session.ws_connect(ws_url(base, path, token), autoping=True) as ws:
        socket = HubSocket(ws, protocol)
        if do_handshake:
            assert await socket.handshake() == {}
        yield socket


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
        yield client


# -- in-process servers -------------------------------------------------------------


HELD = asyncio.Event()


class RawHub(Hub):
    async def echo(self, value: Any) -> Any:
        return value

    def add(self, a: int, b: int) -> int:
        return a + b

    async def counter(self, count: int) -> AsyncIterator[int]:
        for i in range(count):
            yield i

    async def send_many(self, count: int, size: int) -> int:
        chunk = "y" * size
        for i in range(count):
            await self.clients.caller.send("Chunk", i, chunk)
        return count

    async def hold(self) -> str:
        """Occupies the connection's one invocation slot until the test releases it."""
        await HELD.wait()
        return "released"

    async def send_to_caller(self, method: str, *payload: Any) -> None:
        await self.clients.caller.send(method, *payload)

    async def get_connection_id(self) -> str:
        return self.context.connection_id

    async def burst(self, count: int) -> int:
        """Several events for the caller in one go, as a chat reply's tokens can come."""
        for i in range(count):
            await self.clients.caller.send("Burst", i)
        return count

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def send_to_group(self, group: str, value: Any) -> None:
        await self.clients.group(group).send("Group", value)

    async def blast(self, count: int, size: int) -> int:
        """Broadcast `count` big messages, yielding between them as a real producer would."""
        for i in range(count):
            await self.clients.all.send("Blast", i, "x" * size)
            await asyncio.sleep(0.001)
        return count


@dataclass
class InProcess:
    server: TestServer
    endpoint: HubEndpoint

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@asynccontextmanager
async def in_process(**options: Any) -> AsyncIterator[InProcess]:
    app = web.Application()
    endpoint = map_hub(app, "/testhub", RawHub, options=HubOptions(**options))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(shutdown_timeout=2)
    try:
        yield InProcess(server, endpoint)
    finally:
        await server.close()


def server_side(server: InProcess, token: str) -> Connection:
    connection = server.endpoint.connections.get(token)
    assert connection is not None
    return connection


async def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


# ================================================================================
# negotiate
# ================================================================================


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_negotiate_is_post_only(hub_server: Any, session: aiohttp.ClientSession, method: str) -> None:
    async with session.request(method, hub_server.url("/testhub/negotiate?negotiateVersion=1")) as response:
        assert response.status == 405


async def test_negotiate_path_and_query_names_are_case_insensitive(
    hub_server: Any, session: aiohttp.ClientSession
) -> None:
    async with session.post(hub_server.url("/TESTHUB/negotiate?NegotiateVersion=1")) as response:
        assert response.status == 200
        document = await response.json()
    assert document["negotiateVersion"] == 1
    assert "connectionToken" in document
    async with session.post(hub_server.url("/TestHub/Negotiate?NEGOTIATEVERSION=1")) as response:
        assert response.status == 200
        assert (await response.json())["negotiateVersion"] == 1


async def test_negotiate_non_integer_version(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with session.post(hub_server.url("/testhub/negotiate?negotiateVersion=abc")) as response:
        assert response.status == 200
        assert json.loads(await response.read()) == {"error": "The client requested a non-integer protocol version."}


async def test_negotiate_version_zero(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with session.post(hub_server.url("/testhub/negotiate")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document = await response.json()
    assert set(document) == {"negotiateVersion", "connectionId", "availableTransports"}
    assert document["negotiateVersion"] == 0
    assert URL_SAFE.fullmatch(document["connectionId"])
    assert document["availableTransports"] == ALL_TRANSPORTS


async def test_negotiate_version_one(hub_server: Any, session: aiohttp.ClientSession) -> None:
    first = await negotiate(session, hub_server.base)
    second = await negotiate(session, hub_server.base, query="negotiateVersion=7")
    for document in (first, second):
        assert set(document) == {"negotiateVersion", "connectionId", "connectionToken", "availableTransports"}
        assert document["negotiateVersion"] == 1
        assert document["connectionToken"] != document["connectionId"]
        assert URL_SAFE.fullmatch(document["connectionToken"])
        assert URL_SAFE.fullmatch(document["connectionId"])
        assert document["availableTransports"] == ALL_TRANSPORTS
    assert first["connectionId"] != second["connectionId"]
    assert first["connectionToken"] != second["connectionToken"]


async def test_negotiate_stateful_reconnect_only_when_asked_and_allowed(
    hub_server: Any, session: aiohttp.ClientSession
) -> None:
    asked = await negotiate(session, hub_server.base, query="negotiateVersion=1&useStatefulReconnect=true")
    assert asked["useStatefulReconnect"] is True
    unasked = await negotiate(session, hub_server.base)
    assert "useStatefulReconnect" not in unasked
    async with in_process() as server:  # allow_stateful_reconnect is off by default
        refused = await negotiate(session, server.base, query="negotiateVersion=1&useStatefulReconnect=true")
        assert "useStatefulReconnect" not in refused


async def test_unauthorized_is_401_with_empty_body(hub_server: Any, session: aiohttp.ClientSession) -> None:
    url = hub_server.url("/authhub/negotiate?negotiateVersion=1")
    for headers in ({}, {"Authorization": "Bearer nope"}):
        async with session.post(url, headers=headers) as response:
            assert response.status == 401
            assert await response.read() == b""
    async with session.post(url + "&access_token=nope") as response:
        assert response.status == 401
        assert await response.read() == b""
    async with session.post(url, headers={"Authorization": "Bearer token-alice"}) as response:
        assert response.status == 200
        token = (await response.json())["connectionToken"]
    # the connection URL checks the user too
    async with session.get(hub_server.url(f"/authhub?id={token}")) as response:
        assert response.status == 401
        assert await response.read() == b""
    async with session.get(hub_server.url(f"/authhub?id={token}&access_token=token-alice")) as response:
        assert response.status == 200


async def test_another_users_connection_is_403(hub_server: Any, session: aiohttp.ClientSession) -> None:
    """A connection negotiated by one user cannot be used with another user's token."""
    url = hub_server.url("/testhub/negotiate?negotiateVersion=1")
    async with session.post(url, headers={"Authorization": "Bearer token-alice"}) as response:
        token = (await response.json())["connectionToken"]
    for method in ("GET", "POST", "DELETE"):
        async with session.request(
            method, hub_server.url(f"/testhub?id={token}&access_token=token-mallory"), data=b""
        ) as response:
            assert response.status == 403, method
    async with session.get(hub_server.url(f"/testhub?id={token}")) as response:
        assert response.status == 403, "anonymous requests cannot use alice's connection either"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(hub_server.url(f"/testhub?id={token}&access_token=token-mallory"))
    assert refused.value.status == 403


async def test_unknown_connection_id_is_404(hub_server: Any, session: aiohttp.ClientSession) -> None:
    url = hub_server.url("/testhub?id=no-such-connection")
    for method in ("GET", "POST", "DELETE"):
        async with session.request(method, url, data=b"" if method == "POST" else None) as response:
            assert response.status == 404, method
            assert await response.text() == "No Connection with that ID"
    async with session.get(url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status == 404
        assert await response.text() == "No Connection with that ID"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(ws_url(hub_server.base, "/testhub", "no-such-connection"))
    assert info.value.status == 404


async def test_missing_connection_id_is_400(hub_server: Any, session: aiohttp.ClientSession) -> None:
    for method in ("GET", "POST", "DELETE"):
        async with session.request(method, hub_server.url("/testhub")) as response:
            assert response.status == 400, method
            assert await response.text() == "Connection ID required"


async def test_cannot_change_transports(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    async with session.get(hub_server.url(f"/testhub?id={token}")) as response:  # long polling starts
        assert response.status == 200
    async with session.get(hub_server.url(f"/testhub?id={token}"), headers={"Accept": "text/event-stream"}) as sse:
        assert sse.status == 400
        assert await sse.text() == "Cannot change transports mid-connection"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await session.ws_connect(ws_url(hub_server.base, "/testhub", token))
    assert info.value.status == 400
    async with session.delete(hub_server.url(f"/testhub?id={token}")) as response:
        assert response.status == 202


async def test_second_websocket_for_a_connection_is_409(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    async with session.ws_connect(ws_url(hub_server.base, "/testhub", token)) as ws:
        socket = HubSocket(ws, "json")
        assert await socket.handshake() == {}
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(ws_url(hub_server.base, "/testhub", token))
        assert info.value.status == 409
        # the first socket is untouched
        assert await socket.call("echo", "still here") == {"type": 3, "invocationId": "1", "result": "still here"}


async def test_post_and_delete_on_a_websocket_connection(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    async with session.ws_connect(ws_url(hub_server.base, "/testhub", token)) as ws:
        socket = HubSocket(ws, "json")
        assert await socket.handshake() == {}
        async with session.post(hub_server.url(f"/testhub?id={token}"), data=b'{"type":6}\x1e') as response:
            assert response.status == 405
            assert await response.text() == "POST requests are not allowed for WebSocket connections."
        async with session.delete(hub_server.url(f"/testhub?id={token}")) as response:
            assert response.status == 400
            assert await response.text() == "Cannot terminate this connection using the DELETE endpoint."
        assert await socket.call("add", 1, 2) == {"type": 3, "invocationId": "1", "result": 3}


# ================================================================================
# WebSockets
# ================================================================================


async def test_websocket_json_uses_text_frames(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base) as socket:
        assert socket.frames[0] == (WSMsgType.TEXT, b"{}\x1e")
        assert await socket.call("add", 2, 3, invocation_id="0") == {"type": 3, "invocationId": "0", "result": 5}
        assert await socket.call("do_nothing", invocation_id="1") == {"type": 3, "invocationId": "1"}
        assert await socket.call("echo", None, invocation_id="2") == {"type": 3, "invocationId": "2", "result": None}
        assert await socket.call("throw", invocation_id="3") == {
            "type": 3,
            "invocationId": "3",
            "error": "An unexpected error occurred invoking 'throw' on the server.",
        }
        await socket.invoke("send_to_caller", "Event", "payload")
        assert await socket.recv() == {"type": 1, "target": "Event", "arguments": ["payload"]}
        assert {kind for kind, _ in socket.frames} == {WSMsgType.TEXT}


@pytest.mark.parametrize("enabled", [False, True])
async def test_permessage_deflate_only_when_turned_on(session: aiohttp.ClientSession, enabled: bool) -> None:
    """aiohttp's client offers permessage-deflate; the server accepts it only with the option on."""
    async with in_process(websocket_compression=enabled) as server:
        token = (await negotiate(session, server.base, "/testhub"))["connectionToken"]
        async with session.ws_connect(ws_url(server.base, "/testhub", token), compress=15) as ws:
            assert bool(ws.compress) is enabled  # the window bits the server agreed to, or 0
            socket = HubSocket(ws, "json")
            assert await socket.handshake() == {}
            assert await socket.call("echo", "x" * 2000, invocation_id="0") == {
                "type": 3,
                "invocationId": "0",
                "result": "x" * 2000,
            }


async def test_websocket_messagepack_uses_binary_frames(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base, protocol="messagepack") as socket:
        # the handshake request went as Text; the answer comes in the connection's (Binary) frame type
        assert socket.frames[0] == (WSMsgType.BINARY, b"{}\x1e")
        assert await socket.call("add", 2, 3, invocation_id="0") == [3, {}, "0", 3, 5]
        assert await socket.call("do_nothing", invocation_id="1") == [3, {}, "1", 2]
        assert await socket.call("throw", invocation_id="2") == [
            3,
            {},
            "2",
            1,
            "An unexpected error occurred invoking 'throw' on the server.",
        ]
        assert await socket.call("get_bytes", invocation_id="3") == [3, {}, "3", 3, b"\x00\x01\x02\xff"]
        await socket.invoke("send_to_caller", "Event", "payload")
        assert await socket.recv() == [1, {}, None, "Event", ["payload"], []]
        # a 5-item invocation (no streamIds) from a client is fine
        await socket.send([1, {}, "4", "echo", ["five"]])
        assert await socket.recv() == [3, {}, "4", 3, "five"]
        assert {kind for kind, _ in socket.frames} == {WSMsgType.BINARY}


async def test_messagepack_ping_frame_bytes(session: aiohttp.ClientSession) -> None:
    async with (
        in_process(keep_alive_interval=1) as server,
        hub_socket(session, server.base, protocol="messagepack") as socket,
    ):
        assert await socket.recv(timeout=4, pings=True) == [6]
        assert socket.frames[-1] == (WSMsgType.BINARY, b"\x02\x91\x06")


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_handshake_split_across_frames(hub_server: Any, session: aiohttp.ClientSession, protocol: str) -> None:
    async with hub_socket(session, hub_server.base, protocol=protocol, do_handshake=False) as socket:
        request = handshake(protocol)
        await socket.ws.send_str(request[:10].decode())  # two frames: the server gets two messages
        await socket.ws.send_str(request[10:].decode())
        assert await socket.handshake_response() == {}
        expected = (
            [3, {}, "1", 3, "ok"] if protocol == "messagepack" else {"type": 3, "invocationId": "1", "result": "ok"}
        )
        assert await socket.call("echo", "ok") == expected


async def test_records_batched_in_one_frame_are_all_processed(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base, do_handshake=False) as socket:
        batch = handshake() + b"".join(
            json_record({"type": 1, "invocationId": str(i), "target": "add", "arguments": [i, 10]}) for i in range(3)
        )
        await socket.ws.send_str(batch.decode())
        assert await socket.handshake_response() == {}
        results = [await socket.recv() for _ in range(3)]
        assert results == [{"type": 3, "invocationId": str(i), "result": i + 10} for i in range(3)]


async def test_messagepack_records_batched_after_handshake(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base, protocol="messagepack") as socket:
        await socket.send_raw(b"".join(framed(pack([1, {}, str(i), "echo", [i], []])) for i in range(4)))
        assert [await socket.recv() for _ in range(4)] == [[3, {}, str(i), 3, i] for i in range(4)]


async def test_websocket_without_negotiation(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(ws_url(hub_server.base, "/testhub", None)) as ws:
        socket = HubSocket(ws, "json")
        assert await socket.handshake() == {}
        assert await socket.call("echo", "skip") == {"type": 3, "invocationId": "1", "result": "skip"}


async def test_websocket_query_names_are_case_insensitive(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    url = hub_server.base.replace("http://", "ws://") + f"/TestHub?ID={token}"
    async with session.ws_connect(url) as ws:
        socket = HubSocket(ws, "json")
        assert await socket.handshake() == {}
        assert await socket.call("add", 1, 1) == {"type": 3, "invocationId": "1", "result": 2}


async def test_a_stream_cancelled_in_its_own_frame_completes_and_frees_its_id(
    hub_server: Any, session: aiohttp.ClientSession
) -> None:
    """StreamInvocation then CancelInvocation in one frame: the method never runs, yet the
    caller gets its Completion and the id is free again (it used to leak, about 1 in 5)."""
    async with hub_socket(session, hub_server.base) as socket:
        for _ in range(40):
            stream = {"type": 4, "invocationId": "s1", "target": "counter", "arguments": [3, 0.01]}
            await socket.send(stream, {"type": 5, "invocationId": "s1"})
            while (record := await socket.recv())["type"] == 2:
                assert record["invocationId"] == "s1"
            assert record == {"type": 3, "invocationId": "s1"}, "a Completion without error, and the id is free"
        assert await socket.call("echo", "still serving") == {"type": 3, "invocationId": "1", "result": "still serving"}


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (handshake("x"), "The protocol 'x' is not supported."),
        (handshake("json", 3), "The server does not support version 3 of the 'json' protocol."),
        (handshake("messagepack", 3), "The server does not support version 3 of the 'messagepack' protocol."),
        (b'{"protocol":"json",}\x1e', "An unexpected error occurred during connection handshake."),
        (b'{"protocol":"json"}\x1e', "An unexpected error occurred during connection handshake."),
    ],
    ids=["unknown-protocol", "json-v3", "msgpack-v3", "invalid-json", "missing-version"],
)
async def test_handshake_errors(
    hub_server: Any, session: aiohttp.ClientSession, request_bytes: bytes, error: str
) -> None:
    async with hub_socket(session, hub_server.base, do_handshake=False) as socket:
        await socket.ws.send_str(request_bytes.decode())
        assert await socket.handshake_response() == {"error": error}
        await socket.wait_closed()
        assert socket.buffer == b""  # nothing after the error


#: A handshake record of 900 KB: far over the 32 KB receive limit, yet in one WebSocket frame.
OVERSIZED_HANDSHAKE = json_record({"protocol": "json", "version": 1, "pad": "x" * 900_000})


async def test_oversized_handshake_in_one_piece_is_refused(session: aiohttp.ClientSession) -> None:
    async with in_process() as server:
        async with hub_socket(session, server.base, do_handshake=False) as socket:
            await socket.send_raw(OVERSIZED_HANDSHAKE)
            assert await socket.handshake_response() == {"error": "Handshake was canceled."}
            await socket.wait_closed()
            assert socket.buffer == b""
        # long polling: the whole record in one POST body
        token = (await negotiate(session, server.base))["connectionToken"]
        url = f"{server.base}/testhub?id={token}"
        await (await session.get(url)).release()
        await (await session.post(url, data=OVERSIZED_HANDSHAKE)).release()
        async with session.get(url) as poll:
            assert json.loads((await poll.read()).rstrip(RS)) == {"error": "Handshake was canceled."}
        async with session.get(url) as poll:
            assert poll.status in (204, 404)
        # a handshake at the limit is still fine
        async with hub_socket(session, server.base, do_handshake=False) as socket:
            padding = 32 * 1024 - len(handshake()) - len(',"pad":""')
            await socket.send_raw(json_record({"protocol": "json", "version": 1, "pad": "x" * padding}))
            assert await socket.handshake_response() == {}


# ================================================================================
# Server-Sent Events
# ================================================================================


async def read_until(stream: aiohttp.StreamReader, size: int, timeout: float = 5) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while len(data) < size:
            chunk = await stream.readany()
            if not chunk:
                break
            data += chunk
    return data


async def read_events(stream: aiohttp.StreamReader, timeout: float = 5) -> bytes:
    """Read until the buffered text ends on an event boundary."""
    data = b""
    async with asyncio.timeout(timeout):
        while not data.endswith(b"\r\n\r\n"):
            chunk = await stream.readany()
            if not chunk:
                break
            data += chunk
    return data


async def test_server_sent_events(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    url = hub_server.url(f"/testhub?id={token}")
    async with session.get(url, headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache,no-store"
        assert stream.headers["Pragma"] == "no-cache"
        assert stream.headers["Content-Encoding"] == "identity"
        assert await read_until(stream.content, 3) == b":\r\n"

        async with session.post(url, data=handshake()) as response:
            assert response.status == 200
            assert await response.read() == b""
        assert await read_events(stream.content) == b"data: {}\x1e\r\n\r\n"

        invocation = json_record({"type": 1, "invocationId": "1", "target": "add", "arguments": [2, 3]})
        async with session.post(url, data=invocation) as response:
            assert response.status == 200
        event = await read_events(stream.content)
        assert event == b'data: {"type":3,"invocationId":"1","result":5}\x1e\r\n\r\n'

        # one POST may carry several records; a second stream for the connection is refused
        batch = b"".join(
            json_record({"type": 1, "invocationId": str(i), "target": "echo", "arguments": [i]}) for i in (2, 3)
        )
        async with session.post(url, data=batch) as response:
            assert response.status == 200
        events = b""
        while events.count(RS) < 2:
            events += await read_events(stream.content)
        assert re.fullmatch(rb"(data: [^\r\n]*\r\n\r\n)+", events)
        payload = b"".join(re.findall(rb"data: ([^\r\n]*)\r\n", events))
        assert split_json(bytearray(payload)) == [{"type": 3, "invocationId": str(i), "result": i} for i in (2, 3)]
        async with session.get(url, headers={"Accept": "text/event-stream"}) as second:
            assert second.status == 409


async def test_server_sent_events_refuse_messagepack(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    url = hub_server.url(f"/testhub?id={token}")
    async with session.get(url, headers={"Accept": "text/event-stream"}) as stream:
        assert await read_until(stream.content, 3) == b":\r\n"
        async with session.post(url, data=handshake("messagepack")) as response:
            assert response.status == 200
        event = await read_events(stream.content)
        error = (
            "Cannot use the 'messagepack' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format."
        )
        assert event == b"data: " + json_record({"error": error}) + b"\r\n\r\n"
        async with asyncio.timeout(5):
            assert await stream.content.read() == b""  # the stream ends


async def test_concurrent_posts_are_409(session: aiohttp.ClientSession) -> None:
    async with in_process() as server:
        token = (await negotiate(session, server.base))["connectionToken"]
        url = f"{server.base}/testhub?id={token}"
        async with session.get(url, headers={"Accept": "text/event-stream"}) as stream:
            assert await read_until(stream.content, 3) == b":\r\n"
            release = asyncio.Event()
            request = handshake()

            async def slow_body() -> AsyncIterator[bytes]:
                yield request[:5]
                await release.wait()
                yield request[5:]

            first = asyncio.ensure_future(session.post(url, data=slow_body()))
            connection = server_side(server, token)
            reading = await eventually(lambda: connection.posted is not None and connection.posted.in_progress, 5)
            assert reading, "the server is reading the first body"
            async with session.post(url, data=b'{"type":6}\x1e') as second:
                assert second.status == 409
            release.set()
            response = await first
            assert response.status == 200
            response.release()
            assert await read_events(stream.content) == b"data: {}\x1e\r\n\r\n"


# ================================================================================
# Long polling
# ================================================================================


async def test_long_polling(session: aiohttp.ClientSession) -> None:
    async with in_process() as server:
        await _long_polling(session, server)


async def _long_polling(session: aiohttp.ClientSession, server: InProcess) -> None:
    token = (await negotiate(session, server.base))["connectionToken"]
    url = f"{server.base}/testhub?id={token}"
    connection = server_side(server, token)

    started = time.monotonic()
    async with session.get(url + "&_=1") as first:
        assert first.status == 200
        assert first.headers["Content-Length"] == "0"
        assert await first.read() == b""
    assert time.monotonic() - started < 2  # returned at once

    async with session.post(url, data=handshake()) as response:
        assert response.status == 200
    async with session.get(url + "&_=2") as poll:
        assert poll.status == 200
        assert poll.content_type == "application/octet-stream"
        assert await poll.read() == b"{}\x1e"

    async with session.post(
        url, data=json_record({"type": 1, "invocationId": "1", "target": "add", "arguments": [4, 5]})
    ) as response:
        assert response.status == 200
    async with session.get(url + "&_=3") as poll:
        assert poll.status == 200
        assert poll.content_type == "application/octet-stream"
        assert json.loads((await poll.read()).rstrip(RS)) == {"type": 3, "invocationId": "1", "result": 9}

    # a poll that waits is answered by what arrives later
    waiting = asyncio.ensure_future(session.get(url + "&_=4"))
    assert await eventually(lambda: connection.active, timeout=5), "the poll is waiting on the server"
    await (
        await session.post(url, data=json_record({"type": 1, "target": "send_to_caller", "arguments": ["E", 1]}))
    ).release()
    async with await waiting as poll:
        assert poll.status == 200
        assert split_json(bytearray(await poll.read())) == [{"type": 1, "target": "E", "arguments": [1]}]

    # a newer poll ends the older with 204
    older = asyncio.ensure_future(session.get(url + "&_=5"))
    assert await eventually(lambda: connection.active, timeout=5), "the older poll is waiting on the server"
    newer = asyncio.ensure_future(session.get(url + "&_=6"))
    async with await older as response:
        assert response.status == 204
    assert not newer.done()

    # DELETE ends the connection: 202, and the outstanding poll gets 204
    async with session.delete(url) as response:
        assert response.status == 202
    async with await newer as response:
        assert response.status == 204
    async with session.get(url + "&_=7") as response:
        assert response.status in (204, 404)


async def test_a_long_poll_with_nothing_to_send_ends_empty_and_the_next_one_works(
    session: aiohttp.ClientSession,
) -> None:
    async with in_process(long_poll_timeout=0.2) as server:
        token = (await negotiate(session, server.base))["connectionToken"]
        url = f"{server.base}/testhub?ID={token}"  # the query name in any case
        connection = server_side(server, token)
        async with session.get(url + "&_=1") as first:
            assert first.status == 200
        await (await session.post(url, data=handshake())).release()
        async with session.get(url + "&_=2") as poll:
            assert await poll.read() == b"{}\x1e"
        async with session.get(url + "&_=3") as idle:  # nothing comes: answered when the timeout ends
            assert idle.status == 200
            assert await idle.read() == b""
        assert not connection.active and not connection.disposed
        waiting = asyncio.ensure_future(session.get(url + "&_=4"))
        assert await eventually(lambda: connection.active, timeout=5), "the next poll is waiting"
        await (
            await session.post(url, data=json_record({"type": 1, "target": "send_to_caller", "arguments": ["E", 1]}))
        ).release()
        async with await waiting as poll:
            assert split_json(bytearray(await poll.read())) == [{"type": 1, "target": "E", "arguments": [1]}]


async def test_long_polling_messagepack(hub_server: Any, session: aiohttp.ClientSession) -> None:
    token = (await negotiate(session, hub_server.base))["connectionToken"]
    url = hub_server.url(f"/testhub?id={token}")
    await (await session.get(url)).release()
    await (await session.post(url, data=handshake("messagepack"))).release()
    async with session.get(url) as poll:
        assert await poll.read() == b"{}\x1e"
    await (await session.post(url, data=framed(pack([1, {}, "1", "echo", [b"\x01\x02"], []])))).release()
    async with session.get(url) as poll:
        assert poll.content_type == "application/octet-stream"
        assert split_msgpack(bytearray(await poll.read())) == [[3, {}, "1", 3, b"\x01\x02"]]
    await (await session.delete(url)).release()


# ================================================================================
# keep-alive, timeouts, limits, errors
# ================================================================================


async def test_keep_alive_ping_when_idle(session: aiohttp.ClientSession) -> None:
    async with in_process(keep_alive_interval=1) as server, hub_socket(session, server.base) as socket:
        started = time.monotonic()
        assert await socket.recv(timeout=4, pings=True) == {"type": 6}
        assert time.monotonic() - started < 3.5
        assert socket.frames[-1] == (WSMsgType.TEXT, b'{"type":6}\x1e')


async def test_message_over_max_size_closes_with_error(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base) as victim, hub_socket(session, hub_server.base) as other:
        await victim.invoke("echo", "x" * 40_000, invocation_id="1")  # over the default 32 KB
        assert await victim.recv() == {"type": 7, "error": CLOSED_WITH_ERROR}
        assert await victim.wait_closed() == 1011
        assert await other.call("echo", "fine") == {"type": 3, "invocationId": "1", "result": "fine"}


async def test_small_max_message_size(session: aiohttp.ClientSession) -> None:
    async with (
        in_process(max_message_size=1024) as server,
        hub_socket(session, server.base, protocol="messagepack") as socket,
    ):
        assert await socket.call("echo", "y" * 900) == [3, {}, "1", 3, "y" * 900]
        await socket.invoke("echo", "y" * 1100, invocation_id="2")
        assert await socket.recv() == [7, CLOSED_WITH_ERROR, False]
        assert await socket.wait_closed() == 1011


@pytest.mark.parametrize("protocol", ["json", "messagepack"])
async def test_malformed_message_closes_only_that_connection(
    hub_server: Any, session: aiohttp.ClientSession, protocol: str
) -> None:
    async with (
        hub_socket(session, hub_server.base, protocol=protocol) as bad,
        hub_socket(session, hub_server.base) as good,
    ):
        await bad.send_raw(b"{this is not json}\x1e" if protocol == "json" else framed(b"\xc1"))
        expected = {"type": 7, "error": CLOSED_WITH_ERROR} if protocol == "json" else [7, CLOSED_WITH_ERROR, False]
        assert await bad.recv() == expected
        assert await bad.wait_closed() == 1011
        assert await good.call("add", 20, 22) == {"type": 3, "invocationId": "1", "result": 42}


#: MessagePack the unpacker itself chokes on (not a malformed hub message): these once
#: escaped the protocol as TypeError and OverflowError and ended the connection silently.
UNPACKABLE = {
    "array-keyed-map": framed(pack([1, {}, "1", "echo", [{(1,): 2}]])),
    "timestamp-past-9999": framed(pack([1, {}, "1", "echo", [TIMESTAMP_PAST_9999]])),
}


async def send_over_long_polling(session: aiohttp.ClientSession, base: str, payload: bytes) -> list[Any]:
    """Handshake as MessagePack over long polling, POST `payload`, return what the next poll brings."""
    token = (await negotiate(session, base))["connectionToken"]
    url = f"{base}/testhub?id={token}"
    await (await session.get(url)).release()
    await (await session.post(url, data=handshake("messagepack"))).release()
    async with session.get(url) as poll:
        assert await poll.read() == b"{}\x1e"
    async with session.post(url, data=payload) as response:
        assert response.status == 200
    async with session.get(url) as poll:
        assert poll.status == 200
        records = split_msgpack(bytearray(await poll.read()))
    async with session.get(url) as poll:
        assert poll.status in (204, 404), "polling ends after the Close message"
    return records


@pytest.mark.parametrize("payload", UNPACKABLE.values(), ids=UNPACKABLE.keys())
@pytest.mark.parametrize("transport", ["WebSockets", "LongPolling"])
async def test_unpackable_messagepack_closes_with_an_error_and_no_traceback(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, transport: str, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    async with in_process() as server:
        if transport == "WebSockets":
            async with hub_socket(session, server.base, protocol="messagepack") as socket:
                await socket.send_raw(payload)
                assert await socket.recv() == [7, CLOSED_WITH_ERROR, False]
                assert await socket.wait_closed() == 1011
        else:
            assert await send_over_long_polling(session, server.base, payload) == [[7, CLOSED_WITH_ERROR, False]]
        async with hub_socket(session, server.base) as other:
            assert await other.call("echo", "alive") == {"type": 3, "invocationId": "1", "result": "alive"}
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_client_close_message_ends_the_connection(hub_server: Any, session: aiohttp.ClientSession) -> None:
    async with hub_socket(session, hub_server.base) as socket:
        await socket.send({"type": 7})
        assert await socket.wait_closed() == 1000


# ================================================================================
# CORS
# ================================================================================


async def test_cors_preflight(hub_server: Any, session: aiohttp.ClientSession) -> None:
    origin = "http://example.test:8080"
    request_headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-requested-with,x-signalr-user-agent,authorization,content-type",
    }
    for path in ("/testhub/negotiate?negotiateVersion=1", "/testhub?id=x"):
        async with session.options(hub_server.url(path), headers=request_headers) as response:
            assert response.status in (200, 204)
            assert response.headers["Access-Control-Allow-Origin"] == origin
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"x-requested-with", "x-signalr-user-agent", "authorization", "content-type"} <= allowed
            methods = {m.strip().upper() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
            assert {"GET", "POST", "DELETE"} <= methods
    async with session.post(hub_server.url("/testhub/negotiate?negotiateVersion=1"), headers={"Origin": origin}) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == origin
        assert r.headers["Access-Control-Allow-Credentials"] == "true"


def test_cors_wildcard_with_credentials_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match=r"does not allow specifying a wildcard \(any\) origin and credentials"):
        HubOptions(cors_origins=("*",))
    with pytest.raises(ValueError, match=r"does not allow specifying a wildcard"):  # raw connections too
        ConnectionOptions(cors_origins=("https://a.example", "*"))


async def test_cors_only_for_listed_origins(session: aiohttp.ClientSession) -> None:
    async with in_process(cors_origins=("http://good.test",)) as server:
        for origin, granted in (("http://good.test", True), ("http://evil.test", False)):
            async with session.post(f"{server.base}/testhub/negotiate", headers={"Origin": origin}) as r:
                assert r.headers.get("Access-Control-Allow-Origin") == (origin if granted else None)


async def test_cors_not_granted_without_configuration(session: aiohttp.ClientSession) -> None:
    async with in_process() as server:
        headers = {"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"}
        async with session.options(f"{server.base}/testhub/negotiate", headers=headers) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with session.post(f"{server.base}/testhub/negotiate", headers={"Origin": "http://evil.test"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


# ================================================================================
# lifetime: abandoned connections, shutdown, slow clients
# ================================================================================


async def test_graceful_shutdown(session: aiohttp.ClientSession) -> None:
    async with (
        in_process() as server,
        hub_socket(session, server.base) as text,
        hub_socket(session, server.base, protocol="messagepack") as binary,
    ):
        closing = asyncio.ensure_future(server.server.close())  # runs the app's on_shutdown
        assert await text.recv() == {"type": 7, "allowReconnect": True}
        assert await binary.recv() == [7, None, True]
        assert await text.wait_closed() == 1001
        assert await binary.wait_closed() == 1001
        await asyncio.wait_for(closing, 10)


@asynccontextmanager
async def blast_past_a_slow_client(session: aiohttp.ClientSession, server: InProcess) -> AsyncIterator[str]:
    """A fast and a never-reading client; the fast one receives a big broadcast in time.

    Yields the slow client's connection id while both sockets are still open.
    """
    async with hub_socket(session, server.base) as slow, hub_socket(session, server.base) as fast:
        slow_id: str = (await slow.call("get_connection_id"))["result"]
        # from now on `slow` never reads: its socket buffers fill up
        count, size = 300, 32 * 1024
        started = time.monotonic()
        await fast.invoke("blast", count, size, invocation_id="9")
        seen = 0
        while True:
            record = await fast.recv(timeout=10)
            if record["type"] == 3:
                break
            assert record["target"] == "Blast" and record["arguments"][0] == seen
            seen += 1
        assert record == {"type": 3, "invocationId": "9", "result": count}
        assert seen == count
        assert time.monotonic() - started < 10
        yield slow_id


async def test_slow_client_does_not_stall_others(session: aiohttp.ClientSession) -> None:
    async with in_process(max_buffer_size=256 * 1024) as server, blast_past_a_slow_client(session, server):
        pass


async def test_records_queued_in_one_turn_leave_in_one_frame(session: aiohttp.ClientSession) -> None:
    async with in_process() as server, hub_socket(session, server.base) as socket:
        before = len(socket.frames)
        await socket.invoke("burst", 5, invocation_id="1")
        frame = await socket.frame()
        events = [{"type": 1, "target": "Burst", "arguments": [i]} for i in range(5)]
        assert split_json(bytearray(frame)) == [*events, {"type": 3, "invocationId": "1", "result": 5}]
        assert len(socket.frames) == before + 1


async def test_a_burst_of_invocations_that_do_not_wait_shares_one_frame(session: aiohttp.ClientSession) -> None:
    """Invocations queued behind each other (one at a time, the default) run back to back in
    one loop turn when none of them waits, so their Completions leave together."""
    async with in_process() as server, hub_socket(session, server.base) as socket:
        before = len(socket.frames)
        calls = [{"type": 1, "invocationId": str(i), "target": "echo", "arguments": [i]} for i in range(10)]
        await socket.send(*calls)
        frame = await socket.frame()
        assert split_json(bytearray(frame)) == [{"type": 3, "invocationId": str(i), "result": i} for i in range(10)]
        assert len(socket.frames) == before + 1


async def test_a_client_that_pauses_reading_gets_everything_in_order(session: aiohttp.ClientSession) -> None:
    """Writes that wait for the peer to read keep their order, and later records queue behind them."""
    async with in_process(max_buffer_size=16 * 1024 * 1024) as server, hub_socket(session, server.base) as socket:
        count, size = 300, 32 * 1024  # 9.6 MB: more than the kernel's socket buffers hold
        token = next(iter(server.endpoint.connections)).token
        await socket.invoke("blast", count, size, invocation_id="1")
        # not reading: the server's socket buffer fills and its writes have to wait
        transport = server_side(server, token).transport
        assert isinstance(transport, WebSocketTransport)
        assert await eventually(lambda: transport._writing is not None, timeout=10)
        for expected in range(count):
            record = await socket.recv(timeout=10)
            assert record["type"] == 1 and record["target"] == "Blast"
            assert record["arguments"] == [expected, "x" * size]
        assert await socket.recv(timeout=10) == {"type": 3, "invocationId": "1", "result": count}
        assert await socket.call("echo", "after", invocation_id="2") == {
            "type": 3,
            "invocationId": "2",
            "result": "after",
        }


async def test_dropped_slow_client_is_fully_disconnected(session: aiohttp.ClientSession) -> None:
    async with in_process(max_buffer_size=256 * 1024) as server:
        lifetime = server.endpoint.lifetime
        assert isinstance(lifetime, InMemoryHubLifetimeManager)
        async with blast_past_a_slow_client(session, server) as slow_id:
            # Past max_buffer_size the server dropped the client; the connection must end for good
            # (on_disconnected runs, the lifetime forgets it) although the peer never reads again.
            assert await eventually(lambda: slow_id not in lifetime.connections, timeout=5)


async def test_a_closed_connection_is_freed_by_reference_counting(session: aiohttp.ClientSession) -> None:
    """With the cycle collector off, a connection that ends leaves nothing behind: no
    reference cycle keeps it (or its hub context) waiting for a collection."""
    gc.collect()
    gc.disable()
    try:
        async with in_process() as server:
            references: list[weakref.ref[Any]] = []
            for protocol in ("json", "messagepack"):
                async with hub_socket(session, server.base, protocol=protocol) as socket:
                    connection = next(iter(server.endpoint.connections))
                    assert connection.application is not None
                    references += [weakref.ref(connection), weakref.ref(connection.application)]
                    del connection
                    await socket.call("echo", "x")
                    await socket.send(
                        {"type": 4, "invocationId": "s", "target": "counter", "arguments": [2]}
                        if protocol == "json"
                        else [4, {}, "s", "counter", [2], []]
                    )
                    await socket.recv()
                    await socket.recv()
                    await socket.recv()
            # SSE and long polling, through a POSTed handshake and an invocation
            for accept in ("text/event-stream", None):
                token = (await negotiate(session, server.base))["connectionToken"]
                url = f"{server.base}/testhub?id={token}"
                headers = {"Accept": accept} if accept else {}
                if accept:
                    stream = await session.get(url, headers=headers)
                else:
                    await (await session.get(url)).release()
                await (await session.post(url, data=handshake())).release()
                await (
                    await session.post(url, data=json_record({"type": 1, "target": "echo", "arguments": [1]}))
                ).release()
                connection = server_side(server, token)
                references += [weakref.ref(connection), weakref.ref(connection.application)]
                del connection
                await (await session.delete(url)).release() if not accept else stream.close()
            assert await eventually(
                lambda: not server.endpoint.connections and not server.endpoint.lifetime.connections, 5
            )
            assert await eventually(lambda: all(reference() is None for reference in references), 5), [
                type(r()).__name__ for r in references if r() is not None
            ]
    finally:
        gc.enable()


async def test_cancelled_streams_leave_nothing_behind_on_a_live_connection(session: aiohttp.ClientSession) -> None:
    """StreamInvocation + CancelInvocation pairs (cancelled before and after they start) with the
    cycle collector off: the objects the server keeps do not grow with the number of pairs."""
    async with in_process() as server, hub_socket(session, server.base) as socket:

        async def pairs(count: int) -> None:
            for i in range(count):
                stream = {"type": 4, "invocationId": f"s{i}", "target": "counter", "arguments": [1000]}
                await socket.send(stream, {"type": 5, "invocationId": f"s{i}"})
                while (await socket.recv())["type"] != 3:
                    pass
                socket.frames.clear()  # the test's own record of frames must not count

        await pairs(50)  # warm up: caches, first-use state
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            await pairs(400)
            grown = len(gc.get_objects()) - before
        finally:
            gc.enable()
        assert grown < 400, f"{grown} objects kept after 400 cancelled streams"


async def test_a_flood_of_invocations_stops_the_reading_instead_of_growing_the_queue(
    session: aiohttp.ClientSession,
) -> None:
    """With the one invocation slot busy, a client that keeps invoking is not read any
    further once a few invocations wait (ASP.NET Core stops reading too): the queue stays
    bounded, and once the slot frees every invocation is answered, in order."""
    HELD.clear()
    count, payload = 20_000, "x" * 1000  # 20 MB: far more than the socket buffers between us
    async with (
        in_process(max_buffer_size=64 * 1024 * 1024, max_message_size=None) as server,
        hub_socket(session, server.base) as socket,
    ):
        await socket.invoke("hold", invocation_id="held")
        connection = next(iter(server.endpoint.connections))
        application = connection.application
        assert isinstance(application, HubConnectionContext)
        queue = application.invocations
        transport = connection.transport
        assert isinstance(transport, WebSocketTransport) and transport.request.transport is not None
        socket_reader = transport.request.transport

        async def flood() -> None:
            for start in range(0, count, 100):
                batch = [
                    {"type": 1, "invocationId": str(i), "target": "echo", "arguments": [payload]}
                    for i in range(start, start + 100)
                ]
                await socket.send(*batch)

        sending = asyncio.ensure_future(flood())
        try:
            assert await eventually(lambda: not socket_reader.is_reading(), timeout=20), "the server stopped reading"
            assert queue._waiting is not None
            # a few reads' worth waits, not the flood: within the budget and one record past it
            assert 0 < queue._waiting_cost < WAITING_BUDGET + len(payload) + 100 + JOB_OVERHEAD
            assert not sending.done(), "the client is held back by the unread socket"
        finally:
            HELD.set()
        results = [await socket.recv(timeout=20) for _ in range(count + 1)]
        await sending
        assert results[0] == {"type": 3, "invocationId": "held", "result": "released"}
        assert [r["invocationId"] for r in results[1:]] == [str(i) for i in range(count)]
        assert all(r["result"] == payload for r in results[1:])


async def test_a_burst_of_group_sends_reaches_each_member_in_one_frame(session: aiohttp.ClientSession) -> None:
    """A client that sends many invocations at once, each in a WebSocket frame of its own as
    the stock client does, interleaved over several groups: the burst is queued whole and run
    in one loop turn, so what it sends to each member leaves in one frame, not one per send."""
    groups, rounds = 20, 4
    async with (
        in_process() as server,
        hub_socket(session, server.base) as sender,
        contextlib.AsyncExitStack() as stack,
    ):
        members = [await stack.enter_async_context(hub_socket(session, server.base)) for _ in range(groups)]
        for index, member in enumerate(members):
            assert (await member.call("join_group", f"g{index}"))["type"] == 3
            member.frames.clear()
        records = [
            {"type": 1, "target": "send_to_group", "arguments": [f"g{g}", r]}
            for r in range(rounds)
            for g in range(groups)
        ]
        # one write holding one frame per invocation, so the server reads them together
        sender.ws._writer.transport.write(b"".join(client_frame(json_record(r), 0x1) for r in records))
        for member in members:
            received = [await member.recv() for _ in range(rounds)]
            assert [r["arguments"] for r in received] == [[r] for r in range(rounds)]
            assert len(member.frames) == 1, f"{len(member.frames)} frames for {rounds} sends"


async def test_a_slow_reader_slows_its_sender_down_and_loses_nothing(session: aiohttp.ClientSession) -> None:
    """A reply far bigger than the outbox bound to a client that is not reading: the hub
    method waits for room instead of the client being dropped, and everything arrives."""
    count, size = 1000, 16 * 1024  # 16 MB: more than the socket buffers between us hold
    async with in_process(max_buffer_size=64 * 1024) as server, hub_socket(session, server.base) as socket:
        connection = next(iter(server.endpoint.connections))
        await socket.invoke("send_many", count, size, invocation_id="1")
        assert await eventually(lambda: connection._room is not None, timeout=10), "the sender waits for room"
        assert not connection.disposed
        for expected in range(count):
            record = await socket.recv(timeout=10)
            assert record["target"] == "Chunk" and record["arguments"] == [expected, "y" * size]
        assert await socket.recv(timeout=10) == {"type": 3, "invocationId": "1", "result": count}


async def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(session: aiohttp.ClientSession) -> None:
    async with in_process(max_buffer_size=64 * 1024, send_timeout=0.3) as server:
        async with hub_socket(session, server.base) as socket:
            connection = next(iter(server.endpoint.connections))
            await socket.invoke("send_many", 1000, 16 * 1024, invocation_id="1")
            assert await eventually(lambda: connection.disposed, timeout=10), "dropped as a slow client"
        async with hub_socket(session, server.base) as other:
            assert await other.call("echo", "others are served") == {
                "type": 3,
                "invocationId": "1",
                "result": "others are served",
            }
