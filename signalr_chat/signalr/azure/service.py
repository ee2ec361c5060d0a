"""Hubs served through Azure SignalR Service: what ASP.NET Core's `.AddAzureSignalR()` adds.

`AzureSignalR(connection_string).map_hub(app, path, Hub)` serves a hub as `map_hub` does, except
that clients never connect to this server: its negotiate answers a redirect to the service
(`{url, accessToken}`, which the stock clients follow), the service holds the clients' sockets,
and this server keeps N WebSockets per hub open to the service, over which the clients' traffic
and the hub's sends travel. The hub, its methods and its clients' code do not change.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ..connections import TokenValidator, User, auth
from ..connections.cors import cors_headers, preflight
from ..connections.endpoint import SHUTTING_DOWN
from ..connections.telemetry import ConnectionTelemetry
from ..hubs import Hub, HubEndpoint, HubOptions
from ..hubs.dispatcher import HubFactory
from ..hubs.telemetry import HubTelemetry
from .connection_string import AuthType, ServiceEndpoint, parse_connection_string, service_hub_name
from .lifetime import ServiceHubLifetimeManager
from .options import ServiceOptions
from .server_connection import Bearer, ServiceConnectionPool
from .tokens import (
    AccessKey,
    EntraAccessKey,
    EntraAccessKeyError,
    client_token,
    default_server_id,
    entra_token,
    principal_from_claims,
    read_client_token,
)
from .tokens import server_token as make_server_token

log = logging.getLogger(__name__)


def _claim_value(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in value]
    return orjson.dumps(value).decode()


def _request_id() -> str:
    """The SDK's `asrs_request_id`: base64 of 8 bytes (time-based there, random here)."""
    return base64.b64encode(os.urandom(8)).decode("ascii")


