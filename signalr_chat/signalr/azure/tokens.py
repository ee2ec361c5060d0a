"""The JWTs Azure SignalR Service accepts, the claims it hands back, and Microsoft Entra ID keys.

Every credential the service checks is a JWT signed with HMAC under the access key: the app
server's token for its WebSockets, each client's token (the negotiate redirect), the REST API's
token. The key is the UTF-8 bytes of the string as written in the connection string; it is not
base64 though it looks like it, and decoding it gives a token the service refuses.

A client token carries the user to the service and, through it, back to the app server in each
OpenConnection. The SDK's rules for that round trip (`ClaimsUtility.cs`) are reproduced exactly,
as the service undoes them: user claims that collide with JWT registered claims travel renamed
`asrs.u.<name>`, the service's own settings travel as `asrs.s.*`, long .NET claim type URIs are
shortened by .NET's outbound map (`nameid`, `role`, ...), and a repeated claim type becomes a
JSON array. `principal_from_claims` reads them back.

With Microsoft Entra ID there is no key in the connection string: the server's sockets and the
REST calls carry an Entra token itself, and client tokens are signed with a key the service
lends (`EntraAccessKey`) and that expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
import orjson

try:  # PyJWT 2.10+ warns of HMAC keys shorter than the hash; the service's keys are as they are
    from jwt.warnings import InsecureKeyLengthWarning as _ShortKeyWarning
except ImportError:  # pragma: no cover - older PyJWT does not warn
    _ShortKeyWarning = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from .connection_string import ServiceEndpoint

DEFAULT_LIFETIME = timedelta(hours=1)
#: Longer tokens are refused by the SDK before the service sees them (negotiate answers 413).
MAX_TOKEN_LENGTH = 4096
#: `iss` of the newest SDK (`Constants.AsrsTokenIssuer`); the 2024-03 SDK wrote no `iss`.
ISSUER = "azure-signalr"
#: The scope of the Entra token for server connections, REST calls and `/api/v1/auth/accessKey`.
ENTRA_SCOPE = "https://signalr.azure.com/.default"
ALGORITHMS = ("HS256", "HS512")

NAME_IDENTIFIER = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
DEFAULT_NAME_CLAIM_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
DEFAULT_ROLE_CLAIM_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
DEFAULT_AUTHENTICATION_TYPE = "Bearer"
DEFAULT_HANDSHAKE_TIMEOUT = 15
MAX_HANDSHAKE_TIMEOUT = 30

SYSTEM_PREFIX = "asrs.s."
USER_PREFIX = "asrs.u."
USER_ID = "asrs.s.uid"
SERVER_NAME = "asrs.s.sn"
STICKY_MODE = "asrs.s.ssticky"
DIAGNOSTIC_CLIENT = "asrs.s.dc"
HANDSHAKE_TIMEOUT = "asrs.s.cht"
AUTHENTICATION_TYPE = "asrs.s.aut"
ENDPOINTS_COUNT = "asrs.s.secn"
DETAILED_ERRORS = "asrs.s.derror"
NAME_TYPE = "asrs.s.nt"
ROLE_TYPE = "asrs.s.rt"
MAX_POLL_INTERVAL = "asrs.s.ttl"
HTTP_TRANSPORT_TYPE = "asrs.s.htt"
CLOSE_ON_AUTH_EXPIRATION = "asrs.s.coae"
AUTH_EXPIRES_ON = "asrs.s.aeo"

#: User claims of these types travel as `asrs.u.<type>`, and arrive without the prefix; the
#: service drops them otherwise (they are the token's own). `sub` only from its second on.
SYSTEM_CLAIMS = frozenset({"aud", "exp", "iat", "nbf", "iss", "actort", "acr", "azp", "c_hash", "jti", "nonce"})

_SOAP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/"
_MS = "http://schemas.microsoft.com/ws/2008/06/identity/claims/"
_CERT = "http://schemas.microsoft.com/2012/12/certificatecontext/"
_REQUEST = "http://schemas.microsoft.com/2012/01/requestcontext/claims/"
_DEVICE = "http://schemas.microsoft.com/2012/01/devicecontext/claims/"
#: .NET's JwtSecurityTokenHandler.OutboundClaimTypeMap (long → short), as the SDK copies it from
#: IdentityModel 6.22 (`ClaimTypeMapping.cs`): the first short name of each long type wins.
OUTBOUND_CLAIM_TYPES: Mapping[str, str] = {
    "http://schemas.xmlsoap.org/ws/2009/09/identity/claims/actor": "actort",
    _SOAP + "dateofbirth": "birthdate",
    _SOAP + "emailaddress": "email",
    _SOAP + "surname": "family_name",
    _SOAP + "gender": "gender",
    _SOAP + "givenname": "given_name",
    NAME_IDENTIFIER: "nameid",
    _SOAP + "webpage": "website",
    _SOAP + "name": "unique_name",
    "http://schemas.microsoft.com/identity/claims/objectidentifier": "oid",
    "http://schemas.microsoft.com/identity/claims/scope": "scp",
    "http://schemas.microsoft.com/identity/claims/tenantid": "tid",
    "http://schemas.microsoft.com/claims/authnclassreference": "acr",
    "http://schemas.xmlsoap.org/claims/EmailAddress": "adfs1email",
    "http://schemas.xmlsoap.org/claims/UPN": "adfs1upn",
    "http://schemas.microsoft.com/claims/authnmethodsreferences": "amr",
    _MS + "authenticationmethod": "authmethod",
    _CERT + "extension/applicationpolicy": "certapppolicy",
    _CERT + "extension/authoritykeyidentifier": "certauthoritykeyidentifier",
    _CERT + "extension/basicconstraints": "certbasicconstraints",
    _CERT + "extension/eku": "certeku",
    _CERT + "field/issuer": "certissuer",
    _CERT + "field/issuername": "certissuername",
    _CERT + "extension/keyusage": "certkeyusage",
    _CERT + "field/notafter": "certnotafter",
    _CERT + "field/notbefore": "certnotbefore",
    _CERT + "extension/certificatepolicy": "certpolicy",
    _SOAP + "rsa": "certpublickey",
    _CERT + "field/rawdata": "certrawdata",
    _MS + "serialnumber": "certserialnumber",
    _CERT + "field/signaturealgorithm": "certsignaturealgorithm",
    _CERT + "field/subject": "certsubject",
    _CERT + "extension/san": "certsubjectaltname",
    _CERT + "extension/subjectkeyidentifier": "certsubjectkeyidentifier",
    _CERT + "field/subjectname": "certsubjectname",
    _CERT + "extension/certificatetemplateinformation": "certtemplateinformation",
    _CERT + "extension/certificatetemplatename": "certtemplatename",
    _SOAP + "thumbprint": "certthumbprint",
    _CERT + "field/x509version": "certx509version",
    _REQUEST + "x-ms-client-application": "clientapplication",
    _REQUEST + "x-ms-client-ip": "clientip",
    _REQUEST + "x-ms-client-user-agent": "clientuseragent",
    "http://schemas.xmlsoap.org/claims/CommonName": "commonname",
    _MS + "denyonlyprimarygroupsid": "denyonlyprimarygroupsid",
    _MS + "denyonlyprimarysid": "denyonlyprimarysid",
    _SOAP + "denyonlysid": "denyonlysid",
    _DEVICE + "displayname": "devicedispname",
    _DEVICE + "identifier": "deviceid",
    _DEVICE + "ismanaged": "deviceismanaged",
    _DEVICE + "ostype": "deviceostype",
    _DEVICE + "osversion": "deviceosver",
    _DEVICE + "userowner": "deviceowner",
    _DEVICE + "registrationid": "deviceregid",
    _REQUEST + "x-ms-endpoint-absolute-path": "endpointpath",
    _REQUEST + "x-ms-forwarded-client-ip": "forwardedclientip",
    "http://schemas.xmlsoap.org/claims/Group": "group",
    _MS + "groupsid": "groupsid",
    "http://schemas.microsoft.com/identity/claims/identityprovider": "idp",
    "http://schemas.microsoft.com/ws/2012/01/insidecorporatenetwork": "insidecorporatenetwork",
    _DEVICE + "isregistereduser": "isregistereduser",
    _SOAP + "privatepersonalidentifier": "ppid",
    _MS + "primarygroupsid": "primarygroupsid",
    _MS + "primarysid": "primarysid",
    _REQUEST + "x-ms-proxy": "proxy",
    "http://schemas.microsoft.com/ws/2012/01/passwordchangeurl": "pwdchgurl",
    "http://schemas.microsoft.com/ws/2012/01/passwordexpirationdays": "pwdexpdays",
    "http://schemas.microsoft.com/ws/2012/01/passwordexpirationtime": "pwdexptime",
    _REQUEST + "relyingpartytrustid": "relyingpartytrustid",
    DEFAULT_ROLE_CLAIM_TYPE: "role",
    _SOAP + "upn": "upn",
    _MS + "windowsaccountname": "winaccountname",
}

#: Claims as (type, value) pairs in order, or a mapping of type → value(s).
Claims = Iterable[tuple[str, str]] | Mapping[str, str | Sequence[str]]
ClaimValue = str | list[str]


class TokenTooLongError(ValueError):
    """The token is longer than the 4096 characters the SDK allows (too many or too long claims)."""


def _default_kid(key: str) -> str:
    """The SDK sends `key.GetHashCode()`, .NET's per-process random string hash, so the service
    cannot use it to pick a connection-string key; any decimal string does. This one is a signed
    32-bit number from the key's SHA-256, so it is stable and reveals nothing usable."""
    return str(int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big", signed=True))


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An HMAC key: the UTF-8 bytes of `key` as written, sent as `kid` in the JWT header."""

    key: str = field(repr=False)
    kid: str = ""

    def __post_init__(self) -> None:
        if not self.kid:
            object.__setattr__(self, "kid", _default_kid(self.key))

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("utf-8")


@cache
def default_server_id() -> str:
    """`{MachineName}_{Guid:N}`, fixed for the process: the SDK's server name, which is the
    `nameid` of server and REST tokens and the `asrs.s.sn` of sticky client tokens."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex}"


def _sign(
    key: AccessKey,
    claims: Mapping[str, ClaimValue],
    audience: str,
    lifetime: timedelta,
    algorithm: str,
    issuer: str | None,
    now: float | None,
) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"the service takes HS256 or HS512 tokens, not {algorithm}")
    seconds = int(lifetime.total_seconds())
    if seconds <= 0:
        raise ValueError("a token's lifetime must be at least a second")
    issued = int(time.time() if now is None else now)
    # the SDK's order: the claims, then nbf, exp, iat, iss, aud (order carries no meaning)
    payload: dict[str, Any] = {**claims, "nbf": issued, "exp": issued + seconds, "iat": issued}
    if issuer:
        payload["iss"] = issuer
    payload["aud"] = audience
    with warnings.catch_warnings():
        if _ShortKeyWarning is not None:
            warnings.simplefilter("ignore", _ShortKeyWarning)
        token = jwt.encode(payload, key.key_bytes, algorithm=algorithm, headers={"kid": key.kid}, sort_headers=False)
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenTooLongError(f"the token is {len(token)} characters long; at most {MAX_TOKEN_LENGTH} are allowed")
    return token


