"""Server-Sent Events: server-to-client only; the client sends with POST."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ...protocol.negotiate import TransportKind
from ..connection import Connection, TransportFeatures

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache,no-store",
    "Pragma": "no-cache",
    "Content-Encoding": "identity",
    "X-Accel-Buffering": "no",
}
#: Sent and flushed at once: the client's start() waits for the first bytes.
PREAMBLE = b":\r\n"
FEATURES = TransportFeatures(
    TransportKind.SERVER_SENT_EVENTS, binary=False, inherent_keep_alive=False, reconnectable=False, polled=False
)


def format_event(payload: bytes) -> bytes:
    """One unnamed event: every line of the payload becomes a `data:` line."""
    if b"\n" not in payload:  # every JSON record: encoders escape line breaks
        return b"data: " + payload.removesuffix(b"\r") + b"\r\n\r\n"
    lines = payload.split(b"\n")
    # a stray \r ends a line for an EventSource parser too, so it must not survive
    return b"".join(b"data: " + line.removesuffix(b"\r") + b"\r\n" for line in lines) + b"\r\n"


class ServerSentEventsTransport:
    """A connection's Server-Sent Events stream while it is open: what is pending leaves as one event per
    wake-up; text only, and the client sends by POST."""

    features = FEATURES
    active = True

    def __init__(self, connection: Connection, request: web.Request) -> None:
        self.connection = connection
        self.request = request
        self._ready = asyncio.Event()
        self._closing = False
        self.finished = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        self._ready.set()

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        self._closing = True
        self._ready.set()
        await asyncio.shield(self.finished)

    def drop(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()


async def serve(request: web.Request, connection: Connection, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={**HEADERS, **headers})
    await response.prepare(request)
    await response.write(PREAMBLE)
    application = connection.application
    assert application is not None
    transport = ServerSentEventsTransport(connection, request)
    connection.attach(transport)
    error: BaseException | None = None
    try:
        while True:
            await transport._ready.wait()
            transport._ready.clear()
            if connection.has_pending:
                await response.write(format_event(connection.take_pending()))
            if transport._closing:
                break
    except (ConnectionError, asyncio.CancelledError) as exc:  # the client dropped the stream
        error = None if isinstance(exc, asyncio.CancelledError) else exc
    finally:
        connection.detach(transport)
        if not transport.finished.done():
            transport.finished.set_result(None)
        if not connection.disposed:
            connection.spawn(application.on_transport_ended(error))
    return response
