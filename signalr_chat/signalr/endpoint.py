"""Maps a hub onto an aiohttp app: negotiate, the three transports, auth and CORS."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import orjson
from aiohttp import web

from . import auth, log_context
from .auth import TokenValidator, User
from .clients import GroupManager, HubClients
from .connection import Connection, RequestInfo
from .connection_manager import ConnectionManager
from .cors import cors_headers, preflight
from .dispatcher import HubDispatcher, HubFactory
from .draining import SHUTTING_DOWN
from .hub import Hub, requires_user
from .hub_connection import HubConnectionContext
from .lifetime import HubLifetimeManager, InMemoryHubLifetimeManager
from .negotiate import (
    NegotiateError,
    lower_query,
    negotiate_document,
    requested_version,
    wants_stateful_reconnect,
)
from .options import HubOptions, TransportKind
from .telemetry import SignalRTelemetry
from .transports import long_polling, server_sent_events, websockets

log = logging.getLogger(__name__)


def _text(status: int, text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)


class HubContext:
    """Reach a hub's clients from outside a hub method (background jobs, HTTP handlers)."""

    def __init__(self, lifetime: HubLifetimeManager, options: HubOptions) -> None:
        self.clients = HubClients(lifetime, options)
        self.groups = GroupManager(lifetime)


