"""Raw connections, as ASP.NET Core's `MapConnectionHandler<T>`: bytes or text, no hub protocol.

The same negotiate and the same three transports as a hub, so the stock client's
`HttpConnection` works against it; what the bytes mean is the handler's business.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from ..protocol.negotiate import TransportKind
from .auth import TokenValidator, User
from .connection import Connection, RequestInfo
from .endpoint import ConnectionEndpoint
from .options import ConnectionOptions

log = logging.getLogger(__name__)


class ConnectionContext:
    """One raw connection as its handler sees it."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def connection_id(self) -> str:
        return self._connection.id

    @property
    def user(self) -> User | None:
        return self._connection.user

    @property
    def items(self) -> dict[str, Any]:
        return self._connection.items

    @property
    def request(self) -> RequestInfo | None:
        return self._connection.request

    @property
    def transport(self) -> TransportKind | None:
        return self._connection.transport_kind

    def send(self, data: bytes | str) -> bool:
        """Queue data for the client; False when the connection is gone or overflowing."""
        return self._connection.send(data.encode() if isinstance(data, str) else data)

    async def close(self) -> None:
        """Flush what is pending, then end the connection."""
        await self._connection.dispose()


class ConnectionHandler:
    """Subclass and override; one instance serves every connection of its endpoint.

    `binary = True` sends Binary WebSocket frames (the client must start with
    TransferFormat.Binary); the default is Text, which every transport carries.
    """

    binary = False

    async def on_connected(self, connection: ConnectionContext) -> None:
        """Runs before the connection's first data is delivered."""

    async def on_received(self, connection: ConnectionContext, data: bytes) -> None:
        """Data as the transport delivered it: one WebSocket message or one POST body."""

    async def on_disconnected(self, connection: ConnectionContext, exception: BaseException | None) -> None:
        """Runs once when the connection ends."""


class _HandlerApplication:
    """Adapts a ConnectionHandler to the Application a connection runs."""

    __slots__ = ("_connected", "_context", "_handler", "connection")

    def __init__(self, connection: Connection, handler: ConnectionHandler) -> None:
        self.connection = connection
        self._handler = handler
        self._context = ConnectionContext(connection)
        self._connected: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.connection.binary = self._handler.binary
        self._connected = self.connection.spawn(self._handler.on_connected(self._context))

    async def receive(self, data: bytes) -> None:
        if self._connected is not None:
            await self._connected
        if not self.connection.disposed:
            await self._handler.on_received(self._context, data)

    async def on_transport_ended(self, exception: BaseException | None) -> None:
        await self.connection.dispose(exception)

    def on_closing(self) -> None:
        """Nothing to stop early: `on_closed` tells the handler."""

    @property
    def accepts_reconnect(self) -> bool:
        return False

    def on_reconnected(self) -> None:
        """Never called: raw connections do not offer stateful reconnect."""

    async def on_closed(self, error: BaseException | None) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.cancel()
        await self._handler.on_disconnected(self._context, error)

    def tick(self, now: float) -> None:
        """No keep-alive of its own: WebSocket pings and polls show the client is there."""

    def close_requested(self) -> None:
        """No close message of its own: the connection ends, as `ConnectionContext.close()`."""
        self.connection.spawn(self.connection.dispose())

    def user_refreshed(self, user: User) -> None:
        """Nothing to do: `ConnectionContext.user` reads the connection's user as it is now."""


def map_connection_handler(
    app: web.Application,
    path: str,
    handler: ConnectionHandler,
    *,
    options: ConnectionOptions | None = None,
    validator: TokenValidator | None = None,
    require_user: bool = False,
) -> ConnectionEndpoint:
    """Serve raw connections at `path` and `path/negotiate`, every transport."""
    endpoint = ConnectionEndpoint(
        lambda connection: _HandlerApplication(connection, handler),
        options=options,
        validator=validator,
        require_user=require_user,
    )
    endpoint.route(app, path)
    app.on_shutdown.append(endpoint.shutdown)
    return endpoint