def server_token(
    key: AccessKey,
    audience: str,
    server_id: str,
    lifetime: timedelta = DEFAULT_LIFETIME,
    algorithm: str = "HS256",
    issuer: str | None = ISSUER,
    *,
    now: float | None = None,
) -> str:
    """The app server's token for its WebSockets: `nameid` = server id, audience
    `ServiceEndpoint.server_audience(hub)`. `issuer=None` writes no `iss`, as the 2024-03 SDK."""
    return _sign(key, {"nameid": server_id}, audience, lifetime, algorithm, issuer, now)


def rest_token(
    key: AccessKey,
    audience: str,
    lifetime: timedelta = DEFAULT_LIFETIME,
    *,
    server_id: str | None = None,
    algorithm: str = "HS256",
    issuer: str | None = ISSUER,
    now: float | None = None,
) -> str:
    """A REST API token: `nameid` = server id, audience `ServiceEndpoint.rest_audience(...)`."""
    return _sign(key, {"nameid": server_id or default_server_id()}, audience, lifetime, algorithm, issuer, now)


def _pairs(claims: Claims | None) -> Iterator[tuple[str, str]]:
    if claims is None:
        return
    if isinstance(claims, Mapping):
        for claim_type, value in claims.items():
            if isinstance(value, str):
                yield claim_type, value
            else:
                for item in value:
                    yield claim_type, item
    else:
        yield from claims


