"""An Azure SignalR Service connection string, and the URLs and JWT audiences derived from it.

`Endpoint=https://x.service.signalr.net;AccessKey=...;Version=1.0;` is what the portal hands
out, and the SDK (`ConnectionStringParser.cs`, `ServiceEndpoint.cs`) is the only definition of
how it reads. This module reads it the same way and says so in the same words: the same keys
(case-insensitive, duplicates refused), the same validation order and the same error texts,
so an error a user searches for leads to the SDK's documentation.

The service checks the audience of every token it is given, and builds that audience from the
endpoint's scheme and host alone: never the port, the path, `ServerEndpoint` or
`ClientEndpoint`. Hence two bases: `audience_base_url` for audiences, and the server and client
endpoints for the URLs that are actually dialled. Getting them mixed up works against the local
emulator (which checks no audience) and fails against the real service, so every URL here comes
with its audience.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, urlsplit

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

#: The data-plane REST API version the SDK's REST client speaks (`RestApiProvider.cs`).
REST_API_VERSION = "2022-06-01"

_DEFAULT_PORTS = {"http": 80, "https": 443}
# `^1\.\d+(?:[\w-.]+)?$` in the SDK: only service version 1.x
_VERSION = re.compile(r"1\.\d+(?:[\w.-]+)?")
# what .NET's int.TryParse takes by default: optional blanks and sign, ASCII digits
_PORT = re.compile(r"\s*[+-]?[0-9]+\s*")
_HOST = re.compile(r"[^\s/\\?#@\[\]:]+")


class ConnectionStringError(ValueError):
    """The connection string cannot be used; the text is the SDK's (without .NET's "(Parameter ...)")."""


MISSING_ENDPOINT = "Connection string missing required properties endpoint."
MISSING_ACCESS_KEY = "accesskey is required."
MISSING_CLIENT_ID = "Connection string missing required properties clientId."
MISSING_TENANT_ID = "Connection string missing required properties tenantId."
MISSING_CLIENT_SECRET = "Connection string missing required properties clientSecret or clientCert."
INVALID_ENDPOINT = "Invalid value for endpoint property, it must be a valid URI."
INVALID_CLIENT_ENDPOINT = "Invalid value for clientEndpoint property, it must be a valid URI."
INVALID_SERVER_ENDPOINT = "Invalid value for serverEndpoint property, it must be a valid URI."
INVALID_PORT = "Invalid value for port property, it must be an positive integer between (0, 65536)."


def _invalid_version(version: str) -> str:
    return f"Version {version} is not supported."


def _duplicate(key: str) -> str:
    return f"Duplicate properties found in connection string: {key}."


class AuthType(enum.Enum):
    """`AuthType=` of the connection string; anything unknown (or nothing) means an access key."""

    ACCESS_KEY = "accesskey"
    AAD = "aad"
    AZURE = "azure"
    AZURE_APP = "azure.app"
    AZURE_MSI = "azure.msi"


@dataclass(frozen=True, slots=True)
class _Uri:
    scheme: str
    host: str  # lower-cased; an IPv6 address in brackets
    port: int
    path: str  # always ends with "/"

    @property
    def authority(self) -> str:
        return self.host if self.port == _DEFAULT_PORTS[self.scheme] else f"{self.host}:{self.port}"

    @property
    def base(self) -> str:
        """The URL with a trailing slash: what "server/", "client/" or "api/..." is appended to."""
        return f"{self.scheme}://{self.authority}{self.path}"


def _parse_uri(text: str) -> _Uri | None:
    """An absolute http(s) URI, as .NET's Uri.TryCreate(Absolute) plus the SDK's scheme check
    take it; None when it is not one. Query and fragment play no part in an endpoint."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        host = f"[{host}]"
    elif not _HOST.fullmatch(host):
        return None
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return _Uri(scheme, host, _DEFAULT_PORTS[scheme] if port is None else port, path)


def url_encode(value: str) -> str:
    """.NET's WebUtility.UrlEncode: space as "+", upper-case hex, only `-_.!*()` left as they are."""
    return quote_plus(value, safe="!*()").replace("~", "%7E")


def escape(value: str) -> str:
    """.NET's Uri.EscapeDataString: everything but RFC 3986's unreserved characters."""
    return quote(value, safe="")


def service_hub_name(hub_class_name: str, application_name: str | None = None) -> str:
    """The hub's name on the service: lower-cased, `{app}_{hub}` with `ServiceOptions.ApplicationName`."""
    if application_name:
        return f"{application_name.lower()}_{hub_class_name.lower()}"
    return hub_class_name.lower()


