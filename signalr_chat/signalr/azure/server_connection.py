"""The app server's WebSockets to Azure SignalR Service: N per hub, kept open for good.

Each server connection does the service handshake, reads frames as a byte stream, pings
every few seconds and gives up on a service that says nothing for `service_timeout`. The
pool restarts a lost connection with the SDK's back-off (1, 2, 4 … 60 s, plus up to a
second of jitter, one probe at a time), and a refusal (a wrong key, a serverless service)
is logged once, not once per retry, and shows in `problem` for readiness.

Writes are batched: every frame queued in one loop turn leaves in one WebSocket message,
and a client's pending records are taken only when its server connection can take them,
so a service that reads slowly slows its senders down (the client's outbox fills and the
hub's usual backpressure applies) instead of growing a buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType

from ..connections.background import BackgroundTasks
from ..connections.eager import start_eagerly
from ..untrusted import Untrusted
from .client_connection import ServiceTransport
from .wire import (
    Ack,
    AckStatus,
    ConnectionType,
    FrameReader,
    GracefulShutdownMode,
    HandshakeRequest,
    HandshakeResponse,
    MigrationLevel,
    Ping,
    ServiceError,
    frame,
    keepalive_ping,
    shutdown_ping,
    status_ping,
)

if TYPE_CHECKING:
    from .options import ServiceOptions

log = logging.getLogger(__name__)

#: The server connection whose client's message is being handled: what a hub method sends goes
#: over it, so its sends keep their order at the service, as the SDK's ClientConnectionScope does.
#: Set once in each connection's read loop; tasks started from there (hub methods) inherit it.
CURRENT: contextvars.ContextVar[ServiceConnection | None] = contextvars.ContextVar("asrs_connection", default=None)

#: How long the service has to answer the handshake, as the SDK waits.
HANDSHAKE_TIMEOUT = 15.0
#: A connection whose unsent frames pass this waits for the service before taking more.
HIGH_WATER = 1024 * 1024


def backoff(retry: int) -> float:
    """The SDK's delay before retry n: 1, 2, 4, 8, 16, 32, then 60 s, each plus 0-1 s of jitter."""
    return float(min(2**retry, 60)) + random.random()