def _timestamp(moment: datetime | float) -> int:
    return int(moment.timestamp() if isinstance(moment, datetime) else moment)


def client_claims(
    user_id: str | None,
    user_claims: Claims | None = None,
    server_id: str | None = None,
    sticky: str | None = None,
    handshake_timeout: int | None = None,
    close_on_expiration: datetime | float | None = None,
    *,
    diagnostic: bool = False,
    authentication_type: str | None = None,
    endpoints_count: int = 1,
    detailed_errors: bool = False,
    name_claim_type: str | None = None,
    role_claim_type: str | None = None,
    max_poll_interval: int | None = None,
    transports: int | None = None,
) -> list[tuple[str, str]]:
    """A client token's claims, in the SDK's order (`ClaimsUtility.BuildJwtClaims`), before the
    outbound map shortens their types. `sticky` is "Preferred" or "Required" (None or "Disabled":
    none) and needs `server_id`; `close_on_expiration` is when the user's sign-in expires."""
    claims: list[tuple[str, str]] = []
    if user_id is not None:
        claims.append((USER_ID, user_id))
    if server_id is not None and sticky is not None and sticky != "Disabled":
        claims += [(SERVER_NAME, server_id), (STICKY_MODE, sticky)]
    if diagnostic:
        claims.append((DIAGNOSTIC_CLIENT, "true"))
    if handshake_timeout is not None and handshake_timeout != DEFAULT_HANDSHAKE_TIMEOUT:
        if not 0 < handshake_timeout <= MAX_HANDSHAKE_TIMEOUT:
            raise ValueError(f"the handshake timeout is 1 to {MAX_HANDSHAKE_TIMEOUT} seconds, not {handshake_timeout}")
        claims.append((HANDSHAKE_TIMEOUT, str(handshake_timeout)))
    if authentication_type is not None and authentication_type != DEFAULT_AUTHENTICATION_TYPE:
        claims.append((AUTHENTICATION_TYPE, authentication_type))
    if endpoints_count > 1:
        claims.append((ENDPOINTS_COUNT, str(endpoints_count)))
    if detailed_errors:
        claims.append((DETAILED_ERRORS, "True"))  # C#'s true.ToString()
    if name_claim_type is not None and name_claim_type != DEFAULT_NAME_CLAIM_TYPE:
        claims.append((NAME_TYPE, name_claim_type))
    if role_claim_type is not None and role_claim_type != DEFAULT_ROLE_CLAIM_TYPE:
        claims.append((ROLE_TYPE, role_claim_type))
    if max_poll_interval is not None:
        if not 1 <= max_poll_interval <= 300:
            raise ValueError(f"the max poll interval is 1 to 300 seconds, not {max_poll_interval}")
        claims.append((MAX_POLL_INTERVAL, str(max_poll_interval)))
    if transports is not None:
        claims.append((HTTP_TRANSPORT_TYPE, str(transports)))
    if close_on_expiration is not None:
        claims += [(CLOSE_ON_AUTH_EXPIRATION, "true"), (AUTH_EXPIRES_ON, str(_timestamp(close_on_expiration)))]
    has_sub = False
    for claim_type, value in _pairs(user_claims):
        if claim_type == "sub" and not has_sub:
            has_sub = True  # the first `sub` stays: the service takes it as the user's identifier
            claims.append((claim_type, value))
        elif claim_type == "sub" or claim_type in SYSTEM_CLAIMS:
            claims.append((USER_PREFIX + claim_type, value))
        else:
            claims.append((claim_type, value))
    return claims


