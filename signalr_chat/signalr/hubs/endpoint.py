"""Maps a hub onto an aiohttp app: a connection endpoint whose application is the hub layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..connections import Connection, ConnectionEndpoint, TokenValidator
from ..connections.telemetry import ConnectionTelemetry
from .clients import GroupManager, HubClients
from .dispatcher import HubDispatcher, HubFactory
from .hub import Hub, default_hub_name, requires_user
from .hub_connection import HubConnectionContext, HubConnectionState
from .in_memory import InMemoryHubLifetimeManager
from .lifetime import HubLifetimeManager
from .options import HubOptions
from .telemetry import HubTelemetry


class HubContext:
    """Reach a hub's clients from outside a hub method (background jobs, HTTP handlers)."""

    def __init__(self, lifetime: HubLifetimeManager, options: HubOptions) -> None:
        self.clients = HubClients(lifetime, options)
        self.groups = GroupManager(lifetime)


__all__ = ["HubContext", "HubEndpoint", "default_hub_name", "map_hub"]


class HubEndpoint:
    """A mapped hub (what `map_hub` returns): a connection endpoint whose application is the hub layer, its
    lifetime manager and `hub_context`, and what the graceful drain asks of it."""

    def __init__(
        self,
        hub_type: type[Hub],
        *,
        options: HubOptions | None = None,
        lifetime: HubLifetimeManager | None = None,
        validator: TokenValidator | None = None,
        factory: HubFactory | None = None,
        hub_name: str | None = None,
        telemetry: tuple[HubTelemetry | None, ConnectionTelemetry | None] | None = None,
    ) -> None:
        self.options = options = options or HubOptions()
        self.lifetime = lifetime or InMemoryHubLifetimeManager()
        name = hub_name or default_hub_name(hub_type)
        self.lifetime.configure(name, options.protocols)
        # None unless an OpenTelemetry SDK is configured: given, or the global providers
        hub_telemetry, connection_telemetry = telemetry or (HubTelemetry.create(), ConnectionTelemetry.create())
        self.dispatcher = HubDispatcher(
            hub_type, self.lifetime, options, factory, hub_name=name, telemetry=hub_telemetry
        )
        self.hub_context = HubContext(self.lifetime, options)
        self.connection_endpoint = ConnectionEndpoint(
            self._application,
            options=options.connection_options(),
            validator=validator,
            require_user=requires_user(hub_type),
            telemetry=connection_telemetry,
        )
        self.connections = self.connection_endpoint.connections

    def _application(self, connection: Connection) -> HubConnectionContext:
        return HubConnectionContext(connection, self.dispatcher, self.lifetime, self.options)

    def hub_connections(self) -> list[HubConnectionContext]:
        """The hub connections of this endpoint now (a connection still negotiating has none)."""
        return [c.application for c in self.connections if isinstance(c.application, HubConnectionContext)]

    def stop_accepting(self) -> None:
        """Refuse new connections from now on (a draining server): negotiate and
        skip-negotiation WebSockets get 503 "Server is shutting down"; connections already
        negotiated still reach their transport."""
        self.connection_endpoint.accepting = False

    def running_streams(self) -> list[asyncio.Task[Any]]:
        """The tasks of the server-to-client streams running now (a stream's Completion is written as its task ends)."""
        return [task for connection in self.hub_connections() for task in connection.streams.tasks()]

    async def shutdown(self, _app: Any = None) -> None:
        """Tell every client to reconnect elsewhere, then close: Close(allowReconnect), 1001."""
        closing = [
            connection.close(allow_reconnect=True, going_away=True)
            for connection in self.hub_connections()
            if connection.state in _HANDSHAKE_ANSWERED
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        await self.connection_endpoint.shutdown()


#: A Close message means something to the client once its handshake is answered.
_HANDSHAKE_ANSWERED = (HubConnectionState.CONNECTING, HubConnectionState.CONNECTED)


def _lifetime_context(lifetime: HubLifetimeManager) -> Any:
    """`start()` and `aclose()` of a manager, once per app, however many paths share it."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        await lifetime.start()
        try:
            yield
        finally:
            await lifetime.aclose()

    return context


_STARTED = web.AppKey("signalr_lifetimes", set)


def map_hub(
    app: web.Application,
    path: str,
    hub_type: type[Hub],
    *,
    options: HubOptions | None = None,
    lifetime: HubLifetimeManager | None = None,
    validator: TokenValidator | None = None,
    factory: HubFactory | None = None,
    hub_name: str | None = None,
    telemetry: tuple[HubTelemetry | None, ConnectionTelemetry | None] | None = None,
) -> HubEndpoint:
    """Serve `hub_type` at `path` (matched case-insensitively) and `path/negotiate`.

    `hub_name` names the hub to a backplane's other servers (default: module.Class).
    `telemetry` is (HubTelemetry, ConnectionTelemetry), each None for off; by default both
    come from the global OpenTelemetry providers, and are None unless an SDK backs them.
    """
    endpoint = HubEndpoint(
        hub_type,
        options=options,
        lifetime=lifetime,
        validator=validator,
        factory=factory,
        hub_name=hub_name,
        telemetry=telemetry,
    )
    endpoint.connection_endpoint.route(app, path)
    app.on_shutdown.append(endpoint.shutdown)
    started = app.setdefault(_STARTED, set())
    if id(endpoint.lifetime) not in started:
        started.add(id(endpoint.lifetime))
        app.cleanup_ctx.append(_lifetime_context(endpoint.lifetime))
    return endpoint