class State(Enum):
    """Where a ServiceConnection is in its life: only a CONNECTED one takes writes; DISCONNECTING still reads."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: ServiceError received: the service wants no more writes; reading goes on until it closes.
    DISCONNECTING = "disconnecting"
    CLOSED = "closed"


class Refused(Exception):
    """The service would not take this server connection (its answer, or the HTTP status)."""


@dataclass(frozen=True, slots=True)
class Bearer:
    """Makes the Authorization value for a new server connection (an access-key JWT or an Entra token)."""

    make: Callable[[], Awaitable[str]]


class ServiceConnection:
    """One WebSocket to the service for one hub."""

    def __init__(self, pool: ServiceConnectionPool, connection_type: ConnectionType, target: str | None) -> None:
        self.pool = pool
        self.id = str(uuid.uuid4())
        self.connection_type = connection_type
        self.target = target
        self.state = State.CONNECTING
        self.clients: dict[str, ServiceTransport] = {}
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._out = bytearray()
        self._dirty: list[ServiceTransport] = []
        self._handle: asyncio.Handle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._room: asyncio.Future[None] | None = None
        now = time.monotonic()
        self.last_received = now
        self.last_ping = now
        #: Set when the service acknowledges our shutdown ping.
        self.finack = asyncio.Event()
        #: The service said this connection is going away (flow control Offline): others carry new writes.
        self.offline = False
        self._aborting = False
        #: The handshake succeeded in this life (a refusal or an unreachable service backs off).
        self.was_connected = False

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    # -- writing ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue whole frames; once the service said ServiceError, or the socket is gone, nothing."""
        if self.state is not State.CONNECTED:
            return
        self._out += data
        self._soon()

    def write_client_pending(self, transport: ServiceTransport) -> None:
        """A client's queued records, now: what is written for that client next must follow them."""
        transport.take_frames(self._out)
        if self._out:
            self._soon()

    def schedule(self, transport: ServiceTransport) -> None:
        self._dirty.append(transport)
        self._soon()

    def forget(self, transport: ServiceTransport) -> None:
        self.clients.pop(transport.connection.id, None)
        self.pool.forget(transport)

    def _soon(self) -> None:
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._handle = None
        socket = self._socket
        if socket is None or self._writing is not None:
            return  # a write that waits for the service finishes first; it flushes again then
        dirty, self._dirty = self._dirty, []
        out = self._out
        for transport in dirty:
            transport.take_frames(out)
        if not out or socket.closed:
            return
        data = bytes(out)
        out.clear()
        try:
            writing = start_eagerly(socket.send_frame(data, WSMsgType.BINARY))
        except (ConnectionError, RuntimeError) as exc:  # the read loop sees the socket end
            log.debug("server connection %s: write failed: %s", self.id, exc)
            return
        if writing is not None:
            self._writing = writing
            writing.add_done_callback(self._written)
        self._free_room()

    def _written(self, writing: asyncio.Task[None]) -> None:
        self._writing = None
        if not writing.cancelled() and writing.exception() is not None:
            log.debug("server connection %s: write failed: %s", self.id, writing.exception())
            return
        if self._out or self._dirty:
            self._soon()
        self._free_room()

    def room(self) -> asyncio.Future[None] | None:
        """None while the service keeps up with us; else a future set once it has."""
        if len(self._out) <= HIGH_WATER or self._socket is None:
            return None
        if self._room is None:
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def _free_room(self) -> None:
        room = self._room
        if room is not None and len(self._out) <= HIGH_WATER:
            self._room = None
            if not room.done():
                room.set_result(None)

    # -- one life of the socket ---------------------------------------------------------
    async def run(self, session: aiohttp.ClientSession) -> None:
        """Connect, handshake, then serve until the socket ends. Raises Refused when refused."""
        pool = self.pool
        options = pool.options
        url = pool.endpoint.server_url(pool.hub, self.id, self.target)
        headers = {
            "Authorization": f"Bearer {await pool.bearer.make()}",
            "X-ASRS-Server-Id": pool.server_id,
            "Asrs-User-Agent": options.user_agent,
            "X-Requested-With": "XMLHttpRequest",
        }
        try:
            socket = await session.ws_connect(url, headers=headers, autoping=True, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise Refused(f"HTTP {exc.status} from {pool.endpoint.server_endpoint}") from None
        reader = FrameReader()
        try:
            migration = MigrationLevel.SHUTDOWN_ONLY if options.migrate_on_shutdown else MigrationLevel.OFF
            request = HandshakeRequest(
                1,
                connection_type=self.connection_type,
                target=self.target or "",
                migration_level=migration,
                allow_stateful_reconnects=False,
            )
            await socket.send_bytes(frame(request))
            first = await self._handshake(socket, reader)
            self._socket = socket
            self.state = State.CONNECTED
            CURRENT.set(self)
            self.last_received = self.last_ping = time.monotonic()
            pool.connection_up(self)
            for message in first:
                await pool.handle(self, message)
            async for received in socket:
                if received.type is not WSMsgType.BINARY:
                    if received.type is WSMsgType.ERROR:
                        log.debug("server connection %s: %s", self.id, socket.exception())
                        break
                    continue
                self.last_received = time.monotonic()
                for message in reader.feed(received.data):
                    await pool.handle(self, message)
        finally:
            self.state = State.CLOSED
            self._socket = None
            if self._writing is not None:
                self._writing.cancel()
            if self._room is not None and not self._room.done():
                self._room.set_result(None)  # senders go on; the frames are lost with the socket
            with contextlib.suppress(Exception):
                await socket.close()
            pool.connection_down(self)

    async def _handshake(self, socket: aiohttp.ClientWebSocketResponse, reader: FrameReader) -> list[Any]:
        """The service's HandshakeResponse; returns whatever arrived with it."""
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while True:
                received = await socket.receive()
                if received.type is not WSMsgType.BINARY:
                    if received.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                        raise Refused("the service closed the connection during the handshake")
                    continue
                messages = reader.feed(received.data)
                if not messages:
                    continue
                first, rest = messages[0], messages[1:]
                if not isinstance(first, HandshakeResponse):
                    raise Refused(f"the service answered the handshake with {type(first).__name__}")
                if first.error_message:
                    raise Refused(first.error_message)
                return rest

    def ping(self, message: Ping) -> None:
        self.write(frame(message))

    def abort(self) -> None:
        """Close the socket of a service gone silent (aiohttp cuts it if the close goes unanswered).

        The read loop then ends and the pool reconnects.
        """
        socket = self._socket
        if socket is not None and not socket.closed and not self._aborting:
            self._aborting = True
            self.pool.tasks.spawn(socket.close())

    def service_error(self, message: ServiceError) -> None:
        log.warning("server connection %s: service error: %s", self.id, Untrusted(message.error_message))
        if message.error_message:
            self.state = State.DISCONNECTING


class ServiceConnectionPool:
    """The server connections of one hub, their restarts, acks, and what the service says to them."""

    def __init__(
        self,
        *,
        hub: str,
        endpoint: Any,
        bearer: Bearer,
        server_id: str,
        options: ServiceOptions,
        handler: Callable[[ServiceConnection, Any], Awaitable[None] | None],
        delay: Callable[[int], float] = backoff,
    ) -> None:
        self.hub = hub
        self.endpoint = endpoint
        self.bearer = bearer
        self.server_id = server_id
        self.options = options
        self._handler = handler
        self._delay = delay
        self.connections: list[ServiceConnection] = []
        #: Every client connection the service carries to us for this hub, by connection id.
        self.clients: dict[str, ServiceTransport] = {}
        #: One task per server connection, restarting it for good (an on-demand one lives once).
        self._keepers = BackgroundTasks("server connection")
        self._session: aiohttp.ClientSession | None = None
        self._retry = 0
        self._probe = asyncio.Lock()
        self._ack_ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future[Ack]] = {}
        self._beat: asyncio.TimerHandle | None = None
        self._last_status = 0.0
        #: Why the pool has no connection (None while one is up, or before the first try).
        self.problem: str | None = "not connected yet"
        self._logged_problem: str | None = None
        self._stopping = False
        #: Sockets closing after the service went silent.
        self.tasks = BackgroundTasks("service")

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._stopping = False
        for _ in range(self.options.connection_count):
            self._keepers.spawn(self._keep(ConnectionType.DEFAULT, None))
        self._beat = asyncio.get_running_loop().call_later(1.0, self._heartbeat)

    async def stop(self) -> None:
        self._stopping = True
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        await self._keepers.aclose()
        await self.tasks.aclose()
        for future in self._acks.values():
            if not future.done():
                future.cancel()

    def open_on_demand(self, target: str) -> None:
        """The service asks for one more connection to one of its instances (rebalancing)."""
        limit = self.options.max_connection_count
        if limit is not None and len(self.connections) >= limit:
            return
        self._keepers.spawn(self._keep(ConnectionType.ON_DEMAND, target))

    async def _keep(self, connection_type: ConnectionType, target: str | None) -> None:
        """One connection, restarted for good (an on-demand one only lives once)."""
        assert self._session is not None
        while not self._stopping:
            connection = ServiceConnection(self, connection_type, target)
            self.connections.append(connection)
            try:
                if self._retry:
                    async with self._probe:  # one probe at a time while the service is away
                        await self._run(connection)
                else:
                    await self._run(connection)
            finally:
                self.connections.remove(connection)
            if connection_type is ConnectionType.ON_DEMAND or self._stopping:
                return
            if not connection.was_connected:
                await asyncio.sleep(self._delay(self._retry))
                self._retry += 1

    async def _run(self, connection: ServiceConnection) -> None:
        assert self._session is not None
        try:
            await connection.run(self._session)
        except asyncio.CancelledError:
            raise
        except Refused as exc:
            self._failed(f"refused by Azure SignalR Service: {exc}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._failed(f"cannot reach Azure SignalR Service at {self.endpoint.server_endpoint}: {exc!r}")
        except Exception as exc:  # a bug must not end the restarts: log it once, retry
            log.exception("server connection %s for hub %s failed", connection.id, self.hub)
            self._failed(f"server connection failed: {exc!r}")

    def _failed(self, problem: str) -> None:
        if not self.connected:
            self.problem = problem
        if problem != self._logged_problem:
            self._logged_problem = problem
            log.error("hub %s: %s (retrying with back-off)", self.hub, problem)
        else:
            log.debug("hub %s: %s", self.hub, problem)

    def connection_up(self, connection: ServiceConnection) -> None:
        connection.was_connected = True
        self._retry = 0
        if self.problem is not None and self._logged_problem is not None:
            log.info("hub %s: connected to Azure SignalR Service again", self.hub)
        self.problem = None
        self._logged_problem = None

    def connection_down(self, connection: ServiceConnection) -> None:
        """The service drops the clients of a lost connection; so do we."""
        for transport in list(connection.clients.values()):
            transport.closed_by_service(None)
            application = transport.connection.application
            if application is not None and not transport.connection.disposed:
                lost = ConnectionError("The server connection to the service was lost.")
                transport.connection.spawn(application.on_transport_ended(lost))
        connection.clients.clear()
        if not self.connected and not self._stopping:
            self.problem = "no server connection to Azure SignalR Service is up"

    # -- state --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return any(c.connected for c in self.connections)

    def live(self) -> list[ServiceConnection]:
        return [
            c
            for c in self.connections
            if c.connected and not c.offline and c.connection_type is not ConnectionType.WEAK
        ]

    def any(self) -> ServiceConnection:
        """The caller's connection inside a hub method (so its sends keep their order), else a
        random connected one."""
        current = CURRENT.get()
        if current is not None and current.pool is self and current.connected and not current.offline:
            return current
        live = self.live()
        if not live:
            raise ConnectionError(self.problem or "no server connection to Azure SignalR Service is up")
        return live[0] if len(live) == 1 else random.choice(live)

    def carrier_of(self, connection_id: str) -> ServiceConnection | None:
        transport = self.clients.get(connection_id)
        if transport is None:
            return None
        carrier = transport.carrier
        return carrier if isinstance(carrier, ServiceConnection) and carrier.connected else None

    def forget(self, transport: ServiceTransport) -> None:
        if self.clients.get(transport.connection.id) is transport:
            del self.clients[transport.connection.id]

    # -- acks ---------------------------------------------------------------------------
    def new_ack(self) -> tuple[int, asyncio.Future[Ack]]:
        ack_id = next(self._ack_ids)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        return ack_id, future

    async def wait_ack(self, ack_id: int, future: asyncio.Future[Ack]) -> Ack:
        try:
            return await asyncio.wait_for(future, self.options.ack_timeout)
        finally:
            self._acks.pop(ack_id, None)

    def acked(self, message: Ack) -> None:
        future = self._acks.get(message.ack_id)
        if future is not None and not future.done():
            future.set_result(message)

    # -- keep-alive, service timeout, status --------------------------------------------
    def _heartbeat(self) -> None:
        now = time.monotonic()
        options = self.options
        in_hub = len(self.clients)
        for connection in self.live():
            if now - connection.last_received > options.service_timeout:
                log.warning(
                    "server connection %s: nothing from the service for %.0f s",
                    connection.id,
                    now - connection.last_received,
                )
                connection.abort()
            elif now - connection.last_ping >= options.keep_alive_interval:
                connection.last_ping = now
                connection.ping(keepalive_ping(in_hub, len(connection.clients)))
        if now - self._last_status >= options.status_interval:
            live = self.live()
            if live:
                self._last_status = now
                random.choice(live).ping(status_ping())
        if not self._stopping:
            self._beat = asyncio.get_running_loop().call_later(1.0, self._heartbeat)

    async def handle(self, connection: ServiceConnection, message: Any) -> None:
        waiting = self._handler(connection, message)
        if waiting is not None:
            await waiting

    # -- graceful shutdown --------------------------------------------------------------
    async def shutdown(self, timeout: float) -> None:
        """The service's shutdown handshake: fin on every connection until finack, then wait
        (within `timeout`) for the clients to move to other servers or leave."""
        deadline = time.monotonic() + timeout
        fin = shutdown_ping(
            GracefulShutdownMode.MIGRATE_CLIENTS if self.options.migrate_on_shutdown else GracefulShutdownMode.OFF
        )
        pending = [c for c in self.live() if c.connection_type is not ConnectionType.WEAK]
        for _ in range(24):
            pending = [c for c in pending if c.connected and not c.finack.is_set()]
            if not pending or time.monotonic() >= deadline:
                break
            for connection in pending:
                connection.ping(fin)
            waits = [asyncio.ensure_future(c.finack.wait()) for c in pending]
            await asyncio.wait(waits, timeout=min(5.0, max(0.0, deadline - time.monotonic())))
            for wait in waits:
                wait.cancel()
        while self.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def all_clients(self) -> Iterable[ServiceTransport]:
        return list(self.clients.values())


__all__ = ["AckStatus", "Bearer", "Refused", "ServiceConnection", "ServiceConnectionPool", "State", "backoff"]