def jwt_claims(claims: Iterable[tuple[str, str]]) -> dict[str, ClaimValue]:
    """Shorten types by the outbound map; a type seen again turns its value into an array."""
    payload: dict[str, ClaimValue] = {}
    for claim_type, value in claims:
        short = OUTBOUND_CLAIM_TYPES.get(claim_type, claim_type)
        existing = payload.get(short)
        if existing is None:
            payload[short] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            payload[short] = [existing, value]
    return payload


def client_token(
    key: AccessKey,
    audience: str,
    user_id: str | None,
    user_claims: Claims | None = None,
    server_id: str | None = None,
    sticky: str | None = None,
    handshake_timeout: int | None = None,
    close_on_expiration: datetime | float | None = None,
    lifetime: timedelta = DEFAULT_LIFETIME,
    *,
    algorithm: str = "HS256",
    issuer: str | None = ISSUER,
    now: float | None = None,
    diagnostic: bool = False,
    authentication_type: str | None = None,
    endpoints_count: int = 1,
    detailed_errors: bool = False,
    name_claim_type: str | None = None,
    role_claim_type: str | None = None,
    max_poll_interval: int | None = None,
    transports: int | None = None,
) -> str:
    """A client's token for the negotiate redirect, audience `ServiceEndpoint.client_audience(hub)`;
    the claims are `client_claims(...)`. Raises TokenTooLongError past 4096 characters."""
    claims = client_claims(
        user_id,
        user_claims,
        server_id,
        sticky,
        handshake_timeout,
        close_on_expiration,
        diagnostic=diagnostic,
        authentication_type=authentication_type,
        endpoints_count=endpoints_count,
        detailed_errors=detailed_errors,
        name_claim_type=name_claim_type,
        role_claim_type=role_claim_type,
        max_poll_interval=max_poll_interval,
        transports=transports,
    )
    return _sign(key, jwt_claims(claims), audience, lifetime, algorithm, issuer, now)