class AzureSignalR:
    """The app server's side of Azure SignalR Service in default mode, for any number of hubs."""

    def __init__(
        self,
        connection_string: str | ServiceEndpoint,
        options: ServiceOptions | None = None,
        *,
        credential: Any = None,
        server_id: str | None = None,
    ) -> None:
        self.endpoint = (
            connection_string
            if isinstance(connection_string, ServiceEndpoint)
            else parse_connection_string(connection_string)
        )
        self.options = options or ServiceOptions()
        self.server_id = server_id or default_server_id()
        self._lifetime = timedelta(seconds=self.options.access_token_lifetime)
        self._credential = credential
        self._access_key: AccessKey | None = None
        self._entra_key: EntraAccessKey | None = None
        if self.endpoint.auth_type is AuthType.ACCESS_KEY:
            assert self.endpoint.access_key is not None
            self._access_key = AccessKey(self.endpoint.access_key)
        self.hubs: dict[str, ServiceHubLifetimeManager] = {}
        self._session: aiohttp.ClientSession | None = None
        self._started = False

    # -- tokens -------------------------------------------------------------------------------
    async def _server_bearer(self, hub: str) -> str:
        if self._access_key is not None:
            return make_server_token(
                self._access_key,
                self.endpoint.server_audience(hub),
                self.server_id,
                self._lifetime,
                self.options.access_token_algorithm,
            )
        return await entra_token(self._entra_credential())

    def _entra_credential(self) -> Any:
        if self._credential is None:
            self._credential = self.endpoint.credential()
        return self._credential

    async def _client_key(self) -> AccessKey:
        if self._access_key is not None:
            return self._access_key
        if self._entra_key is None:
            self._entra_key = EntraAccessKey.for_endpoint(self.endpoint, self._entra_credential(), self._session)
        return await self._entra_key.get()

    # -- hubs ---------------------------------------------------------------------------------
    def map_hub(
        self,
        app: web.Application,
        path: str,
        hub_type: type[Hub],
        *,
        options: HubOptions | None = None,
        validator: TokenValidator | None = None,
        factory: HubFactory | None = None,
        hub_name: str | None = None,
        telemetry: tuple[HubTelemetry | None, ConnectionTelemetry | None] | None = None,
    ) -> HubEndpoint:
        """Serve `hub_type` through the service; `path/negotiate` redirects clients there.

        `hub_name` is the hub's name on the service (default: the class name, lower-cased, after
        `ServiceOptions.application_name`). Two paths are two hubs there: mapping a second path
        under a name already used is refused, as it would mix both paths' clients.
        """
        name = hub_name or service_hub_name(hub_type.__name__, self.options.application_name)
        name = name.lower()
        if name in self.hubs:
            raise ValueError(
                f"The hub name '{name}' is already mapped to Azure SignalR Service; "
                f"give the hub at {path} a hub_name of its own."
            )

        def pool(handler: Any) -> ServiceConnectionPool:
            return ServiceConnectionPool(
                hub=name,
                endpoint=self.endpoint,
                bearer=Bearer(lambda: self._server_bearer(name)),
                server_id=self.server_id,
                options=self.options,
                handler=handler,
            )

        lifetime = ServiceHubLifetimeManager(pool, name)
        hub_endpoint = HubEndpoint(
            hub_type,
            options=options,
            lifetime=lifetime,
            validator=validator,
            factory=factory,
            telemetry=telemetry,
        )
        lifetime.bind(hub_endpoint, "/" + path.strip("/"))
        self.hubs[name] = lifetime
        pattern = "{_path:(?i:" + re.escape(path.strip("/")) + ")}"
        app.router.add_route(
            "*", f"/{pattern}/{{_negotiate:(?i:negotiate)}}", self._negotiate_handler(hub_endpoint, name)
        )
        if not self._started:
            self._started = True
            app.cleanup_ctx.append(self._context)
            app.on_shutdown.append(self._on_shutdown)
        app.on_shutdown.append(hub_endpoint.shutdown)
        return hub_endpoint

    def _negotiate_handler(self, hub_endpoint: HubEndpoint, hub: str) -> Callable[[web.Request], Any]:
        connection_endpoint = hub_endpoint.connection_endpoint
        hub_options = hub_endpoint.options
        user_required = connection_endpoint.require_user

        async def negotiate(request: web.Request) -> web.StreamResponse:
            origins = connection_endpoint.options.cors_origins
            if request.method == "OPTIONS":
                return preflight(request, origins)
            headers = cors_headers(request, origins)
            if request.method != "POST":
                return web.Response(status=405, headers=headers)
            if not connection_endpoint.accepting:
                return web.Response(status=503, text=SHUTTING_DOWN, headers=headers)
            try:
                key = await self._client_key()
            except EntraAccessKeyError as exc:
                log.error("negotiate for hub %s: no access key to sign the client's token: %s", hub, exc)
                return web.Response(status=500, text="Unable to get the negotiate endpoint", headers=headers)
            try:
                user = await auth.authenticate(request, connection_endpoint.validator)
            except auth.Unauthorized:
                reissued = self._reissued(request, key, hub)
                if reissued is None:
                    return web.Response(status=401, headers=headers)
                user = reissued if isinstance(reissued, User) else None
            if user is None and user_required:
                return web.Response(status=401, headers=headers)
            body = self.redirect(hub, key, user, request, hub_options)
            return web.Response(body=body, content_type="application/json", headers=headers)

        return negotiate

    def _reissued(self, request: web.Request, key: AccessKey, hub: str) -> User | bool | None:
        """The user of a service token we signed for this hub (False: anonymous); None if not ours."""
        token = auth.bearer_token(request)
        claims = read_client_token(key, token, self.endpoint.client_audience(hub)) if token else None
        if claims is None:
            return None
        user_id, kept, _ = principal_from_claims(claims)
        return User(user_id, kept) if user_id is not None else False

    def redirect(
        self, hub: str, key: AccessKey, user: User | None, request: web.Request, hub_options: HubOptions
    ) -> bytes:
        """The negotiate response that sends a client to the service, as the SDK writes it."""
        url = self.endpoint.client_url(hub, "/" + request.match_info["_path"], request.query_string, _request_id())
        claims = {k: _claim_value(v) for k, v in user.claims.items()} if user is not None else None
        timeout = round(hub_options.handshake_timeout)
        token = client_token(
            key,
            self.endpoint.client_audience(hub),
            user.id if user is not None else None,
            claims,
            server_id=self.server_id,
            sticky=self.options.server_sticky_mode,
            handshake_timeout=timeout if 0 < timeout <= 30 else None,
            # CloseOnAuthenticationExpiration behind the service is the service's: asrs.s.coae/aeo
            close_on_expiration=(
                user.expires_at
                if user is not None and user.expires_at is not None and hub_options.close_on_authentication_expiration
                else None
            ),
            lifetime=self._lifetime,
            algorithm=self.options.access_token_algorithm,
            detailed_errors=hub_options.enable_detailed_errors,
        )
        document = {"negotiateVersion": 0, "url": url, "accessToken": token, "availableTransports": []}
        return orjson.dumps(document)

    # -- state and lifecycle -------------------------------------------------------------------
    @property
    def problem(self) -> str | None:
        """Why this server cannot serve clients through the service now (None when it can)."""
        problems = [f"hub {name}: {hub.pool.problem}" for name, hub in self.hubs.items() if hub.pool.problem]
        return "; ".join(problems) or None

    async def _context(self, _app: web.Application) -> AsyncIterator[None]:
        session = self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        try:
            if self.options.connection_count:
                for hub in self.hubs.values():
                    hub.pool.start(session)
            yield
        finally:
            for hub in self.hubs.values():
                await hub.pool.stop()
            if self._entra_key is not None:
                await self._entra_key.aclose()
            if self._credential is not None and hasattr(self._credential, "close"):
                await self._credential.close()
            await session.close()
            self._session = None

    async def shutdown(self) -> None:
        """The service's shutdown handshake for every hub, then the wait for clients to move (bounded)."""
        started = time.monotonic()
        for hub in self.hubs.values():
            remaining = max(0.0, self.options.shutdown_timeout - (time.monotonic() - started))
            await hub.pool.shutdown(remaining)

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.shutdown()


__all__ = ["AzureSignalR"]
