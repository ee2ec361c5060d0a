"""The data-plane REST client and serverless negotiate, against a double of the service.

The double is an aiohttp app on 127.0.0.1 that does what the service does with a request: it
checks the bearer token (the signature under the access key, the audience it builds itself from
the request as the service does, the lifetime), records the route, query and body, and answers
with the service's status codes and `x-ms-error-code`s, from a little state of connections,
users and groups. Nothing here reaches Azure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web

from signalr_chat.signalr.azure.connection_string import ServiceEndpoint, parse_connection_string
from signalr_chat.signalr.azure.rest import (
    ERROR_CONNECTION_NOT_EXISTED,
    ServiceRestClient,
    ServiceRestError,
    negotiate,
)
from signalr_chat.signalr.azure.tokens import ENTRA_SCOPE, AccessKey, EntraAccessKey, EntraAccessKeyError
from tests.support.conditions import until
from tests.support.listening import free_port

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is .* bytes long")

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
API_VERSION = ("api-version", "2022-06-01")
#: query the REST client appends after api-version; the service leaves it out of the audience
EXTRA_QUERY = {"excluded", "reason", "ttl"}


@dataclass
class Seen:
    method: str
    path: str  # as sent, still escaped
    query: list[tuple[str, str]]
    body: Any
    content_type: str | None
    authorization: str
    claims: dict[str, Any] | None


@dataclass
class ServiceDouble:
    key: str | None = KEY
    entra_token: str | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    user_groups: set[tuple[str, str]] = field(default_factory=set)
    #: the answer to the next request, whatever it is: (status, x-ms-error-code, body)
    fail: tuple[int, str | None, bytes] | None = None
    delay: float = 0.0
    lent: dict[str, str] = field(default_factory=lambda: {"KeyId": "kid-entra", "AccessKey": "lent-key-1"})
    lent_status: int = 200

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @staticmethod
    def audience(request: web.Request) -> str:
        """As the service builds it: scheme://host/ (no port) + path + the query up to api-version."""
        path, _, query = request.raw_path.partition("?")
        kept = [part for part in query.split("&") if part.split("=")[0] not in EXTRA_QUERY]
        return f"http://{request.url.host}{path}?{'&'.join(kept)}"

    def check_token(self, request: web.Request) -> dict[str, Any] | str:
        """The claims of a good token, or why it is not one."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return "no bearer token"
        if self.entra_token is not None:
            return {} if token == self.entra_token else "not the Entra token"
        assert self.key is not None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key.encode(),
                algorithms=["HS256"],
                audience=self.audience(request),
                issuer="azure-signalr",
                options={"require": ["exp", "iat", "nbf", "aud"]},
            )
        except jwt.PyJWTError as error:
            return f"{type(error).__name__}: {error}"
        if claims["exp"] - claims["iat"] != 3600 or claims["nbf"] != claims["iat"]:
            return "not a one-hour token"
        if abs(claims["iat"] - time.time()) > 60:
            return "issued at another time"
        if not claims.get("nameid"):
            return "no nameid"
        return claims

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        path = request.raw_path.partition("?")[0]
        if path == "/api/v1/auth/accessKey" and request.method == "GET":
            return self.lend_key(request)
        claims = self.check_token(request)
        body = orjson.loads(raw) if raw else None
        seen = Seen(
            request.method,
            path,
            parse_qsl(request.query_string, keep_blank_values=True),
            body,
            request.headers.get("Content-Type"),
            request.headers.get("Authorization", ""),
            claims if isinstance(claims, dict) else None,
        )
        self.seen.append(seen)
        if self.delay:
            await asyncio.sleep(self.delay)
        if isinstance(claims, str):
            return web.json_response({"code": "Unauthorized", "message": claims}, status=401)
        if API_VERSION not in seen.query:
            return web.json_response({"code": "BadRequest", "message": "api-version"}, status=400)
        if self.fail is not None:
            status, code, text = self.fail
            self.fail = None
            return web.Response(status=status, body=text, headers={"x-ms-error-code": code} if code else {})
        if path == "/api/health" and request.method == "HEAD":
            return web.Response(status=200)
        hub_path = path.removeprefix("/api/hubs/chat")
        for method, pattern, answer in ROUTES:
            if method == request.method and (match := pattern_match(pattern, hub_path)) is not None:
                return answer(self, {name: unquote(value) for name, value in match.items()})
        return web.Response(status=404)

    def lend_key(self, request: web.Request) -> web.Response:
        self.seen.append(Seen("GET", request.path, [], None, None, request.headers.get("Authorization", ""), None))
        if request.headers.get("Authorization") != f"Bearer {self.entra_token}":
            return web.json_response({"code": "Unauthorized"}, status=401)
        if self.lent_status != 200:
            return web.json_response({"code": "Forbidden", "message": "no role"}, status=self.lent_status)
        return web.json_response(self.lent)

    # -- the service's answers --------------------------------------------------------------
    @staticmethod
    def not_found(code: str, what: str) -> web.Response:
        body = {"code": code, "message": f"{what} is not found.", "target": what.split()[0]}
        return web.json_response(body, status=404, headers={"x-ms-error-code": code})

    def connection_group(self, method: str, ids: dict[str, str]) -> web.Response:
        if ids["connection"] not in self.connections:
            return self.not_found(ERROR_CONNECTION_NOT_EXISTED, f"Connection `{ids['connection']}`")
        return web.Response(status=200)

    def exists(self, kind: str, ids: dict[str, str]) -> web.Response:
        known = {"connection": self.connections, "user": self.users, "group": self.groups}[kind]
        if ids[kind] in known:
            return web.Response(status=200)
        return self.not_found(f"Warning.{kind.title()}.NotExisted", f"{kind.title()} `{ids[kind]}`")

    def user_in_group(self, ids: dict[str, str]) -> web.Response:
        if (ids["user"], ids["group"]) in self.user_groups:
            return web.Response(status=200)
        return self.not_found("Info.User.NotInGroup", f"User `{ids['user']}` in group")


def pattern_match(pattern: str, path: str) -> dict[str, str] | None:
    """`/users/{user}/groups/{group}` against an escaped path: segment by segment."""
    parts, segments = pattern.split("/"), path.split("/")
    if len(parts) != len(segments):
        return None
    found = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            found[part.strip("{}")] = segment
        elif part != segment:
            return None
    return found


Answer = Callable[[ServiceDouble, dict[str, str]], web.Response]


def status(code: int) -> Answer:
    return lambda double, ids: web.Response(status=code)


ROUTES: list[tuple[str, str, Answer]] = [
    ("POST", "/:send", status(202)),
    ("POST", "/users/{user}/:send", status(202)),
    ("POST", "/connections/{connection}/:send", status(202)),
    ("POST", "/groups/{group}/:send", status(202)),
    ("PUT", "/groups/{group}/connections/{connection}", lambda d, ids: d.connection_group("PUT", ids)),
    ("DELETE", "/groups/{group}/connections/{connection}", lambda d, ids: d.connection_group("DELETE", ids)),
    ("DELETE", "/connections/{connection}/groups", status(200)),
    ("PUT", "/users/{user}/groups/{group}", status(200)),
    ("DELETE", "/users/{user}/groups/{group}", status(204)),
    ("HEAD", "/users/{user}/groups/{group}", lambda d, ids: d.user_in_group(ids)),
    ("DELETE", "/users/{user}/groups", status(204)),
    ("HEAD", "/connections/{connection}", lambda d, ids: d.exists("connection", ids)),
    ("HEAD", "/users/{user}", lambda d, ids: d.exists("user", ids)),
    ("HEAD", "/groups/{group}", lambda d, ids: d.exists("group", ids)),
    (
        "DELETE",
        "/connections/{connection}",
        lambda d, ids: (
            web.Response(status=200)
            if ids["connection"] in d.connections
            else d.not_found("Warning.Connection.NotExisted", f"Connection `{ids['connection']}`")
        ),
    ),
    ("POST", "/:closeConnections", status(204)),
    ("POST", "/groups/{group}/:closeConnections", status(204)),
    ("POST", "/users/{user}/:closeConnections", status(204)),
]


@dataclass
class Service:
    double: ServiceDouble
    port: int

    def endpoint(self, extra: str = f"AccessKey={KEY}") -> ServiceEndpoint:
        return parse_connection_string(f"Endpoint=http://127.0.0.1;Port={self.port};{extra};Version=1.0;")

    @property
    def last(self) -> Seen:
        return self.double.seen[-1]


@pytest.fixture
async def service(aiohttp_server: Any) -> Service:
    double = ServiceDouble(connections={"conn-1"}, users={"u1"}, groups={"g1"}, user_groups={("u1", "g1")})
    server = await aiohttp_server(double.app(), host="127.0.0.1")
    return Service(double, server.port)


@pytest.fixture
async def client(service: Service) -> AsyncIterator[ServiceRestClient]:
    async with ServiceRestClient(service.endpoint(), "Chat") as rest:
        yield rest


Call = Callable[[ServiceRestClient], Awaitable[object]]
JSON_BODY = {"Target": "newMessage", "Arguments": ["hi", 1, {"a": None}]}
ARGS = ("hi", 1, {"a": None})

# (the call, its result, method, path after /api/hubs/chat, query after api-version, JSON body)
CASES: list[tuple[str, Call, object, str, str, list[tuple[str, str]], Any]] = [
    ("send_all", lambda c: c.send_all("newMessage", ARGS), None, "POST", "/:send", [], JSON_BODY),
    (
        "send_all_except",
        lambda c: c.send_all("newMessage", ARGS, exclude=["c 1", "c/2"]),
        None,
        "POST",
        "/:send",
        [("excluded", "c 1"), ("excluded", "c/2")],
        JSON_BODY,
    ),
    (
        "send_user",
        lambda c: c.send_user("user/1 é", "newMessage", ARGS),
        None,
        "POST",
        "/users/user%2F1%20%C3%A9/:send",
        [],
        JSON_BODY,
    ),
    (
        "send_connection",
        lambda c: c.send_connection("conn-1", "newMessage", ARGS),
        None,
        "POST",
        "/connections/conn-1/:send",
        [],
        JSON_BODY,
    ),
    (
        "send_group",
        lambda c: c.send_group("group 1", "newMessage", ARGS, exclude=["conn-1"]),
        None,
        "POST",
        "/groups/group%201/:send",
        [("excluded", "conn-1")],
        JSON_BODY,
    ),
    ("no_arguments", lambda c: c.send_all("ping"), None, "POST", "/:send", [], {"Target": "ping", "Arguments": []}),
    ("add_to_group", lambda c: c.add_to_group("conn-1", "g1"), None, "PUT", "/groups/g1/connections/conn-1", [], None),
    (
        "remove_from_group",
        lambda c: c.remove_from_group("conn-1", "g1"),
        None,
        "DELETE",
        "/groups/g1/connections/conn-1",
        [],
        None,
    ),
    (
        "remove_from_all_groups",
        lambda c: c.remove_from_all_groups("conn-1"),
        None,
        "DELETE",
        "/connections/conn-1/groups",
        [],
        None,
    ),
    ("add_user_to_group", lambda c: c.add_user_to_group("u1", "g1"), None, "PUT", "/users/u1/groups/g1", [], None),
    (
        "add_user_to_group_ttl",
        lambda c: c.add_user_to_group("u1", "g1", ttl=timedelta(minutes=2)),
        None,
        "PUT",
        "/users/u1/groups/g1",
        [("ttl", "120")],
        None,
    ),
    (
        "add_user_to_group_ttl_0",
        lambda c: c.add_user_to_group("u1", "g1", ttl=0),
        None,
        "PUT",
        "/users/u1/groups/g1",
        [("ttl", "0")],
        None,
    ),
    (
        "remove_user_from_group",
        lambda c: c.remove_user_from_group("u1", "g1"),
        None,
        "DELETE",
        "/users/u1/groups/g1",
        [],
        None,
    ),
    (
        "remove_user_from_all_groups",
        lambda c: c.remove_user_from_all_groups("u1"),
        None,
        "DELETE",
        "/users/u1/groups",
        [],
        None,
    ),
    ("is_user_in_group", lambda c: c.is_user_in_group("u1", "g1"), True, "HEAD", "/users/u1/groups/g1", [], None),
    ("is_user_not_in_group", lambda c: c.is_user_in_group("u1", "g2"), False, "HEAD", "/users/u1/groups/g2", [], None),
    ("connection_exists", lambda c: c.connection_exists("conn-1"), True, "HEAD", "/connections/conn-1", [], None),
    (
        "connection_not_existing",
        lambda c: c.connection_exists("conn-2"),
        False,
        "HEAD",
        "/connections/conn-2",
        [],
        None,
    ),
    ("user_exists", lambda c: c.user_exists("u1"), True, "HEAD", "/users/u1", [], None),
    ("user_not_existing", lambda c: c.user_exists("u2"), False, "HEAD", "/users/u2", [], None),
    ("group_exists", lambda c: c.group_exists("g1"), True, "HEAD", "/groups/g1", [], None),
    ("group_not_existing", lambda c: c.group_exists("g 2"), False, "HEAD", "/groups/g%202", [], None),
    ("close_connection", lambda c: c.close_connection("conn-1"), None, "DELETE", "/connections/conn-1", [], None),
    (
        "close_connection_reason",
        lambda c: c.close_connection("conn-1", reason="bye & thanks"),
        None,
        "DELETE",
        "/connections/conn-1",
        [("reason", "bye & thanks")],
        None,
    ),
    ("close_all_connections", lambda c: c.close_all_connections(), None, "POST", "/:closeConnections", [], None),
    (
        "close_all_connections_except",
        lambda c: c.close_all_connections(exclude=["a", "b"], reason="maintenance"),
        None,
        "POST",
        "/:closeConnections",
        [("excluded", "a"), ("excluded", "b"), ("reason", "maintenance")],
        None,
    ),
    (
        "close_group_connections",
        lambda c: c.close_group_connections("g1", exclude=["a"], reason="r"),
        None,
        "POST",
        "/groups/g1/:closeConnections",
        [("excluded", "a"), ("reason", "r")],
        None,
    ),
    (
        "close_user_connections",
        lambda c: c.close_user_connections("u1"),
        None,
        "POST",
        "/users/u1/:closeConnections",
        [],
        None,
    ),
]


@pytest.mark.parametrize(
    ("call", "result", "method", "path", "query", "body"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
async def test_every_rest_call(
    service: Service,
    client: ServiceRestClient,
    call: Call,
    result: object,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: Any,
) -> None:
    assert await call(client) == result
    seen = service.last
    assert (seen.method, seen.path) == (method, f"/api/hubs/chat{path}")
    assert seen.query == [API_VERSION, *query]
    assert seen.body == body
    assert seen.content_type == ("application/json; charset=utf-8" if body is not None else None)
    assert seen.claims is not None, "the double accepted the token"
    assert seen.claims["aud"] == f"http://127.0.0.1/api/hubs/chat{path}?api-version=2022-06-01"
    assert seen.claims["iss"] == "azure-signalr"


async def test_the_application_is_in_the_query_and_the_audience(service: Service) -> None:
    async with ServiceRestClient(service.endpoint(), "Chat", application="MyApp") as client:
        await client.send_user(
            "u1",
            "m",
            (),
        )
        await client.close_all_connections(exclude=["x"])
    first, second = service.double.seen
    assert first.query == [("application", "myapp"), API_VERSION]
    assert first.claims is not None
    assert (
        first.claims["aud"] == "http://127.0.0.1/api/hubs/chat/users/u1/:send?application=myapp&api-version=2022-06-01"
    )
    assert second.query == [("application", "myapp"), API_VERSION, ("excluded", "x")]


async def test_one_server_id_names_every_rest_token(service: Service, client: ServiceRestClient) -> None:
    await client.send_all("a")
    await client.send_all("b")
    first, second = (seen.claims for seen in service.double.seen)
    assert first is not None and second is not None
    assert first["nameid"] == second["nameid"]
    async with ServiceRestClient(service.endpoint(), "chat", server_id="me_1") as named:
        await named.send_all("c")
    assert service.last.claims is not None and service.last.claims["nameid"] == "me_1"


async def test_health(service: Service, client: ServiceRestClient) -> None:
    await client.health()
    seen = service.last
    assert (seen.method, seen.path, seen.query) == ("HEAD", "/api/health", [API_VERSION])
    assert seen.claims is not None and seen.claims["aud"] == "http://127.0.0.1/api/health?api-version=2022-06-01"
    service.double.fail = (503, None, b"")
    with pytest.raises(ServiceRestError) as caught:
        await client.health()
    assert caught.value.status == 503


# -- the SDK's reading of a 404 ---------------------------------------------------------------------


async def test_adding_a_missing_connection_to_a_group_is_no_error(service: Service, client: ServiceRestClient) -> None:
    await client.add_to_group("gone", "g1")
    assert service.last.path == "/api/hubs/chat/groups/g1/connections/gone"


async def test_removing_a_missing_connection_from_a_group_is(client: ServiceRestClient) -> None:
    with pytest.raises(ServiceRestError) as caught:
        await client.remove_from_group("gone", "g1")
    error = caught.value
    assert (error.status, error.error_code, error.method) == (404, "Error.Connection.NotExisted", "DELETE")
    assert error.message == "Connection `gone` is not found."
    assert "404" in str(error) and "Error.Connection.NotExisted" in str(error)


async def test_closing_a_missing_connection_is_no_error(service: Service, client: ServiceRestClient) -> None:
    await client.close_connection("gone", reason="r")
    assert service.last.query == [API_VERSION, ("reason", "r")]


async def test_a_404_with_another_error_code_is_an_error(service: Service, client: ServiceRestClient) -> None:
    service.double.fail = (404, "Warning.User.NotExisted", b"")
    with pytest.raises(ServiceRestError) as caught:
        await client.connection_exists("conn-1")
    assert (caught.value.status, caught.value.error_code) == (404, "Warning.User.NotExisted")
    service.double.fail = (404, "warning.connection.notexisted", b"")  # codes compare case-insensitively
    assert await client.connection_exists("conn-1") is False


async def test_a_404_without_an_error_code_is_an_error(service: Service, client: ServiceRestClient) -> None:
    for call in (
        lambda: client.send_all("m"),
        lambda: client.user_exists("u1"),
        lambda: client.add_to_group("conn-1", "g1"),
    ):
        service.double.fail = (404, None, b"")
        with pytest.raises(ServiceRestError) as caught:
            await call()
        assert (caught.value.status, caught.value.error_code, caught.value.message) == (404, None, None)


async def test_an_unauthorised_token(service: Service) -> None:
    async with ServiceRestClient(service.endpoint("AccessKey=not-the-key"), "chat") as client:
        with pytest.raises(ServiceRestError) as caught:
            await client.send_all("m")
    assert caught.value.status == 401
    assert caught.value.error_code == "Unauthorized"
    assert caught.value.message is not None and "Signature" in caught.value.message


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        ((500, None, b'{"code":"Error.Internal","message":"boom","target":null}'), "Error.Internal", "boom"),
        ((500, "Error.Header", b'{"code":"Error.Body","message":"boom"}'), "Error.Header", "boom"),
        ((502, None, b"<html>bad gateway</html>"), None, "<html>bad gateway</html>"),
        ((400, "Error.Invalid", b"[1, 2]"), "Error.Invalid", None),
        ((429, None, b""), None, None),
    ],
)
async def test_error_answers(
    service: Service,
    client: ServiceRestClient,
    answer: tuple[int, str | None, bytes],
    code: str | None,
    message: str | None,
) -> None:
    service.double.fail = answer
    with pytest.raises(ServiceRestError) as caught:
        await client.send_group("g1", "m", (1,))
    error = caught.value
    assert (error.status, error.error_code, error.message) == (answer[0], code, message)
    assert error.url.startswith(f"http://127.0.0.1:{service.port}/api/hubs/chat/groups/g1/:send?api-version=")


async def test_no_answer_at_all() -> None:
    endpoint = parse_connection_string(f"Endpoint=http://127.0.0.1;Port={free_port()};AccessKey={KEY}")
    async with ServiceRestClient(endpoint, "chat") as client:
        with pytest.raises(ServiceRestError) as caught:
            await client.send_all("m")
    assert caught.value.status is None and caught.value.message


async def test_requests_are_bounded_in_time(service: Service) -> None:
    service.double.delay = 5.0
    async with ServiceRestClient(service.endpoint(), "chat", timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(ServiceRestError) as caught:
            await client.send_all("m")
    assert caught.value.status is None
    assert time.monotonic() - started < 3


async def test_arguments_are_checked_before_sending(service: Service, client: ServiceRestClient) -> None:
    for call in (
        lambda: client.send_all(""),
        lambda: client.send_user("", "m"),
        lambda: client.add_to_group("", "g"),
        lambda: client.add_user_to_group("u", "g", ttl=-1),
        lambda: client.group_exists(""),
    ):
        with pytest.raises(ValueError):
            await call()
    assert service.double.seen == []


async def test_a_session_of_ones_own_stays_open(service: Service) -> None:
    async with aiohttp.ClientSession() as session:
        async with ServiceRestClient(service.endpoint(), "chat", session=session) as client:
            await client.send_all("m")
        assert not session.closed
        await ServiceRestClient(service.endpoint(), "chat", session=session).send_all("again")
    assert len(service.double.seen) == 2


# -- Microsoft Entra ID --------------------------------------------------------------------------------


class Token:
    def __init__(self, token: str) -> None:
        self.token = token
        self.expires_on = int(time.time()) + 3600


class FakeCredential:
    """azure-core's async token credential, as far as these clients use it."""

    def __init__(self, token: str = "entra-1") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **options: Any) -> Token:
        self.scopes.append(scopes)
        return Token(self.token)

    async def close(self) -> None:
        raise AssertionError("a credential handed in is the caller's to close")