def read_client_token(key: AccessKey, token: str, audience: str) -> dict[str, ClaimValue] | None:
    """The claims of a client token this app signed for `audience`, or None for any other token.

    The stock client sends the service's token again when it negotiates anew (a restart, a
    reconnect): the app's own signature makes it as good as the sign-in it was issued for.
    """
    try:
        claims = jwt.decode(token, key.key_bytes, algorithms=list(ALGORITHMS), audience=audience)
    except jwt.PyJWTError:
        return None
    return {k: v if isinstance(v, str | list) else str(v) for k, v in claims.items()}


def principal_from_claims(
    claims: Mapping[str, ClaimValue],
) -> tuple[str | None, dict[str, ClaimValue], str | None]:
    """The user an OpenConnection's claims describe: (user id, claims, authentication type).

    The user id is `asrs.s.uid`, else the name identifier claim (long or short form). `asrs.u.x`
    becomes `x`; other `asrs.s.*` and the token's registered claims are dropped. With no claims
    left the principal is anonymous and the authentication type None (the user id may remain,
    as the SDK's ServiceUserIdFeature does); otherwise it is `asrs.s.aut`, by default "Bearer".
    """
    user_id: str | None = None
    authentication_type = DEFAULT_AUTHENTICATION_TYPE
    kept: dict[str, ClaimValue] = {}
    for claim_type, value in claims.items():
        # lists for repeated types; anything else (a decoded JWT's numbers) as its text
        values = value if isinstance(value, list) else [value if isinstance(value, str) else str(value)]
        if not values:
            continue
        if claim_type == USER_ID:
            user_id = values[0]
        elif claim_type == AUTHENTICATION_TYPE:
            authentication_type = values[0]
        elif claim_type.startswith(USER_PREFIX):
            _add(kept, claim_type.removeprefix(USER_PREFIX), values)
        elif claim_type not in SYSTEM_CLAIMS and not claim_type.startswith(SYSTEM_PREFIX):
            _add(kept, claim_type, values)
    if user_id is None:
        for name in (NAME_IDENTIFIER, "nameid"):
            found = kept.get(name)
            if found:
                user_id = found if isinstance(found, str) else found[0]
                break
    return user_id, kept, authentication_type if kept else None


def _add(claims: dict[str, ClaimValue], claim_type: str, values: list[str]) -> None:
    existing = claims.get(claim_type)
    merged = ([existing] if isinstance(existing, str) else existing or []) + values
    claims[claim_type] = merged[0] if len(merged) == 1 else merged


# -- Microsoft Entra ID ---------------------------------------------------------------------


