"""The Azure SignalR Service double (tests/support/azure_service.py) against scripted peers.

The app-server tests trust the double to behave as ASRS does, so the double gets tests of its
own: a fake app server written here from the codec (`signalr.azure.wire`) over aiohttp's client
WebSocket, and raw client WebSockets speaking the JSON/MessagePack hub protocol by hand. Waits
are on conditions, never fixed sleeps; everything is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import jwt
import msgpack
import pytest
from aiohttp import WSMsgType

from signalr_chat.signalr.azure import wire
from tests.support.azure_service import NO_SERVER_ERROR, SERVERLESS_ERROR, ServiceDouble, claim_pairs
from tests.support.conditions import until

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"  # 44 characters, like an ASRS key
HUB = "chat"
M = TypeVar("M")


def make_token(audience: str, *, key: str = KEY, algorithm: str = "HS256", lifetime: int = 3600, **claims: Any) -> str:
    now = int(time.time())
    payload = {**claims, "nbf": now, "exp": now + lifetime, "iat": now, "aud": audience}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The HMAC key is")  # PyJWT 2.10+ warns of short keys
        return jwt.encode(payload, key.encode("utf-8"), algorithm=algorithm, headers={"kid": "-1234"})


def server_token(hub: str = HUB, **kwargs: Any) -> str:
    return make_token(f"http://127.0.0.1/server/?hub={hub}", nameid="fake", **kwargs)


def client_token(hub: str = HUB, **claims: Any) -> str:
    return make_token(f"http://127.0.0.1/client/?hub={hub}", **claims)


def json_record(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\x1e"


def msgpack_record(items: list[Any]) -> bytes:
    body: bytes = msgpack.packb(items)
    return wire.varint(len(body)) + body


def invocation_payloads(target: str, *args: Any) -> dict[str, bytes]:
    """The payload map an app server sends: the message framed in every hub protocol."""
    return {
        "json": json_record({"type": 1, "target": target, "arguments": list(args)}),
        "messagepack": msgpack_record([1, {}, None, target, list(args), []]),
    }


class FakeServer:
    """A scripted app server: one service-protocol WebSocket, every message it receives kept."""

    def __init__(self, session: aiohttp.ClientSession, double: ServiceDouble, server_id: str, hub: str = HUB) -> None:
        self.session = session
        self.double = double
        self.server_id = server_id
        self.hub = hub
        self.received: list[wire.ServiceMessage] = []
        self._taken: set[int] = set()
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, *, migration_level: int = 0, split: bool = False, expect_ok: bool = True) -> None:
        url = f"{self.double.url}/server/?hub={self.hub}&cid={uuid.uuid4()}"
        headers = {"Authorization": f"Bearer {server_token(self.hub)}", "X-ASRS-Server-Id": self.server_id}
        self.ws = await self.session.ws_connect(url, headers=headers)
        self._task = asyncio.create_task(self._read())
        data = wire.frame(wire.HandshakeRequest(1, migration_level=migration_level))
        if split:  # a frame may span WebSocket messages
            for i in range(len(data)):
                await self.ws.send_bytes(data[i : i + 1])
        else:
            await self.ws.send_bytes(data)
        if expect_ok:
            response = await self.next(wire.HandshakeResponse)
            assert not response.error_message

    async def _read(self) -> None:
        reader = wire.FrameReader()
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                self.received.extend(reader.feed(msg.data))
        self.closed.set()

    async def send(self, *messages: wire.ServiceMessage) -> None:
        """Whole frames in one WebSocket message, as the SDK flushes its pipe."""
        await self.ws.send_bytes(b"".join(wire.frame(m) for m in messages))

    async def next(self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 5.0) -> M:
        """The first message of that type (and condition) not returned before."""
        found: list[M] = []

        def check() -> bool:
            for i, message in enumerate(self.received):
                if i not in self._taken and isinstance(message, kind) and (where is None or where(message)):
                    self._taken.add(i)
                    found.append(message)
                    return True
            return False

        await until(check, f"{kind.__name__} at {self.server_id}", timeout)
        return found[0]

    def all(self, kind: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, kind)]

    async def accept(self) -> str:
        """Take the next client: OpenConnection, its handshake ConnectionData, answer `{}`."""
        opened = await self.next(wire.OpenConnection)
        await self.next(wire.ConnectionData, lambda m: m.connection_id == opened.connection_id)
        await self.send(wire.ConnectionData(opened.connection_id, b"{}\x1e"))
        return opened.connection_id

    async def close(self) -> None:
        await self.ws.close()
        if self._task is not None:
            await self._task


class RawClient:
    """A client WebSocket after the negotiate redirect, speaking the hub protocol by hand."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, connection_id: str, protocol: str) -> None:
        self.ws = ws
        self.connection_id = connection_id
        self.protocol = protocol
        self.frames: list[tuple[WSMsgType, bytes]] = []
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        double: ServiceDouble,
        *,
        hub: str = HUB,
        protocol: str = "json",
        claims: dict[str, Any] | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        handshake: bool = True,
    ) -> RawClient:
        token = client_token(hub, **(claims or {}))
        negotiate = f"{double.url}/client/negotiate?hub={hub}{query}&negotiateVersion=1"
        async with session.post(negotiate, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
            document = await response.json()
        url = f"{double.url}/client/?hub={hub}{query}&id={document['connectionToken']}&access_token={token}"
        ws = await session.ws_connect(url, headers=headers)
        client = cls(ws, document["connectionId"], protocol)
        if handshake:
            await ws.send_str(json.dumps({"protocol": protocol, "version": 1}, separators=(",", ":")) + "\x1e")
        return client

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                self.frames.append((msg.type, msg.data.encode()))
            elif msg.type == WSMsgType.BINARY:
                self.frames.append((msg.type, msg.data))
        self.closed.set()

    def payloads(self) -> list[bytes]:
        return [data for _, data in self.frames]

    async def wait_for(self, count: int) -> None:
        await until(lambda: len(self.frames) >= count, f"{count} frames at client {self.connection_id}", 5)


@pytest.fixture
async def double() -> AsyncIterator[ServiceDouble]:
    service = ServiceDouble(KEY, ping_interval=0.2)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


# -- server connections: tokens, handshake, pings ------------------------------------------------
@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda port: server_token(key="another key that is not the connection string's"), "wrong key"),
        (lambda port: make_token("http://127.0.0.1/server/?hub=other"), "another hub's audience"),
        (lambda port: make_token("http://127.0.0.1/client/?hub=chat"), "a client audience"),
        (lambda port: make_token(f"http://127.0.0.1:{port}/server/?hub=chat"), "the port in the audience"),
        (lambda port: server_token(lifetime=-60), "expired"),
        (lambda port: None, "no token"),
    ],
)
async def test_server_token_refused(
    double: ServiceDouble, session: aiohttp.ClientSession, make: Callable[[int], str | None], why: str
) -> None:
    token = make(double.port)
    headers = {"X-ASRS-Server-Id": "s1"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{double.url}/server/?hub={HUB}&cid=1", headers=headers)
    assert refused.value.status == 401, why
    assert double.refusals


async def test_handshake_pings_and_records(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect(split=True)  # the handshake frame one byte per WebSocket message
    await double.wait_for_servers(HUB, 1, timeout=2)
    await server.next(wire.Ping, lambda p: p.messages == ())  # the service's keep-alive
    before = double.last_received("s1")
    await server.send(wire.keepalive_ping(0, 0), wire.status_ping())  # two frames in one message
    await until(lambda: double.message_types("s1") == ["HandshakeRequest", "Ping", "Ping"], "pings recorded")
    after = double.last_received("s1")
    assert before is not None and after is not None and after >= before
    state = double.state()
    assert state["hubs"][HUB]["servers"]["s1"] == {"connections": 1, "going_away": False, "clients": 0}
    assert state["received"]["s1"] == {"HandshakeRequest": 1, "Ping": 2}


async def test_hs512_token_and_second_connection(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    key512 = KEY + KEY  # HS512 wants 64 bytes of key to keep PyJWT quiet; the double takes any
    service = ServiceDouble(key512, ping_interval=0)
    await service.start()
    sockets = []  # kept referenced: a dropped ClientWebSocketResponse may be closed when collected
    try:
        for _ in range(2):
            ws = await session.ws_connect(
                f"{service.url}/server/?hub={HUB}&cid={uuid.uuid4()}",
                headers={
                    "Authorization": f"Bearer {server_token(key=key512, algorithm='HS512')}",
                    "X-ASRS-Server-Id": "s512",
                },
            )
            sockets.append(ws)
            await ws.send_bytes(wire.frame(wire.HandshakeRequest(1)))
            reply = wire.FrameReader().feed((await ws.receive()).data)
            assert reply == [wire.HandshakeResponse("", None)]
        await service.wait_for_servers(HUB, 1, connections=2, timeout=2)
    finally:
        await service.stop()


async def test_serverless_refuses_server_connections(session: aiohttp.ClientSession) -> None:
    service = ServiceDouble(KEY, serverless=True)
    await service.start()
    try:
        server = FakeServer(session, service, "s1")
        await server.connect(expect_ok=False)
        response = await server.next(wire.HandshakeResponse)
        assert response.error_message == SERVERLESS_ERROR
        await asyncio.wait_for(server.closed.wait(), 5)
        assert service.server_ids(HUB) == []
    finally:
        await service.stop()


async def test_first_message_must_be_a_handshake(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    server.ws = await session.ws_connect(
        f"{double.url}/server/?hub={HUB}&cid=x",
        headers={"Authorization": f"Bearer {server_token()}", "X-ASRS-Server-Id": "s1"},
    )
    server._task = asyncio.create_task(server._read())
    await server.send(wire.KEEPALIVE_PING)
    await asyncio.wait_for(server.closed.wait(), 5)
    assert "not HandshakeRequest" in double.protocol_errors[0]


# -- clients: negotiate, OpenConnection, data both ways ------------------------------------------
async def test_negotiate_document_and_refusals(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    url = f"{double.url}/client/negotiate?hub={HUB}&negotiateVersion=1"
    async with session.post(url, headers={"Authorization": f"Bearer {client_token()}"}) as response:
        assert response.status == 200
        document = await response.json()
    assert document["negotiateVersion"] == 1
    assert document["connectionId"] and document["connectionToken"]
    assert document["availableTransports"] == [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
    for bad in (
        client_token(hub="other"),
        make_token(f"http://127.0.0.1:{double.port}/client/?hub={HUB}"),
        client_token(key="not the key at all, not the key at all"),
        server_token(),
    ):
        async with session.post(url, headers={"Authorization": f"Bearer {bad}"}) as response:
            assert response.status == 401
            assert await response.read() == b""
    ws_url = f"{double.url}/client/?hub={HUB}&id=unknown&access_token={client_token()}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url)
    assert refused.value.status == 404


async def test_open_connection_and_data_both_ways(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    claims = {"asrs.s.uid": "alice", "role": ["admin", "user"], "name": "Alice"}
    client = await RawClient.connect(
        session, double, claims=claims, query="&asrs_request_id=abc", headers={"X-Test": "yes"}, handshake=False
    )
    # the handshake and a first invocation in one WebSocket message, the handshake split
    invocation = json_record({"type": 1, "target": "Send", "arguments": ["hi"]})
    await client.ws.send_str('{"protocol":"json",')
    await client.ws.send_str('"version":1}\x1e' + invocation.decode())
    opened = await server.next(wire.OpenConnection)
    assert opened.connection_id == client.connection_id
    assert opened.protocol == "json"
    assert dict(opened.claims).get("asrs.s.uid") == "alice"
    assert [v for k, v in opened.claims if k == "role"] == ["admin", "user"]
    assert not {"aud", "exp", "iat", "nbf"} & {k for k, _ in opened.claims}
    assert wire.find_header(opened.headers, "x-test") == ("yes",)
    assert wire.find_header(opened.headers, "Asrs-Instance-Id") == (double.instance_id,)
    assert opened.query_string is not None and "access_token" not in opened.query_string
    assert opened.query_string.startswith(f"hub={HUB}&asrs_request_id=abc&id=")
    first = await server.next(wire.ConnectionData)
    assert first.payload == b'{"protocol":"json","version":1}\x1e' + invocation
    # server -> client: Text frames for JSON, in order, split however the server pleases
    cid = client.connection_id
    await server.send(wire.ConnectionData(cid, b"{}\x1e"), wire.ConnectionData(cid, json_record({"type": 6})))
    await client.wait_for(2)
    assert client.frames == [(WSMsgType.TEXT, b"{}\x1e"), (WSMsgType.TEXT, b'{"type":6}\x1e')]
    # client -> server
    await client.ws.send_str('{"type":6}\x1e')
    later = await server.next(wire.ConnectionData)
    assert later == wire.ConnectionData(cid, b'{"type":6}\x1e')
    state = double.state()["clients"][cid]
    assert state["server"] == "s1" and state["protocol"] == "json" and state["user"] == "alice"


async def test_server_frames_split_across_messages(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    client = await RawClient.connect(session, double)
    cid = await server.accept()
    data = wire.frame(wire.ConnectionData(cid, json_record({"type": 1, "target": "a", "arguments": [1]})))
    data += wire.frame(wire.ConnectionData(cid, json_record({"type": 1, "target": "b", "arguments": [2]})))
    for start in range(0, len(data), 3):  # three bytes per WebSocket message
        await server.ws.send_bytes(data[start : start + 3])
    await client.wait_for(3)
    assert [json.loads(p[:-1]).get("target") for p in client.payloads()] == [None, "a", "b"]


async def test_messagepack_client_gets_binary_frames(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    client = await RawClient.connect(session, double, protocol="messagepack")
    opened = await server.next(wire.OpenConnection)
    assert opened.protocol == "messagepack"
    await server.send(wire.ConnectionData(client.connection_id, b"{}\x1e"))
    await client.wait_for(1)
    assert client.frames == [(WSMsgType.BINARY, b"{}\x1e")]
    ping = msgpack_record([6])
    await client.ws.send_bytes(ping)
    await server.next(wire.ConnectionData, lambda m: m.payload == ping)


async def test_no_app_server_fails_the_client_handshake(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    client = await RawClient.connect(session, double)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.payloads() == [json_record({"error": NO_SERVER_ERROR})]


# -- sends, groups, acks -------------------------------------------------------------------------
async def test_broadcast_user_group_delivery_and_acks(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    a = await RawClient.connect(session, double, claims={"asrs.s.uid": "alice"})
    await server.accept()
    b = await RawClient.connect(session, double, protocol="messagepack", claims={"nameid": "bob"})
    await server.accept()
    c = await RawClient.connect(session, double, claims={"asrs.s.uid": "alice"})
    await server.accept()
    for client in (a, b, c):
        await client.wait_for(1)  # each client's {} handshake response

    steps = 0

    async def step(message: wire.ServiceMessage) -> None:
        """Send, then a broadcast marker to everyone: what arrives before the marker is the answer."""
        nonlocal steps
        steps += 1
        marker = f"marker-{steps}"
        await server.send(message, wire.BroadcastData(invocation_payloads(marker)))
        for client in (a, b, c):
            await until(lambda cl=client: marker in targets(cl), marker, 5)  # type: ignore[misc]

    def targets(client: RawClient) -> list[str]:
        return [_target(p, client.protocol) for p in client.payloads()[1:]]  # after the {} response

    def since_last_step(client: RawClient) -> list[str]:
        """Targets the client received between the previous marker and the last one."""
        received = targets(client)
        end = received.index(f"marker-{steps}")
        start = received.index(f"marker-{steps - 1}") + 1 if steps > 1 else 0
        return received[start:end]

    await step(wire.BroadcastData(invocation_payloads("all"), excluded_connection_ids=(c.connection_id,)))
    assert [since_last_step(x) for x in (a, b, c)] == [["all"], ["all"], []]
    assert b.frames[-1][0] == WSMsgType.BINARY and a.frames[-1][0] == WSMsgType.TEXT

    await step(wire.UserData("alice", invocation_payloads("user")))
    assert [since_last_step(x) for x in (a, b, c)] == [["user"], [], ["user"]]
    await step(wire.MultiUserData(("bob", "nobody"), invocation_payloads("users")))
    assert [since_last_step(x) for x in (a, b, c)] == [[], ["users"], []]
    await step(wire.MultiConnectionData((b.connection_id, c.connection_id), invocation_payloads("conns")))
    assert [since_last_step(x) for x in (a, b, c)] == [[], ["conns"], ["conns"]]

    await server.send(
        wire.JoinGroupWithAck(a.connection_id, "g", 1),
        wire.JoinGroupWithAck(b.connection_id, "g", 2),
        wire.JoinGroupWithAck("no-such-connection", "g", 3),
        wire.JoinGroup(c.connection_id, "h"),
    )
    acks = [await server.next(wire.Ack, lambda m, i=i: m.ack_id == i) for i in (1, 2, 3)]  # type: ignore[misc]
    assert [ack.status for ack in acks] == [wire.AckStatus.OK, wire.AckStatus.OK, wire.AckStatus.NOT_FOUND]
    assert double.group_members(HUB, "g") == {a.connection_id, b.connection_id}
    assert double.state()["clients"][c.connection_id]["groups"] == ["h"]

    await step(wire.GroupBroadcastData("g", invocation_payloads("group"), excluded_connection_ids=(a.connection_id,)))
    assert [since_last_step(x) for x in (a, b, c)] == [[], ["group"], []]
    await step(wire.GroupBroadcastData("g", invocation_payloads("group2"), excluded_user_ids=("bob",)))
    assert [since_last_step(x) for x in (a, b, c)] == [["group2"], [], []]
    await step(wire.MultiGroupBroadcastData(("g", "h"), invocation_payloads("groups")))
    assert [since_last_step(x) for x in (a, b, c)] == [["groups"], ["groups"], ["groups"]]

    await server.send(wire.LeaveGroupWithAck(a.connection_id, "g", 4), wire.LeaveGroup(b.connection_id, "g"))
    assert (await server.next(wire.Ack, lambda m: m.ack_id == 4)).status == wire.AckStatus.OK
    await until(lambda: double.group_members(HUB, "g") == set(), "everyone left g")
    # a payload map without the client's protocol reaches no client of that protocol
    await step(wire.BroadcastData({"json": invocation_payloads("json-only")["json"]}))
    assert [since_last_step(x) for x in (a, b, c)] == [["json-only"], [], ["json-only"]]


def _target(payload: bytes, protocol: str) -> str:
    if protocol == "json":
        return str(json.loads(payload[:-1])["target"])
    items = msgpack.unpackb(payload[1:])
    return str(items[3])


# -- closing -------------------------------------------------------------------------------------
async def test_close_connection_both_ways(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    leaving = await RawClient.connect(session, double)
    await server.accept()
    await leaving.ws.close()
    closed = await server.next(wire.CloseConnection)
    assert closed == wire.CloseConnection(leaving.connection_id, "", {})
    await until(lambda: leaving.connection_id not in double.clients, "the client forgotten")

    closed_by_server = await RawClient.connect(session, double)
    cid = await server.accept()
    await server.send(wire.ConnectionData(cid, json_record({"type": 7})), wire.CloseConnection(cid, ""))
    await asyncio.wait_for(closed_by_server.closed.wait(), 5)
    assert closed_by_server.payloads() == [b"{}\x1e", b'{"type":7}\x1e']  # written before the close
    assert closed_by_server.ws.close_code == 1000
    assert cid not in double.clients

    # a server that ends a client with an error (an abort) ends its socket abnormally
    aborted = await RawClient.connect(session, double)
    aborted_id = await server.accept()
    await server.send(wire.CloseConnection(aborted_id, "The connection was aborted."))
    await asyncio.wait_for(aborted.closed.wait(), 5)
    assert aborted.ws.close_code == 1011
    # the service does not answer a server's CloseConnection
    assert [m.connection_id for m in server.all(wire.CloseConnection)] == [leaving.connection_id]


async def test_dropped_server_connection_closes_its_clients(
    double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    first, second = FakeServer(session, double, "s1"), FakeServer(session, double, "s1")
    await first.connect()
    await second.connect()
    await double.wait_for_servers(HUB, 1, connections=2, timeout=2)
    on_first = await RawClient.connect(session, double)
    await first.accept()
    on_second = await RawClient.connect(session, double)  # the connection carrying fewer clients
    await second.accept()
    async with session.post(f"{double.url}/_double/drop-server-connections?server=s1&count=1") as response:
        assert await response.json() == {"dropped": 1}
    await asyncio.wait_for(first.closed.wait(), 5)
    await asyncio.wait_for(on_first.closed.wait(), 5)
    assert on_first.connection_id not in double.clients
    assert on_second.connection_id in double.clients and not on_second.closed.is_set()
    assert double.state()["hubs"][HUB]["servers"]["s1"]["connections"] == 1
    assert not second.all(wire.CloseConnection)


# -- graceful shutdown ---------------------------------------------------------------------------
async def test_fin1_migrates_clients_to_another_server(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    old, new = FakeServer(session, double, "old"), FakeServer(session, double, "new")
    await old.connect(migration_level=1)
    await double.wait_for_servers(HUB, 1, timeout=2)
    client = await RawClient.connect(session, double, claims={"asrs.s.uid": "u"}, query="&x=1")
    original = await old.next(wire.OpenConnection)
    await old.next(wire.ConnectionData)
    await old.send(wire.ConnectionData(client.connection_id, b"{}\x1e"), wire.JoinGroup(client.connection_id, "g"))
    await new.connect(migration_level=1)
    await double.wait_for_servers(HUB, 2, timeout=2)

    await old.send(wire.shutdown_ping(wire.GracefulShutdownMode.MIGRATE_CLIENTS))
    finack = await old.next(wire.Ping, lambda p: p.get("shutdown") is not None)
    assert wire.is_finack(finack)
    moved_out = await old.next(wire.CloseConnection)
    assert moved_out.connection_id == client.connection_id and moved_out.error_message == ""
    assert wire.find_header(moved_out.headers, "Asrs-Migrate-To") == ("new",)
    moved_in = await new.next(wire.OpenConnection)
    assert moved_in.connection_id == client.connection_id
    assert moved_in.claims == original.claims and moved_in.query_string == original.query_string
    assert moved_in.protocol == "json"
    assert wire.find_header(moved_in.headers, "Asrs-Migrate-From") == ("old",)
    replay = await new.next(wire.ConnectionData)
    assert replay.payload == b'{"protocol":"json","version":1}\x1e'

    state = double.state()
    assert state["hubs"][HUB]["servers"]["old"]["going_away"] is True
    assert state["clients"][client.connection_id]["server"] == "new"
    assert state["clients"][client.connection_id]["groups"] == ["g"]  # groups live in the service
    # the client's socket stayed open; its traffic now goes to the new server
    assert not client.closed.is_set()
    await client.ws.send_str('{"type":6}\x1e')
    await new.next(wire.ConnectionData, lambda m: m.payload == b'{"type":6}\x1e')
    # a server that does not drop its hub's handshake response is caught: it reaches the client
    await new.send(wire.ConnectionData(client.connection_id, b"{}\x1e"))
    await client.wait_for(2)
    assert client.payloads() == [b"{}\x1e", b"{}\x1e"]
    # the old server writing after Asrs-Migrate-To is not forwarded
    await old.send(wire.ConnectionData(client.connection_id, json_record({"type": 7})))
    await until(lambda: double.stray, "the stray write recorded")
    # a repeated fin is acknowledged again; new clients go to the new server only
    await old.send(wire.shutdown_ping(1))
    await old.next(wire.Ping, lambda p: wire.is_finack(p))
    later = await RawClient.connect(session, double)
    assert (await new.next(wire.OpenConnection)).connection_id == later.connection_id
    assert not old.all(wire.OpenConnection)[1:]


async def test_migrated_handshake_response_can_be_dropped(
    double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    double.drop_migrated_handshake_response = True
    old, new = FakeServer(session, double, "old"), FakeServer(session, double, "new")
    await old.connect()
    client = await RawClient.connect(session, double)
    await old.accept()
    await new.connect()
    await old.send(wire.shutdown_ping(1))
    await new.next(wire.OpenConnection)
    cid = client.connection_id
    await new.send(wire.ConnectionData(cid, b"{}\x1e"), wire.ConnectionData(cid, b'{"type":6}\x1e'))
    await client.wait_for(2)
    assert client.payloads() == [b"{}\x1e", b'{"type":6}\x1e']


async def test_fin0_closes_clients(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    client = await RawClient.connect(session, double)
    await server.accept()
    await server.send(wire.shutdown_ping(0))
    assert wire.is_finack(await server.next(wire.Ping, lambda p: p.get("shutdown") is not None))
    await asyncio.wait_for(client.closed.wait(), 5)
    assert (await server.next(wire.CloseConnection)).connection_id == client.connection_id
    refused = await RawClient.connect(session, double)  # the only server is going away
    await asyncio.wait_for(refused.closed.wait(), 5)
    assert b"error" in refused.payloads()[0]


# -- client results ------------------------------------------------------------------------------
async def test_client_invocation_routing(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    owner, caller = FakeServer(session, double, "owner"), FakeServer(session, double, "caller")
    await owner.connect()
    client = await RawClient.connect(session, double)
    cid = await owner.accept()
    await caller.connect()
    payloads = {
        "json": json_record({"type": 1, "invocationId": "inv1", "target": "Ask", "arguments": []}),
        "messagepack": b"\x00",
    }
    await caller.send(wire.ClientInvocation("inv1", cid, "caller", payloads))
    mapping = await caller.next(wire.ServiceMapping)
    assert mapping == wire.ServiceMapping("inv1", cid, double.instance_id)
    forwarded = await owner.next(wire.ClientInvocation)
    assert forwarded.invocation_id == "inv1" and forwarded.caller_server_id == "caller"
    await client.wait_for(2)
    assert client.payloads()[1] == payloads["json"]
    # the client's completion reaches its owner as data; the owner sends ClientCompletion on
    completion = json_record({"type": 3, "invocationId": "inv1", "result": 42})
    await owner.send(wire.ClientCompletion("inv1", cid, "caller", "json", completion))
    relayed = await caller.next(wire.ClientCompletion)
    assert relayed.payload == completion and relayed.connection_id == cid
    # the owner as its own caller: the empty completion is only for the service to forget
    await owner.send(wire.ClientInvocation("inv2", cid, "owner", payloads))
    await client.wait_for(3)
    await owner.send(wire.ClientCompletion("inv2", cid, "owner", "json", b""))
    await until(lambda: double.state()["clients"][cid]["pending_invocations"] == 0, "nothing pending")
    assert not owner.all(wire.ServiceMapping)
    # an unknown connection, and a client leaving with a call pending
    await caller.send(wire.ClientInvocation("inv3", "nobody", "caller", payloads))
    missing = await caller.next(wire.ErrorCompletion)
    assert missing == wire.ErrorCompletion("inv3", "nobody", "caller", "Connection 'nobody' does not exist.")
    await caller.send(wire.ClientInvocation("inv4", cid, "caller", payloads))
    await owner.next(wire.ClientInvocation, lambda m: m.invocation_id == "inv4")
    await client.ws.close()
    gone = await caller.next(wire.ErrorCompletion)
    assert gone == wire.ErrorCompletion("inv4", cid, "caller", f"Connection '{cid}' disconnected.")


# -- control API ---------------------------------------------------------------------------------
async def test_control_api(double: ServiceDouble, session: aiohttp.ClientSession) -> None:
    server = FakeServer(session, double, "s1")
    await server.connect()
    async with session.get(f"{double.url}/_double/wait-servers?hub={HUB}&count=1&timeout=2") as response:
        assert response.status == 200
        assert (await response.json())["hubs"][HUB]["servers"]["s1"]["connections"] == 1
    async with session.get(f"{double.url}/_double/wait-servers?hub=other&timeout=0.1") as response:
        assert response.status == 408
    async with session.post(f"{double.url}/_double/ping?server=s1", json=["echo", "42"]) as response:
        assert await response.json() == {"sent": 1}
    echo = await server.next(wire.Ping, lambda p: wire.is_echo(p))
    assert echo.messages == ("echo", "42")
    await server.send(echo)  # what an app server answers
    await until(lambda: double.message_types("s1")[-1:] == ["Ping"], "the echo recorded")
    async with session.get(f"{double.url}/_double/messages?server=s1") as response:
        assert await response.json() == ["HandshakeRequest", "Ping"]
    async with session.post(f"{double.url}/_double/ping?server=s1", data="not json") as response:
        assert response.status == 400
    client = await RawClient.connect(session, double, claims={"asrs.s.uid": "u1"})
    await server.accept()
    async with session.get(f"{double.url}/_double/state") as response:
        state = await response.json()
    assert state["clients"][client.connection_id] == {
        "hub": HUB,
        "server": "s1",
        "protocol": "json",
        "user": "u1",
        "groups": [],
        "migrated_from": [],
        "pending_invocations": 0,
    }
    assert state["received"]["s1"]["ConnectionData"] == 1


def test_claim_pairs() -> None:
    payload = {"aud": "x", "exp": 1, "iat": 1, "nbf": 1, "iss": "azure-signalr", "role": ["a", "b"], "n": 3, "t": True}
    assert claim_pairs(payload) == (("role", "a"), ("role", "b"), ("n", "3"), ("t", "true"))
