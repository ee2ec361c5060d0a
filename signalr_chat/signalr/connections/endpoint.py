"""One connection URL on an aiohttp app: negotiate, the three transports, auth and CORS.

It knows nothing of hubs: what runs on a connection comes from an application factory,
as ASP.NET Core's `MapConnections` runs any ConnectionHandler.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ..protocol.negotiate import (
    NegotiateError,
    TransportKind,
    lower_query,
    negotiate_document,
    requested_version,
    wants_stateful_reconnect,
)
from . import auth, log_context
from .auth import TokenValidator, User
from .connection import Application, Connection, RequestInfo, TransportFeatures
from .cors import cors_headers, preflight
from .inbound import PostedSends
from .manager import ConnectionManager
from .options import ConnectionOptions
from .telemetry import ConnectionTelemetry
from .transports import long_polling, server_sent_events, websockets

#: Builds what runs on a new connection; called once, by the connection's first transport request.
ApplicationFactory = Callable[[Connection], Application]

_FEATURES = {
    TransportKind.WEBSOCKETS: websockets.FEATURES,
    TransportKind.SERVER_SENT_EVENTS: server_sent_events.FEATURES,
    TransportKind.LONG_POLLING: long_polling.FEATURES,
}


#: The 503 a draining endpoint answers a new connection with; @microsoft/signalr reports it
#: as "Failed to complete negotiation with the server: Error: Server is shutting down: Status code '503'".
SHUTTING_DOWN = "Server is shutting down"

#: The header in which @microsoft/signalr 11 names the connection it refreshes (the `id` query,
#: as ASP.NET Core's .NET client sends it, works too).
CONNECTION_TOKEN_HEADER = "X-SignalR-Connection-Token"
#: The error of the 409 that tells a long-polling client to refresh its authentication and poll
#: again (@microsoft/signalr 11's LongPollingTransport looks for exactly this).
AUTHENTICATION_REFRESH_REQUIRED = "authentication_refresh_required"


def _text(status: int, text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)


def _error(status: int, error: str, description: str, headers: dict[str, str]) -> web.Response:
    """ASP.NET Core's JSON error of the refresh flow: `{"error": ..., "error_description": ...}`."""
    body = orjson.dumps({"error": error, "error_description": description})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