def original_path(negotiate_path: str) -> str:
    """The hub's path from the path of a negotiate request (`/chat/negotiate/` → `/chat`), or ""
    when the path does not end in /negotiate: the `asrs.op` the client URL carries."""
    path = negotiate_path.rstrip("/")
    return path[: -len("/negotiate")] if path.endswith("/negotiate") else ""


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """One parsed connection string. `endpoint` is `scheme://host[:port]` (no path, no slash),
    as the SDK's `ServiceEndpoint.Endpoint`; `port` is the port in effect (`Port=` wins);
    `client_endpoint` and `server_endpoint` are the bases URLs are built on (with the endpoint's
    port and path when not given; ending in "/"); `audience_base_url` is `scheme://host/`."""

    endpoint: str
    access_key: str | None = field(repr=False)
    version: str | None
    port: int
    client_endpoint: str
    server_endpoint: str
    audience_base_url: str
    auth_type: AuthType = AuthType.ACCESS_KEY
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    client_cert: str | None = None

    # -- server connections (default mode) -----------------------------------------------
    def server_url(self, hub: str, connection_id: str, target: str | None = None) -> str:
        """The WebSocket an app server dials: `ws[s]://.../server/?hub=&cid=[&target=]`. `hub` is
        the service's name for it (`service_hub_name`); `target` only for on-demand connections."""
        base = "ws" + self.server_endpoint.removeprefix("http")
        url = f"{base}server/?hub={hub.lower()}&cid={escape(connection_id)}"
        return url if target is None else f"{url}&target={url_encode(target)}"

    def server_audience(self, hub: str) -> str:
        return f"{self.audience_base_url}server/?hub={hub.lower()}"

    # -- clients (negotiate redirect) ------------------------------------------------------
    def client_url(
        self,
        hub: str,
        original_path: str = "",
        query: str = "",
        request_id: str | None = None,
        *,
        culture: str | None = None,
        ui_culture: str | None = None,
    ) -> str:
        """Where negotiate sends a client: `{ClientEndpoint}client/?hub={hub}`, then `asrs.op`
        (the hub's path, see `original_path()`), the negotiate request's own query (with or without
        its "?"), `asrs_request_id` (when not None, even if empty), and the cultures."""
        url = f"{self.client_endpoint}client/?hub={hub.lower()}"
        if original_path:
            url += f"&asrs.op={url_encode(original_path)}"
        query = query.removeprefix("?")
        if query:
            url += f"&{query}"
        if request_id is not None:
            url += f"&asrs_request_id={url_encode(request_id)}"
        if culture:
            url += f"&asrs_lang={culture}"
        if ui_culture:
            url += f"&asrs_ui_lang={ui_culture}"
        return url

    def client_audience(self, hub: str) -> str:
        return f"{self.audience_base_url}client/?hub={hub.lower()}"

    # -- data-plane REST API ---------------------------------------------------------------
    def rest_url(self, hub: str, path: str, application: str | None = None) -> str:
        """`{ServerEndpoint}api/hubs/{hub}{path}?[application=&]api-version=`: `path` starts with
        "/" and has its segments escaped already; more query (`excluded`, `ttl`, `reason`) goes
        after, and is no part of the audience."""
        return self.server_endpoint + _rest_path(hub, path, application)

    def rest_audience(self, hub: str, path: str, application: str | None = None) -> str:
        """As `rest_url` but on `audience_base_url`: the SDK includes the api-version query."""
        return self.audience_base_url + _rest_path(hub, path, application)

    def health_url(self) -> str:
        return f"{self.server_endpoint}api/health?api-version={REST_API_VERSION}"

    def health_audience(self) -> str:
        return f"{self.audience_base_url}api/health?api-version={REST_API_VERSION}"

    def access_key_url(self) -> str:
        """Where Microsoft Entra ID auth fetches the HMAC key client tokens are signed with."""
        return f"{self.server_endpoint}api/v1/auth/accessKey"

    # -- Microsoft Entra ID ------------------------------------------------------------------
    def credential(self) -> AsyncTokenCredential | None:
        """A new azure-identity credential for the Entra auth types (the caller closes it), or
        None for an access key. azure-identity (the `chat` extra) is imported only here."""
        if self.auth_type is AuthType.ACCESS_KEY:
            return None
        from azure.identity import aio as identity

        if self.auth_type is AuthType.AZURE:
            return identity.DefaultAzureCredential()
        if self.auth_type is AuthType.AZURE_MSI or self.tenant_id is None:
            # aad without a tenant: a managed identity, user-assigned when a client id is given
            if self.client_id:
                return identity.ManagedIdentityCredential(client_id=self.client_id)
            return identity.ManagedIdentityCredential()
        assert self.client_id is not None  # parse_connection_string refused the rest
        if self.client_secret is not None:
            return identity.ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret)
        assert self.client_cert is not None
        return identity.CertificateCredential(self.tenant_id, self.client_id, certificate_path=self.client_cert)