async def test_rest_calls_carry_the_entra_token(service: Service) -> None:
    service.double.entra_token = "entra-1"
    credential = FakeCredential()
    endpoint = service.endpoint("AuthType=azure.msi;clientId=abc")
    async with ServiceRestClient(endpoint, "chat", credential=credential) as client:  # type: ignore[arg-type]
        await client.send_all("m", (1,))
        assert await client.user_exists("u1") is True
    assert service.last.authorization == "Bearer entra-1"
    assert credential.scopes == [(ENTRA_SCOPE,)] * 2
    async with ServiceRestClient(endpoint, "chat", credential=FakeCredential("stale")) as client:  # type: ignore[arg-type]
        with pytest.raises(ServiceRestError) as caught:
            await client.send_all("m")
    assert caught.value.status == 401


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def entra(service: Service) -> AsyncIterator[tuple[EntraAccessKey, Clock]]:
    service.double.entra_token = "entra-1"
    clock = Clock()
    endpoint = service.endpoint("AuthType=azure")
    key = EntraAccessKey.for_endpoint(endpoint, FakeCredential(), retry_delay=0, clock=clock)  # type: ignore[arg-type]
    yield key, clock
    await key.aclose()


def fetches(service: Service) -> int:
    return sum(seen.path == "/api/v1/auth/accessKey" for seen in service.double.seen)