class ConnectionEndpoint:
    """One connection URL: negotiate, the three transports, refresh, auth and CORS. Each connection's
    application comes from a factory, so hubs and raw connection handlers are served alike."""

    def __init__(
        self,
        application_factory: ApplicationFactory,
        *,
        options: ConnectionOptions | None = None,
        validator: TokenValidator | None = None,
        require_user: bool = False,
        telemetry: ConnectionTelemetry | None = None,
    ) -> None:
        self.options = options or ConnectionOptions()
        self.application_factory = application_factory
        self.validator = validator
        self.require_user = require_user
        self.connections = ConnectionManager(self.options)
        #: None unless an OpenTelemetry SDK is configured (given, or the global one).
        self.telemetry = telemetry or ConnectionTelemetry.create()
        if self.telemetry is not None:
            self.connections.telemetry = self.telemetry
            self.telemetry.watch(self.connections.__iter__)
        self._flushes = websockets.FlushScheduler()
        #: Set while the server drains: new connections are refused.
        self.accepting = True

    def route(self, app: web.Application, path: str) -> None:
        """Serve at `path` (matched case-insensitively) and `path/negotiate`; `path/refresh` too
        when authentication refresh is on (without it that path does not exist, as in ASP.NET Core).

        The path as given is also routed exactly, first: aiohttp finds a plain route by a dict
        lookup, while the case-insensitive patterns are tried one by one, and every send over
        SSE and long polling is a request of its own."""
        base = "/" + path.strip("/")
        name = "{_path:(?i:" + re.escape(path.strip("/")) + ")}"
        routes = [("negotiate", self.negotiate)]
        if self.options.enable_authentication_refresh:
            routes.append(("refresh", self.refresh))
        app.router.add_route("*", base, self.connect)
        for segment, handler in routes:
            app.router.add_route("*", f"{base}/{segment}", handler)
        for segment, handler in routes:
            app.router.add_route("*", f"/{name}/{{_{segment}:(?i:{segment})}}", handler)
        app.router.add_route("*", f"/{name}", self.connect)

    # -- shared request checks ---------------------------------------------
    async def _user(self, request: web.Request, headers: dict[str, str]) -> User | web.Response | None:
        if self.validator is None and not self.require_user:
            return None  # no authentication configured: nothing to read from the request
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
        if not self.accepting:
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
        lifetime = None
        if self.options.enable_authentication_refresh and user is not None and version >= 1:
            lifetime = user.lifetime(self.connections.wall_clock())
        document = negotiate_document(
            version, connection.id, connection.token, self.options.transports, stateful, lifetime
        )
        return web.Response(body=orjson.dumps(document), content_type="application/json", headers=headers)

    # -- authentication refresh --------------------------------------------
    async def refresh(self, request: web.Request) -> web.StreamResponse:
        """`POST {path}/refresh`: a new token of the connection's own user, as ASP.NET Core 11
        serves it. 200 `{"connectionId", "refreshedAt", "tokenLifetimeSeconds"?}`, or a JSON error
        that leaves the connection as it was."""
        if request.method == "OPTIONS":
            return preflight(request, self.options.cors_origins)
        headers = cors_headers(request, self.options.cors_origins)
        if request.method != "POST":
            return web.Response(status=405, headers=headers)
        token = request.headers.get(CONNECTION_TOKEN_HEADER) or lower_query(request.query).get("id")
        if not token:
            return _error(
                400,
                "missing_connection_token",
                f"The {CONNECTION_TOKEN_HEADER} header or the 'id' query string parameter is required.",
                headers,
            )
        connection = self.connections.get(token)
        if connection is None or connection.disposed or connection.negotiate_version < 1:
            # a negotiate v0 id is public: it may not refresh anyone's connection
            return _error(404, "connection_not_found", "No active connection with the specified ID.", headers)
        try:
            user = await auth.authenticate(request, self.validator)
        except auth.Unauthorized:
            user = None
        if user is None:
            return _error(401, "invalid_token", "Authentication failed.", headers)
        if connection.user is None or connection.user.id != user.id:
            # the connection is left as it was (ASP.NET Core refuses a refresh that changes the user)
            return _error(403, "user_changed", "The new authentication belongs to another user.", headers)
        log_context.bind(connection)
        connection.refresh_user(user)
        now = self.connections.wall_clock()
        document: dict[str, Any] = {
            "connectionId": connection.id,
            "refreshedAt": datetime.fromtimestamp(now, UTC).isoformat(),
        }
        lifetime = connection.user.lifetime(now) if connection.user is not None else None
        if lifetime is not None:
            document["tokenLifetimeSeconds"] = lifetime
        return web.Response(body=orjson.dumps(document), content_type="application/json", headers=headers)

    def _refresh_required(self, connection: Connection) -> bool:
        """A long-polling connection whose authentication expired must be refreshed before it is
        served again (when refresh is on): its poll is answered 409."""
        return (
            self.options.enable_authentication_refresh
            and connection.features is not None
            and connection.features.polled
            and not connection.disposed  # its last records (a Close) are still collected
            and not connection.close_requested
            and connection.authentication_expired(self.connections.wall_clock())
        )

    def _expired_poll(self, request: web.Request, headers: dict[str, str]) -> web.Response | None:
        """The 409 for a poll whose token was refused because it expired along with its connection:
        the client refreshes, then polls again with the new token."""
        if request.method != "GET" or "text/event-stream" in request.headers.get("Accept", ""):
            return None
        token = lower_query(request.query).get("id")
        connection = self.connections.get(token) if token else None
        if connection is None or not self._refresh_required(connection):
            return None
        return _refresh_required_response(headers)

    # -- the connection URL ------------------------------------------------
    async def connect(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return preflight(request, self.options.cors_origins)
        headers = cors_headers(request, self.options.cors_origins)
        user = await self._user(request, headers)
        if isinstance(user, web.Response):
            return self._expired_poll(request, headers) or user
        query = request.query
        token = query.get("id")  # as the clients send it; any other spelling matches too
        if token is None and query:
            token = lower_query(query).get("id")
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
        if request.method == "GET" and user is not None and self.options.tracks_authentication:
            connection.refresh_user(user, only_later=True)  # a poll with a newer token extends it
        if request.method == "POST":
            return await self._post(request, connection, headers)
        if request.method == "DELETE":
            return await self._delete(connection, headers)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await self._sse(request, connection, headers)
        return await self._poll(request, connection, headers)

    def _claim(
        self, request: web.Request, connection: Connection, kind: TransportKind, headers: dict[str, str]
    ) -> web.Response | Application:
        """Bind the connection to its transport on first use; refuse a change of transport."""
        if kind not in self.options.transports:
            return _text(404, f"{kind.value} transport not supported by this end point type", headers)
        if connection.features is None:
            connection.features = _FEATURES[kind]
            if self.telemetry is not None:
                self.telemetry.transport_started(connection)
        elif connection.features.kind is not kind:
            return _text(400, "Cannot change transports mid-connection", headers)
        return self._application(request, connection)

    def _application(self, request: web.Request, connection: Connection) -> Application:
        log_context.bind(connection)  # log lines of this request and the tasks it starts name the connection
        application = connection.application
        if application is None:
            connection.request = RequestInfo.from_request(request)
            application = connection.application = self.application_factory(connection)
            application.start()
        return application

    async def _websocket(
        self, request: web.Request, token: str | None, user: User | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        if TransportKind.WEBSOCKETS not in self.options.transports:
            return _text(404, "WebSockets transport not supported by this end point type", headers)
        if token:
            connection = self.connections.get(token)
            if connection is None or connection.disposed:
                return _text(404, "No Connection with that ID", headers)
            if not _same_user(connection, user):
                return web.Response(status=403, headers=headers)
            if user is not None and self.options.tracks_authentication:
                connection.refresh_user(user, only_later=True)  # a stateful reconnect with a newer token
        elif not self.accepting:
            return _text(503, SHUTTING_DOWN, headers)
        else:  # skipNegotiation: the connection starts here
            connection = self.connections.create(0)
            connection.user = user
        first = connection.features is None
        claimed = self._claim(request, connection, TransportKind.WEBSOCKETS, headers)
        if isinstance(claimed, web.Response):
            return claimed
        if not first:
            if not claimed.accepts_reconnect:
                return _text(409, "Connection already has an active WebSocket", headers)
            if connection.transport is not None:
                # the client saw its socket die before we did: the new one replaces it
                old = connection.transport
                connection.detach(old)
                old.drop()
        socket = web.WebSocketResponse(
            max_msg_size=self.options.max_frame_size,
            compress=self.options.websocket_compression,
            autoping=True,
            decode_text=False,  # Text frames stay bytes: the protocol parses bytes
        )
        on_open = None if first else claimed.on_reconnected
        return await websockets.serve(request, connection, socket, self._flushes, on_open)

    async def _sse(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.StreamResponse:
        claimed = self._claim(request, connection, TransportKind.SERVER_SENT_EVENTS, headers)
        if isinstance(claimed, web.Response):
            return claimed
        if connection.transport is not None:
            return _text(409, "Connection already has an active event stream", headers)
        return await server_sent_events.serve(request, connection, headers)

    async def _poll(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.StreamResponse:
        if self._refresh_required(connection):
            return _refresh_required_response(headers)
        first = connection.features is None
        claimed = self._claim(request, connection, TransportKind.LONG_POLLING, headers)
        if isinstance(claimed, web.Response):
            return claimed
        transport = connection.transport
        if not isinstance(transport, long_polling.LongPollingTransport):
            transport = long_polling.LongPollingTransport(connection)
            if not connection.disposed:  # else the poll collects the last records, then 204
                connection.attach(transport)
        if first:  # the first poll returns at once: the client's start() waits for it
            connection.last_active = time.monotonic()
            return web.Response(status=200, headers=headers)
        response = await transport.poll(self.options.long_poll_timeout)
        response.headers.update(headers)
        if connection.disposed and not connection.has_pending:
            self.connections.forget(connection)
        return response

    async def _post(self, request: web.Request, connection: Connection, headers: dict[str, str]) -> web.Response:
        if connection.features is not None and connection.features.kind is TransportKind.WEBSOCKETS:
            return _text(405, "POST requests are not allowed for WebSocket connections.", headers)
        if connection.disposed:
            return _text(404, "No Connection with that ID", headers)
        posted = connection.posted
        if posted is None:
            application = self._application(request, connection)
            posted = connection.posted = PostedSends(application.receive, connection.dispose, connection.owner.tasks)
        if posted.in_progress:
            return _text(409, "Another send request is in progress.", headers)
        posted.in_progress = True
        try:
            body = await request.read()
            if connection.disposed:
                return _text(404, "No Connection with that ID", headers)
            backlog = posted.add(body)
            if backlog is not None:
                await asyncio.shield(backlog)
        finally:
            posted.in_progress = False
        return web.Response(status=200, headers=headers)

    async def _delete(self, connection: Connection, headers: dict[str, str]) -> web.Response:
        if connection.features is None or not connection.features.polled:
            return _text(400, "Cannot terminate this connection using the DELETE endpoint.", headers)
        await connection.dispose()
        self.connections.forget(connection)  # the client is gone: nobody collects what is left
        return web.Response(status=202, headers=headers)

    async def shutdown(self, _app: Any = None) -> None:
        if self.telemetry is not None:
            self.telemetry.shutting_down = True
        await self.connections.shutdown()


def _refresh_required_response(headers: dict[str, str]) -> web.Response:
    return _error(
        409,
        AUTHENTICATION_REFRESH_REQUIRED,
        "The connection's authentication expired: refresh it, then poll again.",
        headers,
    )


def _same_user(connection: Connection, user: User | None) -> bool:
    """Requests for a connection negotiated by a user must come from that user (else 403)."""
    return connection.user is None or (user is not None and user.id == connection.user.id)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


__all__ = ["ApplicationFactory", "ConnectionEndpoint", "TransportFeatures"]
