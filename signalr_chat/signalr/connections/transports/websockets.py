"""WebSockets: JSON in Text frames, MessagePack in Binary frames, pending records batched per frame."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from ...protocol.negotiate import TransportKind
from ..connection import Connection, TransportFeatures
from ..eager import start_eagerly

log = logging.getLogger(__name__)

#: How long a closing socket may take to flush and finish the close handshake.
CLOSE_TIMEOUT = 5.0
#: Records batched into one frame stop here (a bigger record still goes alone): clients cap
#: the frames they accept (aiohttp at 4 MB), and a backlog must not become one huge frame.
MAX_BATCH = 64 * 1024
FEATURES = TransportFeatures(
    TransportKind.WEBSOCKETS, binary=True, inherent_keep_alive=False, reconnectable=True, polled=False
)


class FlushScheduler:
    """Writes every woken socket once, at the end of the loop turn that woke it.

    One callback per turn for all sockets, not a task per socket per message: the records a
    turn queues for a connection (a broadcast burst, a Completion and an event) leave in one
    frame, and a broadcast to N sockets costs N synchronous writes.
    """

    __slots__ = ("_dirty", "_handle")

    def __init__(self) -> None:
        self._dirty: list[WebSocketTransport] = []
        self._handle: asyncio.Handle | None = None

    def add(self, transport: WebSocketTransport) -> None:
        self._dirty.append(transport)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._handle = None
        for transport in dirty:
            transport.flush_now()


class WebSocketTransport:
    """A connection's WebSocket while it is open: its pending records leave in as few frames as fit, written
    by the FlushScheduler at the end of the turn; a write that must wait holds the rest behind it."""

    features = FEATURES
    active = True

    def __init__(
        self, connection: Connection, socket: web.WebSocketResponse, request: web.Request, scheduler: FlushScheduler
    ) -> None:
        self.connection = connection
        self.socket = socket
        self.request = request
        self._scheduler = scheduler
        self._woken = False
        #: A write that had to wait for the peer to read; later records wait for it.
        self._writing: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            self._scheduler.add(self)

    def flush_now(self) -> None:
        """Pending records in as few frames as fit, written synchronously unless the socket is full."""
        self._woken = False
        connection, socket = self.connection, self.socket
        opcode = WSMsgType.BINARY if connection.binary else WSMsgType.TEXT
        while self._writing is None and connection.has_pending and not socket.closed:
            try:
                writing = start_eagerly(socket.send_frame(connection.take_pending(MAX_BATCH), opcode))
            except (ConnectionError, RuntimeError) as exc:  # peer gone: the read loop ends the transport
                log.debug("connection %s: send failed: %s", connection.id, exc)
                return
            if writing is not None:
                self._writing = writing
                writing.add_done_callback(self._written)

    def _written(self, writing: asyncio.Task[None]) -> None:
        self._writing = None
        if not writing.cancelled() and (exc := writing.exception()) is not None:
            log.debug("connection %s: send failed: %s", self.connection.id, exc)
        elif self.connection.has_pending:
            self.wake()

    async def _flush(self) -> None:
        """Everything still pending, waiting for the peer to read when it must: for closing."""
        self.flush_now()
        while (writing := self._writing) is not None:
            await asyncio.wait((writing,))
            self.flush_now()

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        """Flush, then the close handshake; a peer that stops reading is cut off instead."""
        if going_away:
            code = WSCloseCode.GOING_AWAY
        elif error:
            code = WSCloseCode.INTERNAL_ERROR
        else:
            code = WSCloseCode.OK
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._flush()
                await self.socket.close(code=code)
        except TimeoutError:
            log.debug("connection %s: close timed out, dropping", self.connection.id)
            self.drop()

    def drop(self) -> None:
        """Cut the TCP connection without a close handshake, as a failing network would."""
        if self.request.transport is not None:
            self.request.transport.abort()


async def serve(
    request: web.Request,
    connection: Connection,
    socket: web.WebSocketResponse,
    scheduler: FlushScheduler,
    on_open: Callable[[], None] | None = None,
) -> web.WebSocketResponse:
    """Run one socket for `connection` until it closes; `on_open` runs once it is attached."""
    await socket.prepare(request)
    application = connection.application
    assert application is not None
    transport = WebSocketTransport(connection, socket, request, scheduler)
    connection.attach(transport)
    if on_open is not None:
        on_open()
    error: BaseException | None = None
    try:
        async for message in socket:
            if message.type is WSMsgType.TEXT or message.type is WSMsgType.BINARY:
                await application.receive(message.data)
            elif message.type is WSMsgType.ERROR:
                error = socket.exception()
                break
    except Exception as exc:  # a failing read ends this socket, never the server
        error = exc
    finally:
        connection.detach(transport)
        if not connection.disposed:
            connection.spawn(application.on_transport_ended(error))
    return socket