async def test_the_entra_access_key_is_lent_by_the_service(
    service: Service, entra: tuple[EntraAccessKey, Clock]
) -> None:
    key, clock = entra
    assert key.url == f"http://127.0.0.1:{service.port}/api/v1/auth/accessKey"
    assert not key.available
    lent = await key.get()
    assert (lent.kid, lent.key) == ("kid-entra", "lent-key-1")
    assert service.last.authorization == "Bearer entra-1"
    assert key.available
    clock.now += 54 * 60
    assert await key.get() is lent
    assert fetches(service) == 1, "a key is good for 55 minutes"
    # after 55 minutes the key still serves while a new one is fetched in the background
    service.double.lent = {"KeyId": "kid-2", "AccessKey": "lent-key-2"}
    clock.now += 2 * 60
    assert await key.get() is lent
    await until(lambda: fetches(service) == 2, "the background refresh")
    await key.refresh()  # waits for the fetch under way
    renewed = await key.get()
    assert (renewed.kid, renewed.key) == ("kid-2", "lent-key-2")


async def test_a_refused_entra_key(service: Service, entra: tuple[EntraAccessKey, Clock]) -> None:
    key, clock = entra
    service.double.lent_status = 403
    with pytest.raises(EntraAccessKeyError) as caught:
        await key.get()
    assert caught.value.status == 403
    assert fetches(service) == 3, "three tries"
    with pytest.raises(EntraAccessKeyError):
        await key.get()
    assert fetches(service) == 3, "no new try within 5 minutes of a failure"
    clock.now += 5 * 60
    service.double.lent_status = 200
    assert (await key.get()).key == "lent-key-1"
    assert fetches(service) == 4