def _rest_path(hub: str, path: str, application: str | None) -> str:
    query = f"application={escape(application.lower())}&" if application else ""
    return f"api/hubs/{escape(hub.lower())}{path}?{query}api-version={REST_API_VERSION}"


def _properties(text: str) -> dict[str, tuple[str, str]]:
    """Lower-cased key → (key as written, value); the SDK's `ToDictionary`."""
    parts = [part for part in text.split(";") if part]
    if len(parts) < 2:
        raise ConnectionStringError(MISSING_ENDPOINT)
    properties: dict[str, tuple[str, str]] = {}
    for part in parts:
        if "=" not in part:
            continue
        key, value = part.split("=", 1)
        key = key.strip()
        if key.lower() in properties:
            raise ConnectionStringError(_duplicate(key))
        properties[key.lower()] = (key, value.strip())
    return properties


def _auth_type(value: str | None) -> AuthType:
    lowered = (value or "").lower()
    for member in AuthType:
        if member is not AuthType.ACCESS_KEY and member.value == lowered:
            return member
    return AuthType.ACCESS_KEY


def parse_connection_string(text: str) -> ServiceEndpoint:
    """Parse, validating in the SDK's order; raises ConnectionStringError with its texts."""
    properties = _properties(text)

    def get(key: str) -> str | None:
        found = properties.get(key)
        return None if found is None else found[1]

    raw_endpoint = get("endpoint")
    if raw_endpoint is None:
        raise ConnectionStringError(MISSING_ENDPOINT)
    uri = _parse_uri(raw_endpoint.rstrip("/"))
    if uri is None:
        raise ConnectionStringError(INVALID_ENDPOINT)

    version = get("version")
    if version is not None and not _VERSION.fullmatch(version):
        raise ConnectionStringError(_invalid_version(version))

    port_text = get("port")
    if port_text is not None:
        port = int(port_text) if _PORT.fullmatch(port_text) else 0
        if not 0 < port <= 0xFFFF:
            raise ConnectionStringError(INVALID_PORT)
        uri = _Uri(uri.scheme, uri.host, port, uri.path)

    client_uri = server_uri = uri
    if (client_text := get("clientendpoint")) is not None:
        parsed = _parse_uri(client_text)
        if parsed is None:
            raise ConnectionStringError(INVALID_CLIENT_ENDPOINT)
        client_uri = parsed
    if (server_text := get("serverendpoint")) is not None:
        parsed = _parse_uri(server_text)
        if parsed is None:
            raise ConnectionStringError(INVALID_SERVER_ENDPOINT)
        server_uri = parsed

    auth_type = _auth_type(get("authtype"))
    access_key = get("accesskey")
    if auth_type is AuthType.ACCESS_KEY and access_key is None:
        raise ConnectionStringError(MISSING_ACCESS_KEY)
    if auth_type is AuthType.AZURE_APP:
        if "clientid" not in properties:
            raise ConnectionStringError(MISSING_CLIENT_ID)
        if "tenantid" not in properties:
            raise ConnectionStringError(MISSING_TENANT_ID)
    # aad and azure.app: with both ids it is an application, which needs a secret or a certificate
    both_ids = "clientid" in properties and "tenantid" in properties
    application = auth_type in (AuthType.AAD, AuthType.AZURE_APP) and both_ids
    if application and "clientsecret" not in properties and "clientcert" not in properties:
        raise ConnectionStringError(MISSING_CLIENT_SECRET)

    # the credential's parameters, as each auth type reads them (`azure` reads none)
    entra = auth_type in (AuthType.AAD, AuthType.AZURE_APP, AuthType.AZURE_MSI)
    client_id = get("clientid") if entra else None
    tenant_id = get("tenantid") if application else None
    return ServiceEndpoint(
        endpoint=f"{uri.scheme}://{uri.authority}",
        access_key=access_key if auth_type is AuthType.ACCESS_KEY else None,
        version=version,
        port=uri.port,
        client_endpoint=client_uri.base,
        server_endpoint=server_uri.base,
        audience_base_url=f"{uri.scheme}://{uri.host}/",
        auth_type=auth_type,
        client_id=client_id,
        tenant_id=tenant_id,
        client_secret=get("clientsecret") if application else None,
        client_cert=get("clientcert") if application and get("clientsecret") is None else None,
    )
