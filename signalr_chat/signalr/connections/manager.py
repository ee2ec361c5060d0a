"""All live connections of one hub endpoint, and the one heartbeat that times them out.

A single periodic callback drives keep-alive pings, client and handshake timeouts, the
disposal of abandoned connections and the closing of connections whose authentication
expired, so idle connections cost no timers of their own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable, Iterator

from .background import BackgroundTasks
from .connection import Connection
from .options import ConnectionOptions
from .telemetry import ConnectionTelemetry

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
#: At shutdown, how long the connections' background work (a disposal under way, a hub
#: method its caller has left) may take to end on its own before it is cancelled.
SHUTDOWN_GRACE = 1.0


def new_id() -> str:
    """URL-safe, so the token can travel in `?id=` without encoding."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


class ConnectionManager:
    """An endpoint's live connections and the one heartbeat that times them all out; the owner of their
    background tasks, which `shutdown` ends."""

    def __init__(
        self,
        options: ConnectionOptions,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self._clock = clock
        #: Unix time, what authentication expiries (a JWT's `exp`) are told in.
        self.wall_clock = wall_clock
        self._by_token: dict[str, Connection] = {}
        self._handle: asyncio.TimerHandle | None = None
        self.telemetry: ConnectionTelemetry | None = None
        #: Everything run in the background on behalf of this endpoint's connections.
        self.tasks = BackgroundTasks("connection")

    def create(
        self, negotiate_version: int, *, stateful_reconnect: bool = False, connection_id: str | None = None
    ) -> Connection:
        """A new connection; `connection_id` when another party named it (Azure SignalR Service does)."""
        if connection_id is None:
            connection_id = new_id()
        token = new_id() if negotiate_version >= 1 else connection_id
        connection = Connection(
            connection_id,
            token,
            negotiate_version,
            stateful_reconnect=stateful_reconnect,
            max_buffer_size=self.options.max_buffer_size,
            owner=self,
        )
        if self.telemetry is not None:
            connection.telemetry = self.telemetry
            self.telemetry.connection_created(connection)
        self._by_token[token] = connection
        self._ensure_heartbeat()
        return connection

    def get(self, token: str) -> Connection | None:
        return self._by_token.get(token)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_token.values()))

    def __len__(self) -> int:
        return len(self._by_token)

    def on_disposed(self, connection: Connection) -> None:
        """The connection has ended (ConnectionOwner): forget it, unless a poll must collect its last records."""
        if self.telemetry is not None:
            self.telemetry.connection_ended(connection)
        if connection.features is not None and connection.features.polled:
            # Stays registered until a poll collects its last records (a Close message) and
            # sees 204, or the client's DELETE arrives (202), or the disconnect timeout.
            connection.last_active = self._clock()
            return
        self.forget(connection)

    def forget(self, connection: Connection) -> None:
        self._by_token.pop(connection.token, None)

    def _ensure_heartbeat(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(HEARTBEAT_INTERVAL, self._beat)

    def _beat(self) -> None:
        self._handle = None
        self.tick(self._clock())
        if self._by_token:
            self._ensure_heartbeat()

    def tick(self, now: float, wall: float | None = None) -> None:
        """One heartbeat at time `now` (monotonic) and `wall` (Unix time, for authentication
        expiry; the wall clock when None); tests call it with clocks of their own."""
        timeout = self.options.disconnect_timeout
        expiring = self.options.close_on_authentication_expiration
        if expiring and wall is None:
            wall = self.wall_clock()
        for connection in list(self._by_token.values()):
            if not connection.active and now - connection.last_active > timeout:
                if connection.disposed:
                    self.forget(connection)
                    continue
                log.debug("connection %s: inactive for %.0f s, disposing", connection.id, timeout)
                if self.telemetry is not None:
                    self.telemetry.timed_out(connection)
                self.tasks.spawn(connection.dispose())
                continue
            application = connection.application
            if application is not None:
                application.tick(now)
            if (
                expiring
                and wall is not None
                and not connection.close_requested
                and not connection.disposed
                and connection.authentication_expired(wall)
            ):
                # as ASP.NET Core's HttpConnectionManager: ask the application to close, once
                connection.close_requested = True
                log.info("connection %s: authentication expired, closing", connection.id)
                if application is not None:
                    application.close_requested()
                else:  # negotiated, never started: nothing to tell
                    self.tasks.spawn(connection.dispose())

    async def shutdown(self) -> None:
        """Graceful stop: every connection closes with going-away, so clients reconnect elsewhere;
        then the work still running for them gets `SHUTDOWN_GRACE` to end before it is cancelled."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await asyncio.gather(
            *(c.dispose(going_away=True) for c in list(self._by_token.values())),
            return_exceptions=True,
        )
        await self.tasks.aclose(SHUTDOWN_GRACE)
