"""WebSockets: JSON in Text frames, MessagePack in Binary frames, pending records batched per frame."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from ..background import spawn
from ..connection import Connection
from ..options import TransportKind

log = logging.getLogger(__name__)

#: How long a closing socket may take to flush and finish the close handshake.
CLOSE_TIMEOUT = 5.0


class WebSocketTransport:
    kind = TransportKind.WEBSOCKETS

    def __init__(self, connection: Connection, socket: web.WebSocketResponse, request: web.Request) -> None:
        self.connection = connection
        self.socket = socket
        self.request = request
        self._flusher: asyncio.Task[None] | None = None

    def wake(self) -> None:
        # Flushing on the next loop turn lets every record queued in this turn share one frame.
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        connection, socket = self.connection, self.socket
        try:
            while connection.has_pending and not socket.closed:
                opcode = WSMsgType.BINARY if connection.binary else WSMsgType.TEXT
                await socket.send_frame(connection.take_pending(), opcode)
        except (ConnectionError, RuntimeError) as exc:  # peer gone: the read loop ends the transport
            log.debug("connection %s: send failed: %s", connection.id, exc)
        finally:
            self._flusher = None

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
                flusher = self._flusher
                if flusher is not None and flusher is not asyncio.current_task():
                    await flusher
                if self.connection.has_pending and not self.socket.closed:
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
    on_open: Callable[[], None] | None = None,
) -> web.WebSocketResponse:
    """Run one socket for `connection` until it closes; `on_open` runs once it is attached."""
    await socket.prepare(request)
    application = connection.application
    assert application is not None
    transport = WebSocketTransport(connection, socket, request)
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
        if not connection.closed:
            spawn(application.transport_ended(error))
    return socket