class HubEndpoint:
    def __init__(
        self,
        hub_type: type[Hub],
        *,
        options: HubOptions | None = None,
        lifetime: HubLifetimeManager | None = None,
        validator: TokenValidator | None = None,
        factory: HubFactory | None = None,
        telemetry: SignalRTelemetry | None = None,
    ) -> None:
        self.options = options or HubOptions()
        self.lifetime = lifetime or InMemoryHubLifetimeManager()
        self.validator = validator
        self.require_user = requires_user(hub_type)
        self.dispatcher = HubDispatcher(hub_type, self.lifetime, self.options, factory)
        self.connections = ConnectionManager(self.options)
        self.hub_context = HubContext(self.lifetime, self.options)
        self._flushes = websockets.FlushScheduler()
        #: None unless an OpenTelemetry SDK is configured (given, or the global one).
        self.telemetry = telemetry or SignalRTelemetry.create()
        if self.telemetry is not None:
            self.dispatcher.telemetry = self.connections.telemetry = self.telemetry
            self.telemetry.watch(self.connections.__iter__)
        #: Set by a graceful stop: new connections get 503 (see draining.py).
        self.draining = False
        size = self.options.max_message_size
        # a frame may batch several messages; each message is checked against the limit
        self._max_frame = 0 if size is None else max(4 * size, 1024 * 1024)

    # -- shared request checks ---------------------------------------------
    async def _user(self, request: web.Request, headers: dict[str, str]) -> User | web.Response | None:
        try:
            user = await auth.authenticate(request, self.validator)
        except auth.Unauthorized:
            return web.Response(status=401, headers=headers)
        if user is None and self.require_user:
            return web.Response(status=401, headers=headers)
        return user

    # -- negotiate ---------------------------------------------------------
    async def negotiate(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return preflight(request, self.options.cors_origins)
        headers = cors_headers(request, self.options.cors_origins)
        if request.method != "POST":
            return web.Response(status=405, headers=headers)
        if self.draining:
            return _text(503, SHUTTING_DOWN, headers)
        user = await self._user(request, headers)
        if isinstance(user, web.Response):
            return user
        query = lower_query(request.query)
        try:
            version = requested_version(query)
        except NegotiateError as exc:
            return web.json_response({"error": str(exc)}, headers=headers, dumps=_dumps)
        stateful = self.options.allow_stateful_reconnect and wants_stateful_reconnect(query)
        connection = self.connections.create(version, stateful_reconnect=stateful)
        connection.user = user
        document = negotiate_document(version, connection.id, connection.token, self.options.transports, stateful)
        return web.Response(body=orjson.dumps(document), content_type="application/json", headers=headers)

    # -- the connection URL ------------------------------------------------
    async def connect(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return preflight(request, self.options.cors_origins)
        headers = cors_headers(request, self.options.cors_origins)
        user = await self._user(request, headers)
        if isinstance(user, web.Response):
            return user
        token = lower_query(request.query).get("id")
        is_websocket = request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"
        if is_websocket:
            return await self._websocket(request, token, user, headers)
        if request.method not in ("GET", "POST", "DELETE"):
            return web.Response(status=405, headers=headers)
        if not token:
            return _text(400, "Connection ID required", headers)
        connection = self.connections.get(token)
        if connection is None:
            return _text(404, "No Connection with that ID", headers)
        if not _same_user(connection, user):
            return web.Response(status=403, headers=headers)
        if request.method == "POST":
            return await self._post(request, connection, headers)
        if request.method == "DELETE":
            return await self._delete(connection, headers)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self._sse(request, connection, headers)
        return await self._poll(request, connection, headers)

    def _claim(
        self, request: web.Request, connection: Connection, kind: TransportKind, headers: dict[str, str]
    ) -> web.Response | HubConnectionContext:
        """Bind the connection to its transport on first use; refuse a change of transport."""
        if kind not in self.options.transports:
            return _text(404, f"{kind.value} transport not supported by this end point type", headers)
        if connection.transport_kind is None:
            connection.transport_kind = kind
            if self.telemetry is not None:
                self.telemetry.transport_started(connection)
        elif connection.transport_kind is not kind:
            return _text(400, "Cannot change transports mid-connection", headers)
        return self._application(request, connection)

    def _application(self, request: web.Request, connection: Connection) -> HubConnectionContext:
        log_context.bind(connection)  # log lines of this request and the tasks it starts name the connection
        application = connection.application
        if application is None:
            connection.request = RequestInfo.from_request(request)
            application = HubConnectionContext(connection, self.dispatcher, self.options)
            connection.application = application
            application.start()
        assert isinstance(application, HubConnectionContext)
        return application

    async def _websocket(
        self, request: web.Request, token: str | None, user: User | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        if TransportKind.WEBSOCKETS not in self.options.transports:
            return _text(404, "WebSockets transport not supported by this end point type", headers)
        if token:
            connection = self.connections.get(token)
            if connection is None or connection.closed:
                return _text(404, "No Connection with that ID", headers)
            if not _same_user(connection, user):
                return web.Response(status=403, headers=headers)
        elif self.draining:
            return _text(503, SHUTTING_DOWN, headers)
        else:  # skipNegotiation: the connection starts here
            connection = self.connections.create(0)
            connection.user = user
        claimed = self._claim(request, connection, TransportKind.WEBSOCKETS, headers)
        if isinstance(claimed, web.Response):
            return claimed
        resuming = claimed.handshake_done
        if resuming and not claimed.can_resume:
            return _text(409, "Connection already has an active WebSocket", headers)
        if connection.transport is not None:
            if not resuming:
                return _text(409, "Connection already has an active WebSocket", headers)
            # the client saw its socket die before we did: the new one replaces it
            old = connection.transport
            connection.detach(old)
            old.drop()
        socket = web.WebSocketResponse(
            max_msg_size=self._max_frame,
            compress=self.options.websocket_compression,
            autoping=True,
            decode_text=False,  # Text frames stay bytes: the protocol parses bytes
        )
        return await websockets.serve(request, connection, socket, self._flushes, claimed.resumed if resuming else None)

    async def _sse(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.StreamResponse:
        if connection.transport is not None:
            return _text(409, "Connection already has an active event stream", headers)
        claimed = self._claim(request, connection, TransportKind.SERVER_SENT_EVENTS, headers)
        if isinstance(claimed, web.Response):
            return claimed
        return await server_sent_events.serve(request, connection, headers)

    async def _poll(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.StreamResponse:
        first = connection.transport_kind is None
        claimed = self._claim(request, connection, TransportKind.LONG_POLLING, headers)
        if isinstance(claimed, web.Response):
            return claimed
        transport = connection.long_polling
        if transport is None:
            transport = connection.long_polling = long_polling.LongPollingTransport(connection)
        if first:  # the first poll returns at once: the client's start() waits for it
            connection.last_active = time.monotonic()
            return web.Response(status=200, headers=headers)
        response = await transport.poll(self.options.long_poll_timeout)
        response.headers.update(headers)
        if connection.closed and not connection.has_pending:
            self.connections.forget(connection)
        return response

    async def _post(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.Response:
        if connection.transport_kind is TransportKind.WEBSOCKETS:
            return _text(405, "POST requests are not allowed for WebSocket connections.", headers)
        if connection.posting:
            return _text(409, "Another send request is in progress.", headers)
        connection.posting = True
        try:
            body = await request.read()
            if connection.closed:
                return _text(404, "No Connection with that ID", headers)
            self._application(request, connection)
            backlog = connection.receive_later(body)
            if backlog is not None:
                await asyncio.shield(backlog)
        finally:
            connection.posting = False
        return web.Response(status=200, headers=headers)

    async def _delete(self, connection: Connection, headers: dict[str, str]) -> web.Response:
        if connection.transport_kind is not TransportKind.LONG_POLLING:
            return _text(400, "Cannot terminate this connection using the DELETE endpoint.", headers)
        transport = connection.long_polling
        if transport is not None:
            await transport.close()
        await connection.dispose()
        self.connections.forget(connection)  # the client is gone: nobody collects what is left
        return web.Response(status=202, headers=headers)

    # -- shutdown ----------------------------------------------------------
    async def shutdown(self, _app: Any = None) -> None:
        """Tell every client to reconnect elsewhere, then close: Close(allowReconnect), 1001."""
        if self.telemetry is not None:
            self.telemetry.shutting_down = True
        closing = [
            c.application.close(allow_reconnect=True, going_away=True)
            for c in self.connections
            if isinstance(c.application, HubConnectionContext) and c.application.handshake_done
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        await self.connections.shutdown()


def _same_user(connection: Connection, user: User | None) -> bool:
    """Requests for a connection negotiated by a user must come from that user (else 403)."""
    return connection.user is None or (user is not None and user.id == connection.user.id)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def map_hub(
    app: web.Application,
    path: str,
    hub_type: type[Hub],
    *,
    options: HubOptions | None = None,
    lifetime: HubLifetimeManager | None = None,
    validator: TokenValidator | None = None,
    factory: HubFactory | None = None,
    telemetry: SignalRTelemetry | None = None,
) -> HubEndpoint:
    """Serve `hub_type` at `path` (matched case-insensitively) and `path/negotiate`."""
    endpoint = HubEndpoint(
        hub_type, options=options, lifetime=lifetime, validator=validator, factory=factory, telemetry=telemetry
    )
    hub = "{_hub:(?i:" + re.escape(path.strip("/")) + ")}"
    app.router.add_route("*", f"/{hub}/{{_negotiate:(?i:negotiate)}}", endpoint.negotiate)
    app.router.add_route("*", f"/{hub}", endpoint.connect)
    app.on_shutdown.append(endpoint.shutdown)
    return endpoint