async def test_an_unauthorised_identity(service: Service) -> None:
    service.double.entra_token = "entra-1"
    key = EntraAccessKey.for_endpoint(service.endpoint("AuthType=azure"), FakeCredential("other"), retry_delay=0)  # type: ignore[arg-type]
    try:
        with pytest.raises(EntraAccessKeyError) as caught:
            await key.refresh()
    finally:
        await key.aclose()
    assert caught.value.status == 401
    assert "401" in str(caught.value) and "not authorised" in str(caught.value)


async def test_an_entra_key_expires_after_two_hours(service: Service, entra: tuple[EntraAccessKey, Clock]) -> None:
    key, clock = entra
    await key.get()
    service.double.lent_status = 500
    clock.now += 119 * 60
    assert (await key.get()).key == "lent-key-1", "expired keys are refreshed in the background"
    await until(lambda: fetches(service) == 4, "three failed refreshes")
    clock.now += 2 * 60
    assert not key.available
    with pytest.raises(EntraAccessKeyError) as caught:
        await key.get()
    assert caught.value.status == 500


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"KeyId": "", "AccessKey": "k"}, "Missing required <KeyId> field."),
        ({"AccessKey": "k"}, "Missing required <KeyId> field."),
        ({"KeyId": "kid"}, "Missing required <AccessKey> field."),
    ],
)
async def test_an_incomplete_entra_key(
    service: Service, entra: tuple[EntraAccessKey, Clock], answer: dict[str, str], message: str
) -> None:
    key, _ = entra
    service.double.lent = answer
    with pytest.raises(EntraAccessKeyError, match=message):
        await key.refresh()