async def entra_token(credential: AsyncTokenCredential, *, attempts: int = 3) -> str:
    """An Entra access token for the service: the bearer of server connections and REST calls
    under Entra auth. Tried `attempts` times, as the SDK does, before the last error is raised."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return (await credential.get_token(ENTRA_SCOPE)).token
        except Exception as error:
            last = error
    assert last is not None
    raise last


class EntraAccessKeyError(Exception):
    """The service lent no access key: `status` is the HTTP status when it answered (400 invalid
    argument, 401 not authorised, 404 endpoint inaccessible), None when it did not."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class EntraAccessKey:
    """The HMAC key the service lends an Entra identity, for signing client tokens.

    `GET {server endpoint}api/v1/auth/accessKey` with the Entra token answers
    `{"KeyId": ..., "AccessKey": ...}`. As the SDK: a key is refreshed after 55 minutes (in the
    background while it still works), expires 120 minutes after it was fetched, and a fetch is 3
    tries 3 s apart, 100 s each; after a failed fetch the next is tried 5 minutes later.
    `update()` takes a key the service sent over a server connection (AccessKeyResponse) instead.
    """

    REFRESH_AFTER = 55 * 60.0
    EXPIRES_AFTER = 120 * 60.0
    RETRY_AFTER_FAILURE = 5 * 60.0
    ATTEMPTS = 3

    def __init__(
        self,
        url: str,
        credential: AsyncTokenCredential,
        session: aiohttp.ClientSession | None = None,
        *,
        retry_delay: float = 3.0,
        timeout: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._credential = credential
        self._session = session
        self._own_session = session is None
        self._retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._key: AccessKey | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._error: EntraAccessKeyError | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_endpoint(
        cls,
        endpoint: ServiceEndpoint,
        credential: AsyncTokenCredential | None = None,
        session: aiohttp.ClientSession | None = None,
        **options: Any,
    ) -> EntraAccessKey:
        """For an Entra connection string; `credential` defaults to `endpoint.credential()`."""
        credential = credential or endpoint.credential()
        if credential is None:
            raise ValueError("the connection string has an access key; use AccessKey")
        return cls(endpoint.access_key_url(), credential, session, **options)

    @property
    def available(self) -> bool:
        return self._key is not None and self._clock() - self._fetched_at < self.EXPIRES_AFTER

    def update(self, kid: str, key: str) -> None:
        self._key = AccessKey(key, kid)
        self._fetched_at = self._clock()
        self._failed_at = self._error = None

    async def get(self) -> AccessKey:
        """The current key, fetching one first when there is none that works."""
        now = self._clock()
        if self._key is not None and now - self._fetched_at < self.EXPIRES_AFTER:
            if now - self._fetched_at >= self.REFRESH_AFTER and not self._failed_recently(now):
                self._start()
            return self._key
        if not self._failed_recently(now):
            await asyncio.shield(self._start())
        if self._key is not None and self.available:
            return self._key
        raise self._error or EntraAccessKeyError("the access key has expired")

    async def refresh(self) -> None:
        """Fetch a key now (or wait for the fetch under way); raises EntraAccessKeyError on failure."""
        await asyncio.shield(self._start())
        if self._failed_at is not None and self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _failed_recently(self, now: float) -> bool:
        return self._failed_at is not None and now - self._failed_at < self.RETRY_AFTER_FAILURE

    def _start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._fetch_with_retries())
        return self._task

    async def _fetch_with_retries(self) -> None:
        last: Exception | None = None
        for attempt in range(self.ATTEMPTS):
            try:
                await self._fetch()
                return
            except TimeoutError as error:
                last = error  # retried at once, as the SDK does
            except Exception as error:
                last = error
                if attempt + 1 < self.ATTEMPTS:
                    await asyncio.sleep(self._retry_delay)
        self._failed_at = self._clock()
        if isinstance(last, EntraAccessKeyError):
            self._error = last
        else:
            self._error = EntraAccessKeyError(f"no access key from {self.url}: {last!r}")
            self._error.__cause__ = last

    async def _fetch(self) -> None:
        token = await entra_token(self._credential)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"}
        async with self._session.get(self.url, headers=headers, timeout=self._timeout) as response:
            body = await response.read()
            if response.status != 200:
                raise EntraAccessKeyError(_access_key_failure(self.url, response.status, body), response.status)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise EntraAccessKeyError(f"{self.url} answered no JSON", 200) from error
        kid = answer.get("KeyId") if isinstance(answer, dict) else None
        key = answer.get("AccessKey") if isinstance(answer, dict) else None
        if not isinstance(kid, str) or not kid:
            raise EntraAccessKeyError("Missing required <KeyId> field.", 200)
        if not isinstance(key, str) or not key:
            raise EntraAccessKeyError("Missing required <AccessKey> field.", 200)
        self.update(kid, key)


def _access_key_failure(url: str, status: int, body: bytes) -> str:
    reason = {
        400: "the request was refused as invalid",
        401: "the identity is not authorised (does it have the SignalR App Server role?)",
        404: "the endpoint is not reachable (is the endpoint right, and is Entra ID auth enabled?)",
    }.get(status, "the service failed")
    detail = body[:300].decode("utf-8", "replace").strip()
    return f"{url} answered {status}: {reason}" + (f": {detail}" if detail else "")
