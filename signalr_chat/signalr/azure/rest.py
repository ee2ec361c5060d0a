"""The service's data-plane REST API, and negotiate for a serverless hub.

In serverless mode no app server holds a socket to the service: whoever wants to reach clients
(a function, a script, another service) calls REST, and the clients find the service through a
negotiate endpoint that only mints their token. Both need nothing of the rest of this package,
so this module stands alone: a connection string in, HTTP calls out.

It follows the SDK's management client (`RestApiProvider.cs`, `RestHubLifetimeManager.cs`):
API version 2022-06-01, a token per request whose audience is the request URL on the audience
base *with* the api-version query but *without* the extra query (`excluded`, `ttl`, `reason`),
and the same reading of a 404: a "not found" that carries the expected `x-ms-error-code` is an
answer (the connection, user or group is not there), any other 404 is an error.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from .connection_string import AuthType, ServiceEndpoint, escape, service_hub_name
from .tokens import (
    DEFAULT_LIFETIME,
    AccessKey,
    Claims,
    EntraAccessKey,
    client_token,
    default_server_id,
    entra_token,
    rest_token,
)

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

WARNING_CONNECTION_NOT_EXISTED = "Warning.Connection.NotExisted"
WARNING_USER_NOT_EXISTED = "Warning.User.NotExisted"
WARNING_GROUP_NOT_EXISTED = "Warning.Group.NotExisted"
INFO_USER_NOT_IN_GROUP = "Info.User.NotInGroup"
ERROR_CONNECTION_NOT_EXISTED = "Error.Connection.NotExisted"
ERROR_CODE_HEADER = "x-ms-error-code"

_JSON = "application/json; charset=utf-8"


class ServiceRestError(Exception):
    """A REST call failed: `status` is None when no answer came (network, timeout); `error_code`
    is the `x-ms-error-code` header (or the body's `code`); `message` the error body's message."""

    def __init__(self, method: str, url: str, status: int | None, error_code: str | None, message: str | None) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.error_code = error_code
        self.message = message
        answer = "no answer" if status is None else f"{status}"
        details = ": ".join(part for part in (error_code, message) if part)
        super().__init__(f"{method} {url}: {answer}" + (f" ({details})" if details else ""))


def _error_details(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of an ErrorDetail body `{"code","message","target",...}`, else the text."""
    if not body:
        return None, None
    try:
        detail = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, body[:500].decode("utf-8", "replace").strip() or None
    if not isinstance(detail, dict):
        return None, None
    code, message = detail.get("code"), detail.get("message")
    return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)