async def test_a_key_from_the_server_connection(entra: tuple[EntraAccessKey, Clock], service: Service) -> None:
    key, _ = entra
    key.update("kid-socket", "socket-key")
    assert await key.get() == AccessKey("socket-key", "kid-socket")
    assert fetches(service) == 0


# -- negotiate for a serverless hub ------------------------------------------------------------------


async def test_negotiate(service: Service) -> None:
    endpoint = service.endpoint()
    answer = await negotiate(endpoint, "Chat", "user-1", [("name", "Ada"), ("aud", "mine")])
    assert list(answer) == ["url", "accessToken"]
    assert answer["url"] == f"http://127.0.0.1:{service.port}/client/?hub=chat"
    claims = jwt.decode(
        answer["accessToken"], KEY.encode(), algorithms=["HS256"], audience="http://127.0.0.1/client/?hub=chat"
    )
    assert claims["asrs.s.uid"] == "user-1"
    assert (claims["name"], claims["asrs.u.aud"]) == ("Ada", "mine")
    assert claims["exp"] - claims["iat"] == 3600
    assert orjson.loads(orjson.dumps(answer)) == answer


async def test_negotiate_with_an_application_and_options(service: Service) -> None:
    endpoint = service.endpoint("AccessKey=k;ClientEndpoint=https://public.example")
    answer = await negotiate(
        endpoint,
        "Chat",
        lifetime=timedelta(minutes=5),
        application="MyApp",
        detailed_errors=True,
        diagnostic=True,
        close_on_expiration=True,
        algorithm="HS512",
    )
    assert answer["url"] == "https://public.example/client/?hub=myapp_chat"
    claims = jwt.decode(
        answer["accessToken"], b"k", algorithms=["HS512"], audience="http://127.0.0.1/client/?hub=myapp_chat"
    )
    assert "asrs.s.uid" not in claims
    assert (claims["asrs.s.dc"], claims["asrs.s.derror"], claims["asrs.s.coae"]) == ("true", "True", "true")
    assert abs(int(claims["asrs.s.aeo"]) - claims["exp"]) <= 1
    assert claims["exp"] - claims["iat"] == 300


async def test_negotiate_with_microsoft_entra_id(service: Service, entra: tuple[EntraAccessKey, Clock]) -> None:
    key, _ = entra
    endpoint = service.endpoint("AuthType=azure")
    with pytest.raises(ValueError, match="EntraAccessKey"):
        await negotiate(endpoint, "chat", "u")
    answer = await negotiate(endpoint, "chat", "u", key=key)
    token = answer["accessToken"]
    assert jwt.get_unverified_header(token)["kid"] == "kid-entra"
    claims = jwt.decode(token, b"lent-key-1", algorithms=["HS256"], audience="http://127.0.0.1/client/?hub=chat")
    assert claims["asrs.s.uid"] == "u"
