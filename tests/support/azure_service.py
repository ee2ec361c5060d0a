"""A loopback double of Azure SignalR Service (ASRS) in default mode, for testing the app server.

The real service cannot be reached from the tests, yet the app server's whole job in default mode
is talking to it: it opens outbound WebSockets to `/server/`, the service multiplexes every client
over them in the service protocol, and the stock `@microsoft/signalr` client, redirected by the
app's negotiate, connects to the service's `/client/`, never to the app. This module plays the
service's side of both, as /work/shared/azure-signalr-notes.md describes it (§2 server connections
and tokens, §4 client lifecycle, §5 pings and graceful shutdown, §6 sends, groups and client
results, §7 negotiate and client tokens), on 127.0.0.1 only:

- `GET /server/?hub=&cid=[&target=]`: app-server WebSockets. HS256/HS512 bearer token signed with
  the UTF-8 bytes of the access key, audience `http://127.0.0.1/server/?hub={hub}` (no port),
  `X-ASRS-Server-Id` names the server. Frames are parsed as a byte stream.
- `POST /client/negotiate?hub=`, `GET /client/?hub=&id=` (WebSocket): the stock client after the
  redirect. The double reads the client's handshake far enough to learn the protocol, picks an app
  server, and passes the client's bytes through as ConnectionData; the app server does the hub
  handshake.
- `/_double/...`: a JSON control API for tests that run the double as a process (the same
  operations are methods for in-process use).

Run as a process: `python -m tests.support.azure_service --port N --key K [--ping-interval S] [--serverless]`.

It is a test double, not an emulator: what it deliberately leaves out is listed in `NOT_MODELLED`.
Texts the notes could not verify against the live service are marked "unverified" where defined.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import secrets
import signal
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

import jwt
from aiohttp import WSMsgType, web

from signalr_chat.signalr.azure import wire

log = logging.getLogger("tests.support.azure_service")

#: The `kid` of the key the double lends Entra identities (notes §2.3).
ENTRA_KEY_ID: Final = "entra-key-1"
# Every JWT audience is built from `{scheme}://{host}/` of the connection string's Endpoint,
# without the port (notes §1), and the connection string below says http://127.0.0.1.
AUDIENCE_BASE: Final = "http://127.0.0.1/"
# What ASRS answers an app server's HandshakeRequest with in Serverless mode is live-only
# (notes §10). This text is made up in ASRS's style; unverified.
SERVERLESS_ERROR: Final = "ServiceMode is Serverless, no server connections are allowed."
# The handshake error public issue reports (2020) quote from ASRS for a client of a hub that no app
# server is connected to; whether today's service words it the same is unverified.
NO_SERVER_ERROR: Final = (
    "SignalR Service is now in 'Default' service mode. Current mode works as a proxy that routes client"
    " traffic to the connected app servers. However app servers are not connected."
)
# Version and handshake-request errors: unverified texts.
VERSION_ERROR: Final = "Version mismatch."
BAD_HANDSHAKE_ERROR: Final = "Handshake request is invalid."
# Claims the service keeps to itself (the JWT's registered claims).
DROPPED_CLAIMS: Final = frozenset({"aud", "exp", "iat", "nbf", "iss"})
RECORD_SEPARATOR: Final = b"\x1e"
HANDSHAKE_RESPONSE_OK: Final = b"{}\x1e"
MAX_CLIENT_HANDSHAKE: Final = 32 * 1024  # bytes buffered while waiting for the first 0x1E
DEFAULT_CLIENT_HANDSHAKE_TIMEOUT: Final = 15.0  # the service's, changed by the token claim `asrs.s.cht`
SERVER_HANDSHAKE_TIMEOUT: Final = 15.0
NEGOTIATED_LIFETIME: Final = 60.0  # seconds a negotiated but unused connection token stays valid
TOKEN_LEEWAY: Final = 5  # seconds of clock skew allowed on exp/nbf (the processes share a clock)
MAX_WS_MESSAGE: Final = wire.DEFAULT_MAX_FRAME_SIZE + 16

NOT_MODELLED: Final = (
    "Microsoft Entra ID (AccessKeyRequest, /api/v1/auth/accessKey)",
    "the serverless REST API and upstream webhooks",
    "transports other than WebSockets for clients (negotiate offers WebSockets only)",
    "stateful reconnect, ConnectionReconnect, partial messages, flow control, tracing ids (d-m)",
    "the E filter (OData) of sends, user groups (UserJoinGroup...), Check*/Close*WithAck,"
    " GroupMemberQuery: recorded, not answered",
    "ServiceError/ServiceEvent, status/servers/target/offline pings of its own (tests send them via send_ping)",
    "dropping app servers that stop pinging (last_received is recorded for tests to assert)",
    "several service instances, rebalancing, on-demand connections (target is only recorded)",
    "back-pressure: every socket has an unbounded outbox",
)


# -- tokens --------------------------------------------------------------------------------------
def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def claim_pairs(payload: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A client token's claims as OpenConnection carries them: the registered JWT claims left out,
    every value a string, a repeated claim type (a JSON array) as one pair per value."""
    pairs: list[tuple[str, str]] = []
    for name, value in payload.items():
        if name in DROPPED_CLAIMS:
            continue
        for item in value if isinstance(value, list) else (value,):
            pairs.append((name, _claim_text(item)))
    return tuple(pairs)