class ServiceRestClient:
    """The REST API for one hub. Access-key connection strings sign a token per request; Entra
    ones send the Entra token (`credential`, by default `endpoint.credential()`, closed by
    `aclose()` when it was made here). Each request is bounded by `timeout` seconds in all.

    Group and user arguments come in this project's order: `(connection_id, group)`, as the hub
    layer's `add_to_group`; `method`/`args` are the client method and its arguments.
    """

    def __init__(
        self,
        endpoint: ServiceEndpoint,
        hub: str,
        application: str | None = None,
        session: aiohttp.ClientSession | None = None,
        *,
        credential: AsyncTokenCredential | None = None,
        timeout: float = 30.0,
        token_lifetime: timedelta = DEFAULT_LIFETIME,
        server_id: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hub = hub
        self.application = application
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token_lifetime = token_lifetime
        self._server_id = server_id or default_server_id()
        self._key: AccessKey | None = None
        self._credential: AsyncTokenCredential | None = None
        self._own_credential = False
        if endpoint.auth_type is AuthType.ACCESS_KEY:
            assert endpoint.access_key is not None
            self._key = AccessKey(endpoint.access_key)
        elif credential is not None:
            self._credential = credential
        else:
            self._credential = endpoint.credential()
            self._own_credential = True

    async def __aenter__(self) -> ServiceRestClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

    # -- sending ------------------------------------------------------------------------------
    async def send_all(self, method: str, args: Sequence[Any] = (), exclude: Collection[str] = ()) -> None:
        await self._send("/:send", method, args, exclude)

    async def send_user(self, user_id: str, method: str, args: Sequence[Any] = ()) -> None:
        await self._send(f"/users/{_segment(user_id)}/:send", method, args)

    async def send_connection(self, connection_id: str, method: str, args: Sequence[Any] = ()) -> None:
        await self._send(f"/connections/{_segment(connection_id)}/:send", method, args)

    async def send_group(
        self, group: str, method: str, args: Sequence[Any] = (), exclude: Collection[str] = ()
    ) -> None:
        await self._send(f"/groups/{_segment(group)}/:send", method, args, exclude)

    # -- connections in groups ---------------------------------------------------------------
    async def add_to_group(self, connection_id: str, group: str) -> None:
        """A connection the service does not hold is not an error here, as in the SDK."""
        path = f"/groups/{_segment(group)}/connections/{_segment(connection_id)}"
        await self._call("PUT", path, not_found=ERROR_CONNECTION_NOT_EXISTED)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        await self._call("DELETE", f"/groups/{_segment(group)}/connections/{_segment(connection_id)}")

    async def remove_from_all_groups(self, connection_id: str) -> None:
        await self._call("DELETE", f"/connections/{_segment(connection_id)}/groups")

    # -- users in groups -------------------------------------------------------------------------
    async def add_user_to_group(self, user_id: str, group: str, ttl: timedelta | int | None = None) -> None:
        """Without `ttl` the membership lasts (up to a year, the last 100 groups); with `ttl=0`
        it holds for the user's current connections only."""
        query: list[tuple[str, str]] = []
        if ttl is not None:
            seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else ttl
            if seconds < 0:
                raise ValueError("Ttl cannot be less than 0.")
            query.append(("ttl", str(seconds)))
        await self._call("PUT", f"/users/{_segment(user_id)}/groups/{_segment(group)}", query=query)

    async def remove_user_from_group(self, user_id: str, group: str) -> None:
        await self._call("DELETE", f"/users/{_segment(user_id)}/groups/{_segment(group)}")

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        await self._call("DELETE", f"/users/{_segment(user_id)}/groups")

    async def is_user_in_group(self, user_id: str, group: str) -> bool:
        path = f"/users/{_segment(user_id)}/groups/{_segment(group)}"
        return await self._call("HEAD", path, not_found=INFO_USER_NOT_IN_GROUP) == 200

    # -- existence ------------------------------------------------------------------------------
    async def connection_exists(self, connection_id: str) -> bool:
        path = f"/connections/{_segment(connection_id)}"
        return await self._call("HEAD", path, not_found=WARNING_CONNECTION_NOT_EXISTED) == 200

    async def user_exists(self, user_id: str) -> bool:
        return await self._call("HEAD", f"/users/{_segment(user_id)}", not_found=WARNING_USER_NOT_EXISTED) == 200

    async def group_exists(self, group: str) -> bool:
        return await self._call("HEAD", f"/groups/{_segment(group)}", not_found=WARNING_GROUP_NOT_EXISTED) == 200

    # -- closing connections -------------------------------------------------------------------
    async def close_connection(self, connection_id: str, reason: str | None = None) -> None:
        """Closing a connection that is already gone is not an error, as in the SDK."""
        query = [] if reason is None else [("reason", reason)]
        path = f"/connections/{_segment(connection_id)}"
        await self._call("DELETE", path, query=query, not_found=WARNING_CONNECTION_NOT_EXISTED)

    async def close_all_connections(self, exclude: Collection[str] = (), reason: str | None = None) -> None:
        await self._call("POST", "/:closeConnections", query=_close_query(exclude, reason))

    async def close_group_connections(
        self, group: str, exclude: Collection[str] = (), reason: str | None = None
    ) -> None:
        path = f"/groups/{_segment(group)}/:closeConnections"
        await self._call("POST", path, query=_close_query(exclude, reason))

    async def close_user_connections(
        self, user_id: str, exclude: Collection[str] = (), reason: str | None = None
    ) -> None:
        path = f"/users/{_segment(user_id)}/:closeConnections"
        await self._call("POST", path, query=_close_query(exclude, reason))

    # -- the service ------------------------------------------------------------------------------
    async def health(self) -> None:
        """HEAD /api/health; raises ServiceRestError when the service is not healthy."""
        await self._request("HEAD", self.endpoint.health_url(), self.endpoint.health_audience())

    # -- plumbing ----------------------------------------------------------------------------------
    async def _send(self, path: str, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        if not method:
            raise ValueError("Argument cannot be null or empty.")
        body = orjson.dumps({"Target": method, "Arguments": list(args)})
        await self._call("POST", path, query=[("excluded", id_) for id_ in exclude], body=body)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        not_found: str | None = None,
    ) -> int:
        url = self.endpoint.rest_url(self.hub, path, self.application)
        audience = self.endpoint.rest_audience(self.hub, path, self.application)
        url += "".join(f"&{escape(name)}={escape(value)}" for name, value in query)
        return await self._request(method, url, audience, body, not_found)

    async def _authorization(self, audience: str) -> str:
        if self._key is not None:
            token = rest_token(self._key, audience, self._token_lifetime, server_id=self._server_id)
        else:
            assert self._credential is not None, "the client is closed"
            token = await entra_token(self._credential)
        return f"Bearer {token}"

    async def _request(
        self, method: str, url: str, audience: str, body: bytes | None = None, not_found: str | None = None
    ) -> int:
        """The status of a 2xx answer, or of a 404 carrying `not_found` as its error code."""
        headers = {"Authorization": await self._authorization(audience)}
        if body is not None:
            headers["Content-Type"] = _JSON
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=headers,
                # no application/octet-stream on a bodiless PUT or POST
                skip_auto_headers=() if body is not None else ("Content-Type",),
                timeout=self._timeout,
            ) as response:
                status = response.status
                error_code = response.headers.get(ERROR_CODE_HEADER)
                if 200 <= status < 300:
                    return status
                if status == 404 and not_found is not None and (error_code or "").lower() == not_found.lower():
                    return status
                body_code, message = _error_details(await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ServiceRestError(method, url, None, None, str(error) or type(error).__name__) from error
        raise ServiceRestError(method, url, status, error_code or body_code, message)


def _segment(value: str) -> str:
    if not value:
        raise ValueError("Argument cannot be null or empty.")
    return escape(value)


def _close_query(exclude: Collection[str], reason: str | None) -> list[tuple[str, str]]:
    query = [("excluded", connection_id) for connection_id in exclude]
    return query if reason is None else [*query, ("reason", reason)]


async def negotiate(
    endpoint: ServiceEndpoint,
    hub: str,
    user_id: str | None = None,
    claims: Claims | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
    *,
    application: str | None = None,
    key: AccessKey | EntraAccessKey | None = None,
    detailed_errors: bool = False,
    diagnostic: bool = False,
    close_on_expiration: bool = False,
    algorithm: str = "HS256",
) -> dict[str, str]:
    """`{"url", "accessToken"}` for a client of a serverless hub: what a negotiate endpoint of
    one's own answers (the SignalR client then goes to the service). As the management SDK: the
    URL carries no extra query, and `user_id` becomes `asrs.s.uid`, which the user-targeted REST
    calls need. An Entra connection string needs `key=EntraAccessKey.for_endpoint(endpoint)`."""
    if key is None:
        if endpoint.access_key is None:
            raise ValueError("a Microsoft Entra ID connection string signs with EntraAccessKey: pass key=")
        key = AccessKey(endpoint.access_key)
    access_key = await key.get() if isinstance(key, EntraAccessKey) else key
    name = service_hub_name(hub, application)
    expires = datetime.now(UTC) + lifetime if close_on_expiration else None
    token = client_token(
        access_key,
        endpoint.client_audience(name),
        user_id,
        claims,
        close_on_expiration=expires,
        lifetime=lifetime,
        algorithm=algorithm,
        detailed_errors=detailed_errors,
        diagnostic=diagnostic,
    )
    return {"url": endpoint.client_url(name), "accessToken": token}
