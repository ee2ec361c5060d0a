"""Long polling: each GET waits for pending records; POST sends; DELETE ends the connection."""

from __future__ import annotations

import asyncio
import logging
import time
from enum import Enum

from aiohttp import web

from ...protocol.negotiate import TransportKind
from ..connection import Connection, TransportFeatures

log = logging.getLogger(__name__)

FEATURES = TransportFeatures(
    TransportKind.LONG_POLLING, binary=True, inherent_keep_alive=True, reconnectable=False, polled=True
)


class _Wake(Enum):
    DATA = 1
    SUPERSEDED = 2
    CLOSED = 3
    TIMEOUT = 4


class LongPollingTransport:
    """Attached for the connection's whole life; active only while a poll is outstanding."""

    features = FEATURES

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._poll: asyncio.Future[_Wake] | None = None

    @property
    def active(self) -> bool:
        return self._poll is not None

    def _resolve(self, reason: _Wake) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(reason)

    def wake(self) -> None:
        self._resolve(_Wake.DATA)

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        self._resolve(_Wake.CLOSED)

    def drop(self) -> None:
        self._resolve(_Wake.CLOSED)

    async def poll(self, timeout: float) -> web.Response:
        connection = self.connection
        self._resolve(_Wake.SUPERSEDED)  # a newer poll ends the older with 204
        if connection.disposed:
            return _final(connection)
        if connection.has_pending:
            return _data(connection.take_pending())
        loop = asyncio.get_running_loop()
        poll = self._poll = loop.create_future()
        # a timer that resolves the poll, not wait_for: that wraps the future in a second one
        # and a callback, per poll, and every message sent over long polling ends a poll
        timer = loop.call_later(timeout, _expire, poll)
        try:
            reason = await poll
        finally:
            timer.cancel()
            if self._poll is poll:
                self._poll = None
                connection.last_active = time.monotonic()
        if reason is _Wake.TIMEOUT:
            return web.Response(status=200)  # empty: the client polls again
        if reason is _Wake.SUPERSEDED:
            return web.Response(status=204)
        if reason is _Wake.CLOSED:
            return _final(connection)
        return _data(connection.take_pending()) if connection.has_pending else web.Response(status=200)


def _expire(poll: asyncio.Future[_Wake]) -> None:
    if not poll.done():
        poll.set_result(_Wake.TIMEOUT)


def _data(body: bytes) -> web.Response:
    return web.Response(status=200, body=body, content_type="application/octet-stream")


def _final(connection: Connection) -> web.Response:
    """The last records (a Close message) go out before the 204 that ends polling."""
    if connection.has_pending:
        return _data(connection.take_pending())
    return web.Response(status=204)