def _claim_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _new_id() -> str:
    """URL-safe, as a connection token must be (it goes into `?id=` unencoded)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


# -- connections ---------------------------------------------------------------------------------
class _Close:
    """Outbox sentinel: close the socket after everything queued before it."""

    __slots__ = ("code", "message")

    def __init__(self, code: int, message: bytes = b"") -> None:
        self.code = code
        self.message = message


@dataclass(eq=False)
class ServerConnection:
    """One app-server WebSocket (`cid` from its URL)."""

    connection_id: str
    server_id: str
    hub: str
    target: str | None
    ws: web.WebSocketResponse
    request: web.Request
    handshake: wire.HandshakeRequest | None = None
    registered: bool = False
    open: bool = True
    last_received: float = 0.0  # loop time of the last bytes received
    clients: set[str] = field(default_factory=set)
    outbox: asyncio.Queue[bytes | _Close] = field(default_factory=asyncio.Queue)
    pinger: asyncio.Task[None] | None = None

    def send(self, message: wire.ServiceMessage) -> None:
        if self.open:
            self.outbox.put_nowait(wire.frame(message))

    def close(self, code: int = 1000) -> None:
        if self.open:
            self.outbox.put_nowait(_Close(code))

    @property
    def carries_clients(self) -> bool:
        return (
            self.open
            and self.registered
            and (self.handshake is None or self.handshake.connection_type != wire.ConnectionType.WEAK)
        )


@dataclass(eq=False)
class ClientConnection:
    """One client WebSocket, routed to an app server through one server connection."""

    connection_id: str
    hub: str
    ws: web.WebSocketResponse
    request: web.Request
    claims: tuple[tuple[str, str], ...]
    headers: dict[str, tuple[str, ...]]
    query: str
    user_id: str | None
    protocol: str = ""
    handshake: bytes = b""  # the client's handshake request, as it sent it
    owner: ServerConnection | None = None
    groups: set[str] = field(default_factory=set)
    pending: dict[str, str] = field(default_factory=dict)  # invocation id -> caller server id
    migrated_from: list[str] = field(default_factory=list)
    drop_next_handshake_response: bool = False
    #: The app server's handshake response reached the client (its first ConnectionData): until
    #: then sends to many (all, groups, users) pass it by, as a connection is not in a hub before
    #: its handshake; the newest SDK tags that ConnectionData so the service can tell (live-only).
    handshaken: bool = False
    gone: bool = False
    received: int = 0  # payloads delivered to the client
    outbox: asyncio.Queue[bytes | _Close] = field(default_factory=asyncio.Queue)

    @property
    def binary(self) -> bool:
        """JSON travels in Text frames, every other hub protocol in Binary frames."""
        return self.protocol.lower() != "json"

    @property
    def server_id(self) -> str | None:
        return None if self.owner is None else self.owner.server_id

    def deliver(self, payload: bytes) -> None:
        if not self.gone:
            self.received += 1
            self.outbox.put_nowait(payload)


@dataclass
class _Negotiated:
    connection_id: str
    hub: str
    created: float
    used: bool = False


@dataclass
class _Pending:
    caller_server_id: str
    caller: ServerConnection  # the connection the invocation came in on


# -- the double ----------------------------------------------------------------------------------
class ServiceDouble:
    """The service side of ASRS default mode, on 127.0.0.1. See the module docstring."""

    def __init__(
        self, access_key: str, *, ping_interval: float = 5.0, serverless: bool = False, entra_token: str | None = None
    ) -> None:
        self.access_key = access_key
        # Microsoft Entra ID (notes §2.3): the one bearer the double takes as an Entra access token
        # (what the tests' managed-identity endpoint hands out), on /server/ and on the key-lending
        # GET /api/v1/auth/accessKey, which answers this key under ENTRA_KEY_ID.
        self.entra_token = entra_token
        self.ping_interval = ping_interval
        self.serverless = serverless
        # Forward everything an app server writes, as the service does: a migrated-in connection's
        # server must drop the handshake response its hub writes (notes §4.5). True: the double
        # drops a first `{}\x1e` itself, to test other things with a server that does not.
        self.drop_migrated_handshake_response = False
        self.instance_id = f"double-{uuid.uuid4().hex[:12]}"
        self._key = access_key.encode("utf-8")
        self._servers: dict[str, dict[str, list[ServerConnection]]] = {}  # hub -> server id -> conns
        self._going_away: dict[str, dict[str, int]] = {}  # hub -> server id -> fin mode
        self._round_robin: dict[str, int] = {}
        self.clients: dict[str, ClientConnection] = {}
        self._groups: dict[str, dict[str, set[str]]] = {}  # hub -> group -> connection ids
        self._negotiated: dict[str, _Negotiated] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}  # (connection id, invocation id)
        self._received: dict[str, list[wire.ServiceMessage]] = {}
        self._last_received: dict[str, float] = {}
        self.refusals: list[str] = []  # why requests were refused (401/400/404), for debugging tests
        self.protocol_errors: list[str] = []  # what app servers sent that the double could not take
        self.stray: list[tuple[str, str]] = []  # (server id, what) sent for clients it does not own
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.app = web.Application(middlewares=[self._cors])
        self.app.router.add_get("/server/", self._server_socket)
        self.app.router.add_get("/server", self._server_socket)
        self.app.router.add_post("/client/negotiate", self._negotiate)
        self.app.router.add_get("/api/v1/auth/accessKey", self._lend_access_key)
        self.app.router.add_get("/client/", self._client_socket)
        self.app.router.add_get("/client", self._client_socket)
        self.app.router.add_get("/_double/state", self._http_state)
        self.app.router.add_get("/_double/messages", self._http_messages)
        self.app.router.add_get("/_double/wait-servers", self._http_wait_servers)
        self.app.router.add_post("/_double/drop-server-connections", self._http_drop)
        self.app.router.add_post("/_double/ping", self._http_ping)
        self.app.on_shutdown.append(self._on_shutdown)

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_shutdown(self, app: web.Application) -> None:
        # The service going away: every socket ends without a close handshake to wait for.
        for conn in [c for conns in self._all_server_lists() for c in conns]:
            self._abort(conn)
        for client in list(self.clients.values()):
            self._forget_client(client, notify_server=False)
            _abort_ws(client.request)

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint=http://127.0.0.1;Port={self._port};AccessKey={self.access_key};Version=1.0;"

    # -- queries for tests -----------------------------------------------------------------------
    def server_connections(self, hub: str | None = None, server_id: str | None = None) -> list[ServerConnection]:
        """Open, handshaken server connections."""
        found = []
        for hub_name, by_server in self._servers.items():
            if hub is not None and hub_name != hub:
                continue
            for sid, conns in by_server.items():
                if server_id is None or sid == server_id:
                    found.extend(conns)
        return found

    def server_ids(self, hub: str) -> list[str]:
        """Server ids with at least one open connection in the hub, in the order they connected."""
        return [sid for sid, conns in self._servers.get(hub, {}).items() if conns]

    def going_away(self, hub: str, server_id: str) -> bool:
        return server_id in self._going_away.get(hub, {})

    def messages(self, server_id: str) -> list[wire.ServiceMessage]:
        """Every message received from that server id, over all its connections, in order."""
        return list(self._received.get(server_id, ()))

    def message_types(self, server_id: str) -> list[str]:
        return [type(m).__name__ for m in self._received.get(server_id, ())]

    def last_received(self, server_id: str) -> float | None:
        """`asyncio` loop time at which that server id last sent anything."""
        return self._last_received.get(server_id)

    def group_members(self, hub: str, group: str) -> set[str]:
        return set(self._groups.get(hub, {}).get(group, ()))

    def state(self) -> dict[str, Any]:
        hubs: dict[str, Any] = {}
        for hub, by_server in self._servers.items():
            servers = {
                sid: {
                    "connections": len(conns),
                    "going_away": self.going_away(hub, sid),
                    "clients": sum(len(c.clients) for c in conns),
                }
                for sid, conns in by_server.items()
                if conns or self.going_away(hub, sid)
            }
            hubs[hub] = {"servers": servers}
        return {
            "instance_id": self.instance_id,
            "serverless": self.serverless,
            "hubs": hubs,
            "clients": {
                cid: {
                    "hub": c.hub,
                    "server": c.server_id,
                    "protocol": c.protocol,
                    "user": c.user_id,
                    "groups": sorted(c.groups),
                    "migrated_from": list(c.migrated_from),
                    "pending_invocations": len(c.pending),
                }
                for cid, c in self.clients.items()
            },
            "received": {sid: dict(Counter(type(m).__name__ for m in msgs)) for sid, msgs in self._received.items()},
            "refusals": list(self.refusals),
            "protocol_errors": list(self.protocol_errors),
            "stray": [list(s) for s in self.stray],
        }

    async def wait_for_servers(self, hub: str, count: int = 1, timeout: float = 10.0, *, connections: int = 1) -> None:
        """Until `count` server ids, each with at least `connections` open connections and not
        going away, serve the hub; TimeoutError after `timeout` seconds."""
        await self.wait_for(lambda: self._ready(hub, count, connections), timeout)

    async def wait_for(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        """Until `condition()` is true, checked on every change of the double's state."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    def _ready(self, hub: str, count: int, connections: int) -> bool:
        ready = [
            sid
            for sid, conns in self._servers.get(hub, {}).items()
            if not self.going_away(hub, sid) and sum(1 for c in conns if c.carries_clients) >= connections
        ]
        return len(ready) >= count

    def _notify(self) -> None:
        self._changed.set()

    # -- actions for tests -----------------------------------------------------------------------
    def drop_server_connections(self, server_id: str, count: int | None = None, hub: str | None = None) -> int:
        """Abort that server's WebSockets without a close frame, as a network fault would; the
        clients routed through them are dropped. Returns how many were dropped."""
        conns = self.server_connections(hub, server_id)
        if count is not None:
            conns = conns[:count]
        for conn in conns:
            self._abort(conn)
        return len(conns)

    def send_ping(self, server_id: str, strings: Iterable[str], hub: str | None = None) -> int:
        """Send `Ping[strings]` on every connection of that server id (e.g. `echo`, `target`,
        `offline`, `status`). Returns the number of connections it went to."""
        ping = wire.Ping(tuple(strings))
        conns = self.server_connections(hub, server_id)
        for conn in conns:
            conn.send(ping)
        return len(conns)

    def close_client(self, connection_id: str, code: int = 1000) -> bool:
        """Close a client's WebSocket from the service side; its app server gets CloseConnection."""
        client = self.clients.get(connection_id)
        if client is None:
            return False
        self._forget_client(client, notify_server=True)
        client.outbox.put_nowait(_Close(code))
        return True

    # -- tokens ----------------------------------------------------------------------------------
    def _verify(self, token: str | None, audience: str, what: str) -> dict[str, Any] | None:
        if token is None:
            self._refuse(f"{what}: no bearer token")
            return None
        try:
            with warnings.catch_warnings():
                # the test keys may be shorter than RFC 7518 recommends; ASRS takes any key
                warnings.filterwarnings("ignore", message="The HMAC key is")  # PyJWT 2.10+ warns of short keys
                payload: dict[str, Any] = jwt.decode(
                    token,
                    self._key,
                    algorithms=["HS256", "HS512"],
                    audience=audience,
                    options={"require": ["exp", "aud"]},
                    leeway=TOKEN_LEEWAY,
                )
        except jwt.InvalidTokenError as exc:
            self._refuse(f"{what}: {type(exc).__name__}: {exc} (audience expected {audience!r})")
            return None
        return payload

    async def _lend_access_key(self, request: web.Request) -> web.Response:
        """Entra ID: the HMAC key an authorised identity signs client tokens with (notes §2.3)."""
        token = _bearer(request.headers.get("Authorization"))
        if self.entra_token is None or token != self.entra_token:
            self._refuse("accessKey: not the Entra token")
            return web.json_response({"code": "Unauthorized", "message": "Unauthorized"}, status=401)
        return web.json_response({"KeyId": ENTRA_KEY_ID, "AccessKey": self.access_key})

    def _refuse(self, reason: str) -> None:
        log.info("refused: %s", reason)
        self.refusals.append(reason)
        self._notify()

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Browsers call negotiate cross-origin (the page is on the app's origin)."""
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and request.path.startswith("/client"):
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if origin and request.path.startswith("/client") and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                requested = request.headers.get("Access-Control-Request-Headers")
                response.headers["Access-Control-Allow-Headers"] = (
                    requested or "Authorization, Content-Type, X-Requested-With, X-SignalR-User-Agent"
                )
        return response

    # -- app servers -----------------------------------------------------------------------------
    async def _server_socket(self, request: web.Request) -> web.StreamResponse:
        hub = request.query.get("hub")
        if not hub:
            self._refuse("server: no hub")
            return web.Response(status=400, text="hub is required")
        token = _bearer(request.headers.get("Authorization"))
        entra = self.entra_token is not None and token == self.entra_token
        if not entra and self._verify(token, f"{AUDIENCE_BASE}server/?hub={hub}", "server") is None:
            return web.Response(status=401)
        server_id = request.headers.get("X-ASRS-Server-Id")
        if not server_id:
            self._refuse("server: no X-ASRS-Server-Id header")
            return web.Response(status=400, text="X-ASRS-Server-Id is required")
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=MAX_WS_MESSAGE)
        if not ws.can_prepare(request).ok:
            self._refuse("server: not a WebSocket request")
            return web.Response(status=400, text="WebSocket expected")
        await ws.prepare(request)
        conn = ServerConnection(
            connection_id=request.query.get("cid") or str(uuid.uuid4()),
            server_id=server_id,
            hub=hub,
            target=request.query.get("target"),
            ws=ws,
            request=request,
        )
        conn.last_received = asyncio.get_running_loop().time()
        writer = asyncio.create_task(_write(ws, conn.outbox, binary=True))
        try:
            await self._read_server(conn)
        finally:
            self._server_connection_lost(conn)
            if not writer.done():
                conn.outbox.put_nowait(_Close(1000))
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer
            writer.cancel()
        return ws

    async def _read_server(self, conn: ServerConnection) -> None:
        reader = wire.FrameReader()
        loop = asyncio.get_running_loop()
        while True:
            timeout = SERVER_HANDSHAKE_TIMEOUT if conn.handshake is None else None
            try:
                msg = await conn.ws.receive(timeout=timeout)
            except TimeoutError:
                self._protocol_error(conn, "no HandshakeRequest within 15 s")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.BINARY:
                self._protocol_error(conn, f"a {msg.type.name} WebSocket message; the service protocol is binary")
                await conn.ws.close(code=1003)
                return
            now = loop.time()
            conn.last_received = now
            self._last_received[conn.server_id] = now
            try:
                messages = reader.feed(msg.data)
            except wire.ServiceProtocolError as exc:
                self._protocol_error(conn, str(exc))
                await conn.ws.close(code=1002)
                return
            for message in messages:
                self._received.setdefault(conn.server_id, []).append(message)
                if conn.handshake is None:
                    if not self._on_server_handshake(conn, message):
                        return
                else:
                    self._on_server_message(conn, message)
            self._notify()

    def _protocol_error(self, conn: ServerConnection, what: str) -> None:
        text = f"{conn.server_id} ({conn.hub}, {conn.connection_id}): {what}"
        log.warning("protocol error: %s", text)
        self.protocol_errors.append(text)
        self._notify()

    def _on_server_handshake(self, conn: ServerConnection, message: wire.ServiceMessage) -> bool:
        if not isinstance(message, wire.HandshakeRequest):
            self._protocol_error(conn, f"the first message was {type(message).__name__}, not HandshakeRequest")
            conn.close(1002)
            return False
        conn.handshake = message
        if message.version != 1:
            conn.send(wire.HandshakeResponse(VERSION_ERROR))
            conn.close()
            return False
        if self.serverless:
            conn.send(wire.HandshakeResponse(SERVERLESS_ERROR))
            conn.close()
            return False
        conn.send(wire.HandshakeResponse(""))
        conn.registered = True
        self._servers.setdefault(conn.hub, {}).setdefault(conn.server_id, []).append(conn)
        if self.ping_interval > 0:
            conn.pinger = asyncio.create_task(self._ping_loop(conn))
        self._notify()
        return True

    async def _ping_loop(self, conn: ServerConnection) -> None:
        while conn.open:
            await asyncio.sleep(self.ping_interval)
            conn.send(wire.KEEPALIVE_PING)

    def _abort(self, conn: ServerConnection) -> None:
        self._server_connection_lost(conn)
        _abort_ws(conn.request)

    def _server_connection_lost(self, conn: ServerConnection) -> None:
        """The socket is gone: the service drops every client routed through it (notes §2.4.6)."""
        if not conn.open:
            return
        conn.open = False
        if conn.pinger is not None:
            conn.pinger.cancel()  # the writer finishes on its own
        conns = self._servers.get(conn.hub, {}).get(conn.server_id)
        if conns is not None and conn in conns:
            conns.remove(conn)
        for cid in list(conn.clients):
            client = self.clients.get(cid)
            if client is not None and client.owner is conn:
                self._forget_client(client, notify_server=False)
                client.outbox.put_nowait(_Close(1011))
        self._notify()

    # -- messages from app servers ---------------------------------------------------------------
    def _on_server_message(self, conn: ServerConnection, message: wire.ServiceMessage) -> None:
        match message:
            case wire.Ping():
                self._on_ping(conn, message)
            case wire.ConnectionData():
                self._on_connection_data(conn, message)
            case wire.CloseConnection():
                client = self._owned_client(conn, message.connection_id, "CloseConnection")
                if client is not None:
                    self._forget_client(client, notify_server=False)
                    # an app server that ends a client with an error (an abort) ends its socket
                    # abnormally, as a dropped network would; a plain end is a normal close
                    client.outbox.put_nowait(_Close(1011 if message.error_message else 1000))
            case wire.BroadcastData():
                excluded = set(message.excluded_connection_ids)
                targets = [c for c in self._hub_clients(conn.hub) if c.connection_id not in excluded]
                self._deliver(targets, message.payloads)
            case wire.MultiConnectionData():
                self._deliver(self._by_ids(conn.hub, message.connection_ids), message.payloads)
            case wire.UserData():
                user = message.user_id
                self._deliver([c for c in self._hub_clients(conn.hub) if c.user_id == user], message.payloads)
            case wire.MultiUserData():
                users = set(message.user_ids)
                self._deliver([c for c in self._hub_clients(conn.hub) if c.user_id in users], message.payloads)
            case wire.GroupBroadcastData():
                excluded = set(message.excluded_connection_ids)
                excluded_users = set(message.excluded_user_ids)
                targets = [
                    c
                    for c in self._by_ids(conn.hub, self.group_members(conn.hub, message.group))
                    if c.connection_id not in excluded and (c.user_id is None or c.user_id not in excluded_users)
                ]
                self._deliver(targets, message.payloads)
            case wire.MultiGroupBroadcastData():
                members: set[str] = set()
                for group in message.groups:
                    members |= self.group_members(conn.hub, group)
                self._deliver(self._by_ids(conn.hub, members), message.payloads)
            case wire.JoinGroup():
                self._join(conn.hub, message.connection_id, message.group)
            case wire.LeaveGroup():
                self._leave(conn.hub, message.connection_id, message.group)
            case wire.JoinGroupWithAck():
                found = self._join(conn.hub, message.connection_id, message.group)
                conn.send(wire.Ack(message.ack_id, wire.AckStatus.OK if found else wire.AckStatus.NOT_FOUND))
            case wire.LeaveGroupWithAck():
                found = self._leave(conn.hub, message.connection_id, message.group)
                conn.send(wire.Ack(message.ack_id, wire.AckStatus.OK if found else wire.AckStatus.NOT_FOUND))
            case wire.ClientInvocation():
                self._on_client_invocation(conn, message)
            case wire.ClientCompletion() | wire.ErrorCompletion():
                self._on_completion(conn, message)
            case wire.HandshakeRequest():
                self._protocol_error(conn, "a second HandshakeRequest")
            case _:
                pass  # recorded only (see NOT_MODELLED)

    def _on_ping(self, conn: ServerConnection, ping: wire.Ping) -> None:
        shutdown = ping.get("shutdown")
        if shutdown is None or not shutdown.startswith("fin:"):
            return  # keep-alive, status, servers, echo replies: recorded only
        try:
            mode = int(shutdown[4:])
        except ValueError:
            self._protocol_error(conn, f"shutdown ping {shutdown!r}")
            return
        conn.send(wire.Ping(("shutdown", "finack")))
        leaving = self._going_away.setdefault(conn.hub, {})
        if conn.server_id in leaving:
            return  # the SDK resends the fin every 5 s until finack: act once
        leaving[conn.server_id] = mode
        owned = [c for c in self._hub_clients(conn.hub) if c.server_id == conn.server_id]
        if mode == wire.GracefulShutdownMode.MIGRATE_CLIENTS:
            for client in owned:
                self._migrate(client)
        elif mode == wire.GracefulShutdownMode.OFF:
            for client in owned:
                self.close_client(client.connection_id, 1001)
        self._notify()

    def _migrate(self, client: ClientConnection) -> None:
        old = client.owner
        assert old is not None
        new = self._pick_connection(client.hub, exclude=old.server_id)
        if new is None:
            return  # nowhere to go: the client stays until its server's connections end
        old.send(wire.CloseConnection(client.connection_id, "", {"Asrs-Migrate-To": (new.server_id,)}))
        old.clients.discard(client.connection_id)
        headers = {**client.headers, "Asrs-Migrate-From": (old.server_id,)}
        cid = client.connection_id
        new.send(wire.OpenConnection(cid, client.claims, headers, client.query, protocol=client.protocol))
        new.send(wire.ConnectionData(client.connection_id, client.handshake))
        new.clients.add(client.connection_id)
        client.owner = new
        client.migrated_from.append(old.server_id)
        client.drop_next_handshake_response = self.drop_migrated_handshake_response

    def _owned_client(self, conn: ServerConnection, connection_id: str, what: str) -> ClientConnection | None:
        client = self.clients.get(connection_id)
        if client is None or client.hub != conn.hub:
            return None  # already gone: normal when the client and the server close at once
        if client.server_id != conn.server_id:
            # e.g. the old server writing after Asrs-Migrate-To: the service routes by owner
            self.stray.append((conn.server_id, f"{what} for {connection_id}, owned by {client.server_id}"))
            return None
        return client

    def _on_connection_data(self, conn: ServerConnection, message: wire.ConnectionData) -> None:
        client = self._owned_client(conn, message.connection_id, "ConnectionData")
        if client is None:
            return
        if client.drop_next_handshake_response:
            client.drop_next_handshake_response = False
            if message.payload == HANDSHAKE_RESPONSE_OK:
                return
        client.handshaken = True
        client.deliver(message.payload)

    def _deliver(self, targets: Iterable[ClientConnection], payloads: Mapping[str, bytes]) -> None:
        for client in targets:
            payload = wire.find_payload(payloads, client.protocol)
            # what ASRS does without the client's protocol is live-only
            if payload is not None and client.handshaken:
                client.deliver(payload)

    def _hub_clients(self, hub: str) -> list[ClientConnection]:
        return [c for c in self.clients.values() if c.hub == hub and c.owner is not None]

    def _by_ids(self, hub: str, ids: Iterable[str]) -> list[ClientConnection]:
        found = []
        for cid in dict.fromkeys(ids):
            client = self.clients.get(cid)
            if client is not None and client.hub == hub and client.owner is not None:
                found.append(client)
        return found

    def _join(self, hub: str, connection_id: str, group: str) -> bool:
        client = self.clients.get(connection_id)
        if client is None or client.hub != hub:
            return False
        client.groups.add(group)
        self._groups.setdefault(hub, {}).setdefault(group, set()).add(connection_id)
        return True

    def _leave(self, hub: str, connection_id: str, group: str | None) -> bool:
        client = self.clients.get(connection_id)
        if client is None or client.hub != hub:
            return False
        for name in list(client.groups) if group is None else [group]:
            client.groups.discard(name)
            members = self._groups.get(hub, {}).get(name)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del self._groups[hub][name]
        return True

    # -- client results --------------------------------------------------------------------------
    def _on_client_invocation(self, conn: ServerConnection, message: wire.ClientInvocation) -> None:
        client = self.clients.get(message.connection_id)
        if client is None or client.hub != conn.hub or client.owner is None:
            conn.send(
                wire.ErrorCompletion(
                    message.invocation_id,
                    message.connection_id,
                    message.caller_server_id,
                    f"Connection '{message.connection_id}' does not exist.",
                )
            )
            return
        self._pending[(client.connection_id, message.invocation_id)] = _Pending(message.caller_server_id, conn)
        client.pending[message.invocation_id] = message.caller_server_id
        if client.owner.server_id != conn.server_id:
            # the owner must know, so that it sends the client's completion back to the service
            client.owner.send(message)
            conn.send(wire.ServiceMapping(message.invocation_id, message.connection_id, self.instance_id))
        self._deliver([client], message.payloads)

    def _on_completion(self, conn: ServerConnection, message: wire.ClientCompletion | wire.ErrorCompletion) -> None:
        pending = self._pending.pop((message.connection_id, message.invocation_id), None)
        client = self.clients.get(message.connection_id)
        if client is not None:
            client.pending.pop(message.invocation_id, None)
        if message.caller_server_id == conn.server_id:
            return  # the owner was the caller: the service only forgets the invocation
        caller = self._caller_connection(conn.hub, message.caller_server_id, pending)
        if caller is None:
            self.stray.append((conn.server_id, f"{type(message).__name__} for an unknown caller"))
            return
        caller.send(message)

    def _caller_connection(self, hub: str, server_id: str, pending: _Pending | None) -> ServerConnection | None:
        if pending is not None and pending.caller.open and pending.caller.server_id == server_id:
            return pending.caller
        conns = [c for c in self._servers.get(hub, {}).get(server_id, ()) if c.open]
        return conns[0] if conns else None

    # -- clients ---------------------------------------------------------------------------------
    async def _negotiate(self, request: web.Request) -> web.StreamResponse:
        hub = request.query.get("hub")
        if not hub:
            self._refuse("negotiate: no hub")
            return web.Response(status=400, text="hub is required")
        token = _bearer(request.headers.get("Authorization")) or request.query.get("access_token")
        if self._verify(token, f"{AUDIENCE_BASE}client/?hub={hub}", "negotiate") is None:
            return web.Response(status=401)
        try:
            version = min(int(request.query.get("negotiateVersion", "0")), 1)
        except ValueError:
            return web.json_response({"error": "The client requested a non-integer protocol version."})
        now = time.monotonic()
        for key in [k for k, n in self._negotiated.items() if now - n.created > NEGOTIATED_LIFETIME and not n.used]:
            del self._negotiated[key]
        connection_id = _new_id()
        document: dict[str, Any] = {"negotiateVersion": version, "connectionId": connection_id}
        key = connection_id
        if version >= 1:
            key = _new_id()
            document["connectionToken"] = key
        document["availableTransports"] = [{"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}]
        self._negotiated[key] = _Negotiated(connection_id, hub, now)
        return web.json_response(document)

    async def _client_socket(self, request: web.Request) -> web.StreamResponse:
        hub = request.query.get("hub")
        if not hub:
            self._refuse("client: no hub")
            return web.Response(status=400, text="hub is required")
        token = request.query.get("access_token") or _bearer(request.headers.get("Authorization"))
        payload = self._verify(token, f"{AUDIENCE_BASE}client/?hub={hub}", "client")
        if payload is None:
            return web.Response(status=401)
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=MAX_WS_MESSAGE, decode_text=False)
        if not ws.can_prepare(request).ok:
            self._refuse("client: only WebSockets are offered")
            return web.Response(status=400, text="Only the WebSockets transport is offered.")
        token_id = request.query.get("id")
        if token_id is None:  # skipNegotiation
            connection_id = _new_id()
        else:
            negotiated = self._negotiated.get(token_id)
            if negotiated is None or negotiated.hub != hub:
                self._refuse(f"client: unknown connection token {token_id!r}")
                return web.Response(status=404, text="No Connection with that ID")
            if negotiated.used:
                self._refuse(f"client: second socket for {token_id!r}")
                return web.Response(status=409, text="Connection ID already in use")
            negotiated.used = True
            connection_id = negotiated.connection_id
        claims = claim_pairs(payload)
        user = payload.get("asrs.s.uid", payload.get("nameid"))
        if isinstance(user, list):
            user = user[0] if user else None
        headers: dict[str, tuple[str, ...]] = {}
        for name in request.headers:
            headers.setdefault(name, tuple(request.headers.getall(name)))
        for name in [n for n in headers if n.lower() == "asrs-instance-id"]:
            del headers[name]
        headers["Asrs-Instance-Id"] = (self.instance_id,)  # the service instance holding the client
        client = ClientConnection(
            connection_id=connection_id,
            hub=hub,
            ws=ws,
            request=request,
            claims=claims,
            headers=headers,
            query=_query_without_token(request.query_string),
            user_id=None if user is None else _claim_text(user),
        )
        await ws.prepare(request)
        writer = asyncio.create_task(self._write_client(client))
        try:
            if await self._client_handshake(client, payload):
                await self._read_client(client)
        finally:
            self._forget_client(client, notify_server=True)
            if token_id is not None:
                self._negotiated.pop(token_id, None)
            if not writer.done():
                client.outbox.put_nowait(_Close(1000))
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer
            writer.cancel()
        return ws

    async def _write_client(self, client: ClientConnection) -> None:
        # the frame type follows the protocol, known only once the handshake is read
        await _write(client.ws, client.outbox, binary=None, client=client)

    async def _client_handshake(self, client: ClientConnection, payload: Mapping[str, Any]) -> bool:
        """Read up to the first 0x1E, learn the protocol, open the connection on an app server
        and pass every byte read so far on. False if the client never became a connection."""
        buffer = bytearray()
        timeout = DEFAULT_CLIENT_HANDSHAKE_TIMEOUT
        with contextlib.suppress(KeyError, ValueError, TypeError):
            timeout = min(max(float(payload["asrs.s.cht"]), 1.0), 30.0)
        try:
            async with asyncio.timeout(timeout):
                while RECORD_SEPARATOR not in buffer:
                    msg = await client.ws.receive()
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        return False
                    buffer += msg.data if isinstance(msg.data, bytes) else msg.data.encode("utf-8")
                    if len(buffer) > MAX_CLIENT_HANDSHAKE and RECORD_SEPARATOR not in buffer:
                        client.outbox.put_nowait(_Close(1009))
                        return False
        except TimeoutError:
            client.outbox.put_nowait(_Close(1000))
            return False
        end = buffer.index(RECORD_SEPARATOR)
        try:
            request = json.loads(bytes(buffer[:end]))
            protocol = request["protocol"]
            if not isinstance(protocol, str) or not isinstance(request["version"], int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            client.protocol = "json"
            self._handshake_error(client, BAD_HANDSHAKE_ERROR)
            return False
        client.protocol = protocol
        client.handshake = bytes(buffer[: end + 1])
        owner = self._route(client, payload)
        if owner is None:
            self._handshake_error(client, NO_SERVER_ERROR)
            return False
        client.owner = owner
        owner.clients.add(client.connection_id)
        self.clients[client.connection_id] = client
        owner.send(
            wire.OpenConnection(client.connection_id, client.claims, client.headers, client.query, protocol=protocol)
        )
        owner.send(wire.ConnectionData(client.connection_id, bytes(buffer)))
        self._notify()
        return True

    def _handshake_error(self, client: ClientConnection, error: str) -> None:
        """The service answering the hub handshake itself: only when no app server can."""
        body = json.dumps({"error": error}, separators=(",", ":")).encode("utf-8") + RECORD_SEPARATOR
        client.outbox.put_nowait(_Close(1000, body))

    def _route(self, client: ClientConnection, payload: Mapping[str, Any]) -> ServerConnection | None:
        sticky = payload.get("asrs.s.sn")
        if isinstance(sticky, str):
            preferred = self._pick_connection(client.hub, only=sticky)
            if preferred is not None:
                return preferred
            if str(payload.get("asrs.s.ssticky", "")).lower() == "required":
                return None
        return self._pick_connection(client.hub)

    def _pick_connection(
        self, hub: str, *, exclude: str | None = None, only: str | None = None
    ) -> ServerConnection | None:
        """Round-robin over the hub's server ids that take clients; within one, the connection
        carrying the fewest clients."""
        leaving = self._going_away.get(hub, {})
        candidates: list[list[ServerConnection]] = []
        for sid, conns in self._servers.get(hub, {}).items():
            if sid == exclude or sid in leaving or (only is not None and sid != only):
                continue
            usable = [c for c in conns if c.carries_clients]
            if usable:
                candidates.append(usable)
        if not candidates:
            return None
        turn = self._round_robin.get(hub, 0)
        self._round_robin[hub] = turn + 1
        usable = candidates[turn % len(candidates)]
        return min(usable, key=lambda c: len(c.clients))

    async def _read_client(self, client: ClientConnection) -> None:
        while True:
            msg = await client.ws.receive()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return
            if client.gone or client.owner is None:
                continue
            data = msg.data if isinstance(msg.data, bytes) else msg.data.encode("utf-8")
            client.owner.send(wire.ConnectionData(client.connection_id, data))

    def _forget_client(self, client: ClientConnection, *, notify_server: bool) -> None:
        """The client is no longer a connection: out of every index; its app server told
        (`notify_server`) unless the server itself ended it; pending client results failed."""
        if client.gone:
            return
        client.gone = True
        owner = client.owner
        if self.clients.get(client.connection_id) is client:
            del self.clients[client.connection_id]
        for group in list(client.groups):
            members = self._groups.get(client.hub, {}).get(group)
            if members is not None:
                members.discard(client.connection_id)
                if not members:
                    del self._groups[client.hub][group]
        if owner is not None:
            owner.clients.discard(client.connection_id)
            if notify_server:
                owner.send(wire.CloseConnection(client.connection_id, "", {}))
        for invocation_id, caller_id in client.pending.items():
            pending = self._pending.pop((client.connection_id, invocation_id), None)
            if owner is not None and caller_id == owner.server_id:
                continue  # the owner learns of the disconnect itself and fails its own calls
            caller = self._caller_connection(client.hub, caller_id, pending)
            if caller is not None:
                caller.send(
                    wire.ErrorCompletion(
                        invocation_id,
                        client.connection_id,
                        caller_id,
                        f"Connection '{client.connection_id}' disconnected.",
                    )
                )
        client.pending.clear()
        self._notify()

    # -- control API -----------------------------------------------------------------------------
    async def _http_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())

    async def _http_messages(self, request: web.Request) -> web.StreamResponse:
        server = request.query.get("server")
        if not server:
            return web.json_response({"error": "server is required"}, status=400)
        return web.json_response(self.message_types(server))

    async def _http_wait_servers(self, request: web.Request) -> web.StreamResponse:
        try:
            hub = request.query["hub"]
            count = int(request.query.get("count", "1"))
            connections = int(request.query.get("connections", "1"))
            timeout = float(request.query.get("timeout", "10"))
        except (KeyError, ValueError):
            return web.json_response({"error": "hub, and numeric count/connections/timeout"}, status=400)
        try:
            await self.wait_for_servers(hub, count, timeout, connections=connections)
        except TimeoutError:
            return web.json_response(self.state(), status=408)
        return web.json_response(self.state())

    async def _http_drop(self, request: web.Request) -> web.StreamResponse:
        server = request.query.get("server")
        if not server:
            return web.json_response({"error": "server is required"}, status=400)
        try:
            count = int(request.query["count"]) if "count" in request.query else None
        except ValueError:
            return web.json_response({"error": "count must be an integer"}, status=400)
        dropped = self.drop_server_connections(server, count, request.query.get("hub"))
        return web.json_response({"dropped": dropped})

    async def _http_ping(self, request: web.Request) -> web.StreamResponse:
        server = request.query.get("server")
        if not server:
            return web.json_response({"error": "server is required"}, status=400)
        try:
            strings = await request.json()
        except ValueError:
            strings = None
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            return web.json_response({"error": "the body must be a JSON list of strings"}, status=400)
        sent = self.send_ping(server, strings, request.query.get("hub"))
        return web.json_response({"sent": sent})

    def _all_server_lists(self) -> list[list[ServerConnection]]:
        return [conns for by_server in self._servers.values() for conns in by_server.values()]


# -- helpers -------------------------------------------------------------------------------------
async def _write(
    ws: web.WebSocketResponse,
    outbox: asyncio.Queue[bytes | _Close],
    *,
    binary: bool | None,
    client: ClientConnection | None = None,
) -> None:
    """Drain an outbox onto a socket in order; a `_Close` closes it after what came before."""
    try:
        while True:
            item = await outbox.get()
            is_binary = binary if client is None else client.binary
            if isinstance(item, _Close):
                if item.message:
                    await ws.send_frame(item.message, WSMsgType.BINARY if is_binary else WSMsgType.TEXT)
                await ws.close(code=item.code)
                return
            await ws.send_frame(item, WSMsgType.BINARY if is_binary else WSMsgType.TEXT)
    except (ConnectionError, RuntimeError):
        return  # the peer is gone; the reader notices


def _abort_ws(request: web.Request) -> None:
    """End a WebSocket at once, without a close frame, as a network fault would."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _query_without_token(query_string: str) -> str:
    """The client's query as it sent it, minus `access_token` (the service consumes it)."""
    parts = [p for p in query_string.split("&") if p and unquote_plus(p.partition("=")[0]) != "access_token"]
    return "&".join(parts)


# -- as a process --------------------------------------------------------------------------------
async def _serve(args: argparse.Namespace) -> None:
    double = ServiceDouble(
        args.key, ping_interval=args.ping_interval, serverless=args.serverless, entra_token=args.entra_token
    )
    double.drop_migrated_handshake_response = args.drop_migrated_handshake_response
    await double.start(args.port)
    print(f"ServiceDouble listening on {double.url}", flush=True)
    print(double.connection_string, flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        await double.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.azure_service", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="127.0.0.1 port; 0 picks a free one (printed)")
    parser.add_argument("--key", required=True, help="the AccessKey of the connection string")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="seconds between Ping[] to each server")
    parser.add_argument("--serverless", action="store_true", help="refuse app servers as Serverless mode does")
    parser.add_argument("--entra-token", help="a bearer to take as a Microsoft Entra ID access token")
    parser.add_argument(
        "--drop-migrated-handshake-response",
        action="store_true",
        help="drop a migrated-in server's first {}\\x1e instead of forwarding it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="azure_service %(levelname)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
