"""The app server behind Azure SignalR Service (`signalr_chat.signalr.azure`), in process.

Each test runs the service double (tests/support/azure_service.py) and one or two app servers
(`AzureSignalR.map_hub` on aiohttp apps served by pytest-aiohttp) in the test's own loop, on
127.0.0.1, and looks at what the app server did: what it answered a negotiate, which service
messages it sent (the double records every one), what it logged, what `problem` says. Clients
are raw WebSockets speaking the JSON hub protocol by hand after the negotiate redirect, so the
messages are exactly those the test asked for. The stock JS client's suites (test_azure_js.py)
cover the end-to-end behaviour; this file covers the app server's own rules, as the SDK
(/work/shared/azure-signalr-notes.md §2, §4-§7) writes them. Waits are on conditions, bounded.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

import aiohttp
import jwt
import msgpack
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from signalr_chat.app.azure_signalr import add_readiness_check, create_azure_signalr
from signalr_chat.app.settings import Settings
from signalr_chat.hosting import ConfigurationError
from signalr_chat.hosting.health import Health
from signalr_chat.signalr import Hub, HubEndpoint, HubOptions, User, authorize
from signalr_chat.signalr.azure import AzureSignalR, ServiceOptions, wire
from signalr_chat.signalr.azure.client_connection import ABORTED, ServiceTransport
from signalr_chat.signalr.azure.connection_string import MISSING_ACCESS_KEY
from signalr_chat.signalr.azure.server_connection import ServiceConnectionPool
from signalr_chat.signalr.connections import Connection
from signalr_chat.signalr.connections.cors import ALLOWED_METHODS
from tests.support.azure_service import SERVERLESS_ERROR, ServiceDouble
from tests.support.conditions import until

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"  # 44 characters, as an ASRS key
WRONG_KEY = "abcdefghijklmnopqrstuvwxyz0123456789abcdefgh"
HUB = "apphub"  # AppHub's name on the service: the class name, lower-cased
PATH = "/chat/hub"
SECURE_PATH = "/secure"
ORIGIN = "http://page.test"
HANDSHAKE = '{"protocol":"json","version":1}\x1e'
SERVER_LOG = "signalr_chat.signalr.azure.server_connection"
#: What the SDK's app server sends in default mode (notes §2, §4-§6); nothing else may leave ours.
SDK_TYPES = frozenset(
    {
        "HandshakeRequest",
        "Ping",
        "ConnectionData",
        "CloseConnection",
        "MultiConnectionData",
        "UserData",
        "MultiUserData",
        "BroadcastData",
        "GroupBroadcastData",
        "MultiGroupBroadcastData",
        "JoinGroupWithAck",
        "LeaveGroupWithAck",
        "ClientInvocation",
        "ClientCompletion",
        "ErrorCompletion",
        "ConnectionFlowControl",
    }
)
M = TypeVar("M")

DISCONNECTED: list[str] = []


class AppHub(Hub):
    async def on_disconnected(self, exception: BaseException | None) -> None:
        DISCONNECTED.append(self.context.connection_id)

    async def echo(self, value: Any) -> Any:
        return value

    async def join(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def to_all(self, text: str) -> None:
        await self.clients.all.send("All", text)

    async def to_others(self, text: str) -> None:
        await self.clients.others.send("Others", text)

    async def to_group(self, group: str, text: str) -> None:
        await self.clients.group(group).send("Group", text)

    async def to_groups(self, groups: list[str], text: str) -> None:
        await self.clients.groups(groups).send("Groups", text)

    async def to_user(self, user: str, text: str) -> None:
        await self.clients.user(user).send("User", text)

    async def to_users(self, users: list[str], text: str) -> None:
        await self.clients.users(users).send("Users", text)

    async def to_connection(self, connection_id: str, text: str) -> None:
        await self.clients.client(connection_id).send("Direct", text)

    async def to_connections(self, connection_ids: list[str], text: str) -> None:
        await self.clients.clients(connection_ids).send("Connections", text)

    async def ask(self, connection_id: str, method: str) -> Any:
        return await self.clients.client(connection_id).invoke(method)

    async def end(self) -> None:
        self.context.abort()


@authorize
class SecureHub(AppHub):
    pass


async def validate(token: str, request: web.Request) -> User | None:
    """`token-<user>` is that user (with a name and two roles); anything else is refused."""
    if not token.startswith("token-"):
        return None
    user = token.removeprefix("token-")
    if user.endswith("-expiring"):  # a sign-in that expires at EXPIRES_AT
        user = user.removesuffix("-expiring")
        return User(user, {"name": user.title()}, expires_at=EXPIRES_AT)
    return User(user, {"name": user.title(), "role": ["admin", "ops"]})


#: When the expiring test users' sign-in ends (an hour from the start of the run).
EXPIRES_AT = int(time.time()) + 3600


def connection_string(double: ServiceDouble, key: str = KEY) -> str:
    return f"Endpoint=http://127.0.0.1;Port={double.port};AccessKey={key};Version=1.0;"


def decode_token(token: str, hub: str = HUB) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        KEY.encode(),
        algorithms=["HS256"],
        audience=f"http://127.0.0.1/client/?hub={hub}",
        options={"require": ["exp", "nbf", "iat", "aud"]},
    )
    return claims


def service_token(claims: dict[str, Any], *, audience: str, lifetime: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "nbf": now, "iat": now, "exp": now + lifetime, "aud": audience}, KEY.encode())


def json_record(payload: bytes) -> Any:
    assert payload.endswith(b"\x1e"), payload
    return json.loads(payload[:-1])


def msgpack_record(payload: bytes) -> Any:
    length, shift, i = 0, 0, 0
    while True:
        byte = payload[i]
        length |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    assert len(payload) == i + length
    return msgpack.unpackb(payload[i:])


def sent(double: ServiceDouble, server_id: str, kind: type[M], where: Callable[[M], bool] | None = None) -> list[M]:
    """What that app server sent the double, of one type (and condition)."""
    return [m for m in double.messages(server_id) if isinstance(m, kind) and (where is None or where(m))]


async def wait_sent(
    double: ServiceDouble,
    server_id: str,
    kind: type[M],
    where: Callable[[M], bool] | None = None,
    *,
    count: int = 1,
    timeout: float = 5.0,
) -> list[M]:
    await until(lambda: len(sent(double, server_id, kind, where)) >= count, f"{count} {kind.__name__}", timeout)
    return sent(double, server_id, kind, where)


# -- app servers ---------------------------------------------------------------------------------
@dataclass
class App:
    client: TestClient[Any, Any]
    service: AzureSignalR
    endpoints: dict[str, HubEndpoint]
    server_id: str

    @property
    def endpoint(self) -> HubEndpoint:
        return self.endpoints[PATH]

    @property
    def pool(self) -> ServiceConnectionPool:
        return self.service.hubs[HUB].pool

    async def negotiate(self, token: str | None = None, path: str = PATH, **headers: str) -> aiohttp.ClientResponse:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.client.post(f"{path}/negotiate?negotiateVersion=1", headers=headers)


Serve = Callable[..., Awaitable[App]]


@pytest.fixture(autouse=True)
def _forget_disconnects() -> None:
    DISCONNECTED.clear()


@pytest.fixture
async def double() -> AsyncIterator[ServiceDouble]:
    service = ServiceDouble(KEY, ping_interval=0.5)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def served(double: ServiceDouble, aiohttp_client: Any) -> Serve:
    """Starts app servers behind `double` (or the one given); they stop before the double does."""

    async def serve(
        server_id: str = "app-a",
        *,
        service_double: ServiceDouble | None = None,
        key: str = KEY,
        connections: int = 1,
        hub_options: HubOptions | None = None,
        secure: bool = False,
        delay: Callable[[int], float] | None = None,
        wait: bool = True,
        **options: Any,
    ) -> App:
        target = service_double or double
        # shutdown drops the clients at once (fin:0) unless a test asks for migration
        settings = {"connection_count": connections, "shutdown_timeout": 3.0, "migrate_on_shutdown": False, **options}
        service = AzureSignalR(connection_string(target, key), ServiceOptions(**settings), server_id=server_id)
        app = web.Application()
        hub_options = hub_options or HubOptions(cors_origins=(ORIGIN,))
        endpoints = {PATH: service.map_hub(app, PATH, AppHub, options=hub_options, validator=validate)}
        if secure:
            endpoints[SECURE_PATH] = service.map_hub(app, SECURE_PATH, SecureHub, validator=validate)
        if delay is not None:  # the back-off, made fast: the pool's own injection point
            for lifetime in service.hubs.values():
                lifetime.pool._delay = delay
        health = Health()
        add_readiness_check(health, service)
        health.add_routes(app)
        client = await aiohttp_client(app)
        if wait:
            await target.wait_for(
                lambda: sum(1 for c in target.server_connections(HUB, server_id) if c.carries_clients) >= connections,
                timeout=5,
            )
            pools = [lifetime.pool for lifetime in service.hubs.values()]
            await until(
                lambda: all(sum(c.connected for c in pool.connections) >= connections for pool in pools),
                "the app server's side of its connections",
                5,
            )
        return App(client, service, endpoints, server_id)

    return serve


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


# -- a client after the redirect, in the JSON hub protocol by hand --------------------------------
@dataclass(eq=False)
class RawClient:
    ws: aiohttp.ClientWebSocketResponse
    id: str
    #: Client results it gives: method -> result.
    answers: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls,
        session: aiohttp.ClientSession,
        app: App,
        token: str | None = None,
        *,
        answers: dict[str, Any] | None = None,
    ) -> RawClient:
        response = await app.negotiate(token)
        assert response.status == 200, await response.text()
        redirect = await response.json()
        url, access = redirect["url"], redirect["accessToken"]
        negotiate = url.replace("/client/?", "/client/negotiate?", 1)
        async with session.post(negotiate, headers={"Authorization": f"Bearer {access}"}) as negotiated:
            assert negotiated.status == 200, await negotiated.text()
            document = await negotiated.json()
        ws = await session.ws_connect(f"{url}&id={document['connectionToken']}&access_token={access}")
        client = cls(ws, document["connectionId"], answers or {})
        await ws.send_str(HANDSHAKE)
        await client.wait_for(lambda r: r == {}, "the handshake response")
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                text = msg.data if isinstance(msg.data, str) else msg.data.decode()
                for part in text.split("\x1e"):
                    if not part:
                        continue
                    record = json.loads(part)
                    self.records.append(record)
                    if record.get("type") == 1 and record.get("invocationId") and record["target"] in self.answers:
                        result = self.answers[record["target"]]
                        await self.send({"type": 3, "invocationId": record["invocationId"], "result": result})
        finally:
            self.closed.set()

    async def send(self, record: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(record, separators=(",", ":")) + "\x1e")

    async def wait_for(
        self, where: Callable[[dict[str, Any]], bool], what: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [r for r in self.records if where(r)]
            return bool(found)

        await until(check, f"{what} at client {self.id}", timeout)
        return found[0]

    def received(self, target: str) -> list[list[Any]]:
        return [r["arguments"] for r in self.records if r.get("type") == 1 and r.get("target") == target]

    async def invoke(self, target: str, *args: Any) -> dict[str, Any]:
        invocation_id = str(next(self._ids))
        await self.send({"type": 1, "target": target, "arguments": list(args), "invocationId": invocation_id})
        return await self.wait_for(
            lambda r: r.get("type") == 3 and r.get("invocationId") == invocation_id, f"the completion of {target}"
        )

    async def call(self, target: str, *args: Any) -> Any:
        completion = await self.invoke(target, *args)
        assert "error" not in completion, completion
        return completion.get("result")

    async def close(self) -> None:
        await self.ws.close()
        await self.closed.wait()


# == 1. refusals ==================================================================================
async def test_a_wrong_key_is_refused_logged_once_and_reported_until_fixed(
    served: Serve, double: ServiceDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signalr_chat.signalr.azure")
    wrong = await served("app-wrong", key=WRONG_KEY, connections=2, delay=lambda retry: 0.02, wait=False)
    await until(lambda: sum(r.startswith("server:") for r in double.refusals) >= 6, "six refused dials")

    problem = f"hub {HUB}: refused by Azure SignalR Service: HTTP 401 from http://127.0.0.1:{double.port}/"
    assert wrong.service.problem == problem
    ready = await wrong.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["problems"] == {"azure_signalr": problem}
    errors = [r for r in caplog.records if r.name == SERVER_LOG and r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"hub {HUB}: refused by Azure SignalR Service: HTTP 401 from http://127.0.0.1:{double.port}/ "
        "(retrying with back-off)"
    ]
    assert not double.server_connections(HUB)

    fixed = await served("app-fixed", connections=2)
    assert fixed.service.problem is None
    assert (await fixed.client.get("/readyz")).status == 200
    assert double.server_ids(HUB) == ["app-fixed"]
    assert wrong.service.problem == problem  # still refused: the key is wrong there


@pytest.fixture
async def serverless_double() -> AsyncIterator[ServiceDouble]:
    service = ServiceDouble(KEY, serverless=True)
    await service.start()
    yield service
    await service.stop()


async def test_a_serverless_service_refuses_with_its_own_words(
    serverless_double: ServiceDouble, served: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = await served(service_double=serverless_double, delay=lambda retry: 0.02, wait=False)
    await until(lambda: len(sent(serverless_double, "app-a", wire.HandshakeRequest)) >= 3, "three handshakes")
    problem = f"hub {HUB}: refused by Azure SignalR Service: {SERVERLESS_ERROR}"
    assert app.service.problem == problem
    ready = await app.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["problems"] == {"azure_signalr": problem}
    errors = [r.getMessage() for r in caplog.records if r.name == SERVER_LOG and r.levelno >= logging.ERROR]
    assert errors == [f"hub {HUB}: refused by Azure SignalR Service: {SERVERLESS_ERROR} (retrying with back-off)"]


# == 2. the negotiate redirect ====================================================================
async def test_negotiate_redirects_to_the_service_with_the_users_token(served: Serve, double: ServiceDouble) -> None:
    app = await served()
    response = await app.negotiate("token-alice")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert list(document) == ["negotiateVersion", "url", "accessToken", "availableTransports"]
    assert document["negotiateVersion"] == 0
    assert document["availableTransports"] == []

    prefix = (
        f"http://127.0.0.1:{double.port}/client/?hub={HUB}&asrs.op=%2Fchat%2Fhub&negotiateVersion=1&asrs_request_id="
    )
    url: str = document["url"]
    assert url.startswith(prefix), url
    request_id = url.removeprefix(prefix)
    assert "&" not in request_id and "/" not in request_id and "+" not in request_id
    assert len(base64.b64decode(unquote(request_id))) == 8

    claims = decode_token(document["accessToken"])
    assert claims["aud"] == f"http://127.0.0.1/client/?hub={HUB}"
    assert claims["asrs.s.uid"] == "alice"
    assert claims["name"] == "Alice"
    assert claims["role"] == ["admin", "ops"]
    assert claims["exp"] - claims["nbf"] == 3600
    assert "asrs.s.sn" not in claims  # ServerStickyMode Disabled

    # each negotiate gets a request id of its own
    again = await (await app.negotiate("token-alice")).json()
    assert again["url"] != url

    # the stock client sends the service's token again when it restarts: the same user
    resent = await app.negotiate(document["accessToken"])
    assert resent.status == 200
    reissued = decode_token((await resent.json())["accessToken"])
    assert (reissued["asrs.s.uid"], reissued["name"], reissued["role"]) == ("alice", "Alice", ["admin", "ops"])


async def test_close_on_authentication_expiration_is_the_services_behind_it(served: Serve) -> None:
    """CloseOnAuthenticationExpiration with a user whose sign-in expires: the client's token tells
    the service (asrs.s.coae, asrs.s.aeo = the expiry), as the SDK's negotiate does."""
    app = await served(hub_options=HubOptions(close_on_authentication_expiration=True))
    claims = decode_token((await (await app.negotiate("token-carol-expiring")).json())["accessToken"])
    assert claims["asrs.s.coae"] == "true"
    assert claims["asrs.s.aeo"] == str(EXPIRES_AT)
    # without the option, or for a sign-in that does not expire, the service is told nothing
    plain = await served(hub_options=HubOptions(close_on_authentication_expiration=True))
    assert "asrs.s.coae" not in decode_token((await (await plain.negotiate("token-carol")).json())["accessToken"])
    off = await served()
    assert "asrs.s.coae" not in decode_token(
        (await (await off.negotiate("token-carol-expiring")).json())["accessToken"]
    )


async def test_negotiate_anonymous_authorize_and_bad_tokens(served: Serve) -> None:
    app = await served(secure=True, access_token_lifetime=600)
    anonymous = await app.negotiate()
    assert anonymous.status == 200
    anonymous_token = (await anonymous.json())["accessToken"]
    claims = decode_token(anonymous_token)
    assert "asrs.s.uid" not in claims
    assert claims["exp"] - claims["nbf"] == 600  # ServiceOptions.access_token_lifetime
    assert not [c for c in claims if c not in ("nbf", "exp", "iat", "iss", "aud")]
    assert (await app.negotiate(anonymous_token)).status == 200  # the service's own token, anonymous

    for token in (
        "not-a-token",
        service_token({"asrs.s.uid": "mallory"}, audience="http://127.0.0.1/client/?hub=another"),
        service_token({"asrs.s.uid": "mallory"}, audience=f"http://127.0.0.1/client/?hub={HUB}", lifetime=-600),
        jwt.encode({"asrs.s.uid": "mallory", "aud": f"http://127.0.0.1/client/?hub={HUB}"}, WRONG_KEY.encode()),
    ):
        refused = await app.negotiate(token)
        assert refused.status == 401, token
        assert await refused.read() == b""

    # an @authorize hub: no user, no redirect; a user (or the service's token of one) is let through
    secure_anonymous = await app.negotiate(path=SECURE_PATH)
    assert secure_anonymous.status == 401
    assert await secure_anonymous.read() == b""
    secure_hub_anonymous = service_token({}, audience="http://127.0.0.1/client/?hub=securehub")
    assert (await app.negotiate(secure_hub_anonymous, path=SECURE_PATH)).status == 401
    secure = await app.negotiate("token-bob", path=SECURE_PATH)
    assert secure.status == 200
    secure_token = (await secure.json())["accessToken"]
    assert decode_token(secure_token, "securehub")["asrs.s.uid"] == "bob"
    assert (await app.negotiate(secure_token, path=SECURE_PATH)).status == 200
    # a token of one hub is no good at another
    assert (await app.negotiate(secure_token)).status == 401

    assert (await app.client.get(f"{PATH}/negotiate")).status == 405


async def test_negotiate_while_shutting_down_and_cors(served: Serve) -> None:
    app = await served()
    connection_endpoint = app.endpoint.connection_endpoint
    connection_endpoint.accepting = False
    try:
        closing = await app.negotiate("token-alice", Origin=ORIGIN)
        assert closing.status == 503
        assert await closing.text() == "Server is shutting down"
        assert closing.headers["Access-Control-Allow-Origin"] == ORIGIN
    finally:
        connection_endpoint.accepting = True

    preflight = await app.client.options(
        f"{PATH}/negotiate",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert preflight.headers["Access-Control-Allow-Methods"] == ALLOWED_METHODS
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

    allowed = await app.negotiate(Origin=ORIGIN)
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"

    other = await app.negotiate(Origin="http://elsewhere.test")
    assert other.status == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    other_preflight = await app.client.options(
        f"{PATH}/negotiate", headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in other_preflight.headers


async def test_a_service_hub_name_is_mapped_once(served: Serve) -> None:
    app = await served()
    with pytest.raises(ValueError, match="'apphub' is already mapped"):
        app.service.map_hub(web.Application(), "/again", AppHub)
    with pytest.raises(ValueError, match="'apphub' is already mapped"):
        app.service.map_hub(web.Application(), "/other", SecureHub, hub_name="AppHub")
    app.service.map_hub(web.Application(), "/other", SecureHub, hub_name="apphub2")  # a name of its own is fine


# == 3. only what the SDK sends ===================================================================
async def test_hub_sends_are_the_sdks_service_messages(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    app = await served()
    sid = app.server_id
    a = await RawClient.connect(session, app, "token-alice")
    b = await RawClient.connect(session, app, "token-bob", answers={"GetAnswer": 42})

    await a.call("join", "g1")
    await a.call("to_all", "m-all")
    await a.call("to_others", "m-others")
    await a.call("to_group", "g1", "m-group")
    await a.call("to_groups", ["g1", "g2"], "m-groups")
    await a.call("to_user", "bob", "m-user")
    await a.call("to_users", ["alice", "bob"], "m-users")
    await a.call("to_connection", b.id, "m-direct")
    await a.call("to_connections", [a.id, b.id], "m-connections")
    assert await a.call("ask", b.id, "GetAnswer") == 42
    await a.call("leave", "g1")
    await a.call("to_group", "g1", "m-group-after")

    # the double delivered them as the service would: in order, so what came before the last is in
    await a.wait_for(lambda r: r.get("target") == "Connections", "the last send")
    await b.wait_for(lambda r: r.get("target") == "Connections", "the last send")
    assert a.received("All") == [["m-all"]] and b.received("All") == [["m-all"]]
    assert a.received("Others") == [] and b.received("Others") == [["m-others"]]
    assert a.received("Group") == [["m-group"]] and b.received("Group") == []
    assert a.received("Groups") == [["m-groups"]]
    assert a.received("User") == [] and b.received("User") == [["m-user"]]
    assert a.received("Users") == [["m-users"]] and b.received("Users") == [["m-users"]]
    assert a.received("Direct") == [] and b.received("Direct") == [["m-direct"]]

    def carrying(marker: str) -> list[Any]:
        return [m for m in double.messages(sid) if marker.encode() in getattr(m, "payloads", {}).get("json", b"")]

    everyone = {"json", "messagepack"}
    (broadcast,) = carrying('"m-all"')
    assert isinstance(broadcast, wire.BroadcastData)
    assert broadcast.excluded_connection_ids == ()
    assert set(broadcast.payloads) == everyone  # a key per protocol the hub enables
    assert json_record(broadcast.payloads["json"]) == {"type": 1, "target": "All", "arguments": ["m-all"]}
    unpacked = msgpack_record(broadcast.payloads["messagepack"])
    assert unpacked[0] == 1 and unpacked[3:5] == ["All", ["m-all"]]

    (others,) = carrying('"m-others"')
    assert isinstance(others, wire.BroadcastData) and others.excluded_connection_ids == (a.id,)
    (group,) = carrying('"m-group"')
    assert isinstance(group, wire.GroupBroadcastData) and group.group == "g1"
    assert group.excluded_connection_ids == () and set(group.payloads) == everyone
    (groups,) = carrying('"m-groups"')
    assert isinstance(groups, wire.MultiGroupBroadcastData) and groups.groups == ("g1", "g2")
    (user,) = carrying('"m-user"')
    assert isinstance(user, wire.UserData) and user.user_id == "bob" and set(user.payloads) == everyone
    (users,) = carrying('"m-users"')
    assert isinstance(users, wire.MultiUserData) and users.user_ids == ("alice", "bob")
    (direct,) = carrying('"m-direct"')
    # a local connection: only its protocol's payload
    assert isinstance(direct, wire.MultiConnectionData) and direct.connection_ids == (b.id,)
    assert set(direct.payloads) == {"json"}
    (connections,) = carrying('"m-connections"')
    assert isinstance(connections, wire.MultiConnectionData)
    assert connections.connection_ids == (a.id, b.id) and set(connections.payloads) == everyone

    join, leave = sent(double, sid, wire.JoinGroupWithAck), sent(double, sid, wire.LeaveGroupWithAck)
    assert [(m.connection_id, m.group) for m in join] == [(a.id, "g1")]
    assert [(m.connection_id, m.group) for m in leave] == [(a.id, "g1")]
    assert join[0].ack_id != leave[0].ack_id

    (invocation,) = sent(double, sid, wire.ClientInvocation)
    assert (invocation.connection_id, invocation.caller_server_id) == (b.id, sid)
    assert set(invocation.payloads) == {"json"}
    asked = json_record(invocation.payloads["json"])
    assert asked == {"type": 1, "invocationId": invocation.invocation_id, "target": "GetAnswer", "arguments": []}
    (completion,) = sent(double, sid, wire.ClientCompletion)
    # the caller owns the client: it only tells the service to forget the invocation
    assert completion == wire.ClientCompletion(invocation.invocation_id, b.id, sid, "json", b"")

    # each connection's first ConnectionData is the handshake response, tagged; nothing else is
    for client in (a, b):
        data = sent(double, sid, wire.ConnectionData, lambda m, c=client: m.connection_id == c.id)
        assert data[0].payload == b"{}\x1e"
        assert data[0].data_message_type == wire.DataMessageType.HANDSHAKE
        assert all(m.data_message_type != wire.DataMessageType.HANDSHAKE for m in data[1:])

    # the service closes a client: the app server does not answer with a CloseConnection
    await a.close()
    await until(lambda: a.id in DISCONNECTED, "a's on_disconnected")
    assert a.id not in app.pool.clients
    # the hub ends a client: its Close message, then CloseConnection
    await b.send({"type": 1, "target": "end", "arguments": []})
    await b.closed.wait()
    await until(lambda: b.id in DISCONNECTED, "b's on_disconnected")
    (closed,) = await wait_sent(double, sid, wire.CloseConnection)
    assert closed == wire.CloseConnection(b.id, "")
    assert b.records[-1] == {"type": 7}

    types = set(double.message_types(sid))
    assert types <= SDK_TYPES, types - SDK_TYPES
    assert types >= SDK_TYPES - {"Ping", "ErrorCompletion", "ConnectionFlowControl"}
    assert not double.protocol_errors and not double.stray


# == 4. pings and timers ==========================================================================
async def test_keep_alive_status_and_echo_pings(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    app = await served(keep_alive_interval=0.2, status_interval=0.2)
    sid = app.server_id
    client = await RawClient.connect(session, app)
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("#clientInHub", "1", "#client", "1"))
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("status", "1"))
    assert double.send_ping(sid, ["echo", "abc-123"]) == 1
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("echo", "abc-123"))
    await client.close()
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("#clientInHub", "0", "#client", "0"))
    pings = {p.messages[0] for p in sent(double, sid, wire.Ping) if p.messages}
    assert pings == {"#clientInHub", "status", "echo"}


async def test_offline_ping_closes_that_instances_clients(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    app = await served()
    sid = app.server_id
    a = await RawClient.connect(session, app, "token-alice")
    b = await RawClient.connect(session, app)
    assert {t.instance_id for t in app.pool.clients.values()} == {double.instance_id}

    double.send_ping(sid, ["offline", "another-instance"])
    double.send_ping(sid, ["echo", "barrier"])
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("echo", "barrier"))
    assert set(app.pool.clients) == {a.id, b.id} and DISCONNECTED == []

    double.send_ping(sid, ["offline", double.instance_id])
    await until(lambda: set(DISCONNECTED) == {a.id, b.id}, "both clients' on_disconnected")
    assert app.pool.clients == {}
    assert not sent(double, sid, wire.CloseConnection)  # the instance is gone: nobody to tell


async def test_target_ping_opens_one_on_demand_connection_within_the_cap(served: Serve, double: ServiceDouble) -> None:
    app = await served(max_connection_count=2)
    sid = app.server_id
    double.send_ping(sid, ["target", "instance-7"])
    (request,) = await wait_sent(double, sid, wire.HandshakeRequest, lambda m: m.connection_type == 1)
    assert request.target == "instance-7"
    await until(lambda: len(double.server_connections(HUB, sid)) == 2, "the on-demand connection registered")
    assert sorted(str(c.target) for c in double.server_connections(HUB, sid)) == ["None", "instance-7"]

    assert double.send_ping(sid, ["target", "instance-8"]) == 2  # over both connections: the cap holds
    double.send_ping(sid, ["echo", "barrier"])
    await wait_sent(double, sid, wire.Ping, lambda p: p.messages == ("echo", "barrier"), count=2)
    assert len(app.pool.connections) == 2
    assert len(sent(double, sid, wire.HandshakeRequest)) == 2


@pytest.fixture
async def silent_double() -> AsyncIterator[ServiceDouble]:
    service = ServiceDouble(KEY, ping_interval=0)  # never pings: only what the app provokes arrives
    await service.start()
    yield service
    await service.stop()


async def test_a_silent_service_connection_is_dropped_and_redialled(
    silent_double: ServiceDouble, served: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = await served(service_double=silent_double, service_timeout=1.0)
    (first,) = silent_double.server_connections(HUB, app.server_id)
    await wait_sent(silent_double, app.server_id, wire.HandshakeRequest, count=2, timeout=6)
    await until(lambda: first not in silent_double.server_connections(HUB, app.server_id), "the silent one closed")
    await silent_double.wait_for_servers(HUB, 1, timeout=5)
    assert any(
        r.name == SERVER_LOG and r.levelno == logging.WARNING and "nothing from the service" in r.getMessage()
        for r in caplog.records
    )


# == 5. ServiceTransport on a fake carrier ========================================================
class FakeCarrier:
    """A server connection without a socket: frames collected, flushes on demand."""

    def __init__(self) -> None:
        self.connected = True
        self.out = bytearray()
        self.scheduled: list[ServiceTransport] = []
        self.forgotten: list[ServiceTransport] = []

    def schedule(self, transport: ServiceTransport) -> None:
        self.scheduled.append(transport)

    def write(self, data: bytes) -> None:
        self.out += data

    def forget(self, transport: ServiceTransport) -> None:
        self.forgotten.append(transport)

    def flush(self) -> list[Any]:
        """The end of the loop turn: scheduled transports give their frames; returns all written."""
        scheduled, self.scheduled = self.scheduled, []
        for transport in scheduled:
            transport.take_frames(self.out)
        return self.take()

    def take(self) -> list[Any]:
        messages = wire.FrameReader().feed(bytes(self.out))
        self.out.clear()
        return messages


def carried(*, migrated_in: bool = False) -> tuple[Connection, ServiceTransport, FakeCarrier]:
    connection = Connection("c1", "t1", 1)
    carrier = FakeCarrier()
    transport = ServiceTransport(connection, carrier, migrated_in=migrated_in)
    connection.attach(transport)
    return connection, transport, carrier


def test_partial_data_waits_for_the_rest_and_a_reconnect_voids_it() -> None:
    _, transport, _ = carried()
    assert transport.received(b'{"type":1,', True) is None
    assert transport.received(b'"target":"x",', True) is None
    assert transport.received(b'"arguments":[]}\x1e', False) == b'{"type":1,"target":"x","arguments":[]}\x1e'
    assert transport.received(b'{"type":6}\x1e', False) == b'{"type":6}\x1e'

    assert transport.received(b'{"type":1,"tar', True) is None
    transport.reconnected()
    assert transport.received(b'{"type":6}\x1e', False) == b'{"type":6}\x1e'


def test_the_handshake_response_leaves_alone_and_tagged() -> None:
    connection, _, carrier = carried()
    connection.send(b"{}\x1e")
    connection.send(b'{"type":6}\x1e')
    connection.send(b'{"type":1,"target":"a","arguments":[]}\x1e')
    assert carrier.flush() == [
        wire.ConnectionData("c1", b"{}\x1e", data_message_type=wire.DataMessageType.HANDSHAKE),
        wire.ConnectionData("c1", b'{"type":6}\x1e{"type":1,"target":"a","arguments":[]}\x1e'),
    ]
    connection.send(b"{}\x1e")  # not a handshake response any more: an ordinary record
    assert carrier.flush() == [wire.ConnectionData("c1", b"{}\x1e")]


def test_a_migrated_in_connection_never_sends_its_handshake_response() -> None:
    connection, _, carrier = carried(migrated_in=True)
    connection.send(b"{}\x1e")
    assert carrier.flush() == []
    connection.send(b'{"type":6}\x1e')
    assert carrier.flush() == [wire.ConnectionData("c1", b'{"type":6}\x1e')]

    connection, _, carrier = carried(migrated_in=True)
    connection.send(b"{}\x1e")
    connection.send(b'{"type":1,"target":"a","arguments":[]}\x1e')
    assert carrier.flush() == [wire.ConnectionData("c1", b'{"type":1,"target":"a","arguments":[]}\x1e')]


def test_pause_holds_output_and_resume_releases_it_in_order() -> None:
    connection, transport, carrier = carried()
    connection.send(b"{}\x1e")
    carrier.flush()
    transport.pause()
    connection.send(b'"one"\x1e')
    connection.send(b'"two"\x1e')
    assert carrier.scheduled == []
    transport.take_frames(carrier.out)  # a flush of the server connection takes nothing either
    assert carrier.take() == []
    transport.resume()
    connection.send(b'"three"\x1e')
    assert carrier.flush() == [wire.ConnectionData("c1", b'"one"\x1e"two"\x1e"three"\x1e')]


async def test_close_flushes_then_closes_and_drop_sends_nothing_pending() -> None:
    connection, transport, carrier = carried()
    connection.send(b"{}\x1e")
    connection.send(b'{"type":7}\x1e')
    await transport.close()
    assert carrier.take() == [
        wire.ConnectionData("c1", b"{}\x1e", data_message_type=wire.DataMessageType.HANDSHAKE),
        wire.ConnectionData("c1", b'{"type":7}\x1e'),
        wire.CloseConnection("c1", ""),
    ]
    assert carrier.forgotten == [transport] and not transport.active
    connection.send(b'"late"\x1e')
    await transport.close()
    transport.drop()
    assert carrier.flush() == [] and carrier.forgotten == [transport]

    connection, transport, carrier = carried()
    connection.send(b"{}\x1e")
    carrier.flush()
    connection.send(b'"unsent"\x1e')
    transport.drop()
    assert carrier.take() == [wire.CloseConnection("c1", ABORTED)]
    assert ABORTED == "The connection was aborted."
    assert carrier.forgotten == [transport]
    assert carrier.flush() == []


def test_closed_by_the_service_sends_nothing() -> None:
    connection, transport, carrier = carried()
    connection.send(b"{}\x1e")
    carrier.flush()
    connection.send(b'{"type":7}\x1e')
    transport.closed_by_service("app-b")  # moved to another server: its pending output is void
    assert not connection.has_pending
    assert carrier.flush() == [] and carrier.forgotten == [transport]
    transport.drop()
    assert carrier.take() == []

    connection, transport, carrier = carried()
    connection.send(b'"pending"\x1e')
    transport.closed_by_service(None)  # the client left
    assert carrier.flush() == [] and carrier.forgotten == [transport]


# == 6. group and client-result errors ============================================================
async def test_group_changes_for_unknown_connections_and_without_acks(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await served(ack_timeout=0.5)
    groups = app.endpoint.hub_context.groups
    with pytest.raises(ConnectionError) as missing:
        await groups.add("ghost", "g")
    assert str(missing.value) == "Connection 'ghost' does not exist."
    with pytest.raises(ConnectionError) as missing:
        await groups.remove("ghost", "g")
    assert str(missing.value) == "Connection 'ghost' does not exist."

    client = await RawClient.connect(session, app)
    await groups.add(client.id, "g")
    assert double.group_members(HUB, "g") == {client.id}

    original = double._on_server_message

    def without_acks(conn: Any, message: wire.ServiceMessage) -> None:
        if not isinstance(message, wire.JoinGroupWithAck | wire.LeaveGroupWithAck):
            original(conn, message)

    monkeypatch.setattr(double, "_on_server_message", without_acks)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as unacknowledged:
        await groups.add(client.id, "h")
    assert 0.4 < time.monotonic() - started < 3
    assert str(unacknowledged.value) == (
        f"Connection '{client.id}': Azure SignalR Service did not acknowledge the group change within 0.5 s."
    )
    assert app.pool._acks == {}


async def test_a_client_result_fails_when_its_client_goes(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    app = await served()
    clients = app.endpoint.hub_context.clients
    with pytest.raises(ConnectionError) as missing:
        await clients.client("ghost").invoke("Anything")
    assert str(missing.value) == "Connection 'ghost' does not exist."

    client = await RawClient.connect(session, app)
    asking = asyncio.ensure_future(clients.client(client.id).invoke("Hang"))
    await client.wait_for(lambda r: r.get("target") == "Hang", "the invocation")
    await client.close()
    with pytest.raises(ConnectionError) as gone:
        await asyncio.wait_for(asking, 5)
    assert str(gone.value) == f"Connection '{client.id}' disconnected."


async def test_client_results_across_app_servers(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    owner = await served("app-a", server_sticky_mode="Preferred")
    caller = await served("app-b")
    client = await RawClient.connect(session, owner, answers={"GetAnswer": {"n": 42}})
    assert double.state()["clients"][client.id]["server"] == "app-a"

    remote = caller.endpoint.hub_context.clients.client(client.id)
    assert await remote.invoke("GetAnswer") == {"n": 42}
    (invocation,) = sent(double, "app-b", wire.ClientInvocation)
    assert set(invocation.payloads) == {"json", "messagepack"}  # not ours: every protocol
    (completion,) = sent(double, "app-a", wire.ClientCompletion)
    assert (completion.invocation_id, completion.connection_id) == (invocation.invocation_id, client.id)
    assert (completion.caller_server_id, completion.protocol) == ("app-b", "json")
    assert json_record(completion.payload) == {"type": 3, "invocationId": invocation.invocation_id, "result": {"n": 42}}

    asking = asyncio.ensure_future(remote.invoke("Hang"))
    await client.wait_for(lambda r: r.get("target") == "Hang", "the invocation")
    await client.close()
    with pytest.raises(ConnectionError) as gone:
        await asyncio.wait_for(asking, 5)
    assert str(gone.value) == f"Connection '{client.id}' disconnected."
    (error,) = await wait_sent(double, "app-a", wire.ErrorCompletion)
    assert (error.connection_id, error.caller_server_id) == (client.id, "app-b")
    assert error.error == f"Connection '{client.id}' disconnected."
    for server in ("app-a", "app-b"):
        assert set(double.message_types(server)) <= SDK_TYPES


# == 7. graceful shutdown =========================================================================
async def test_shutdown_waits_for_every_finack(
    served: Serve, double: ServiceDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await served(connections=2)
    on_ping, loop = double._on_ping, asyncio.get_running_loop()

    def slow_to_acknowledge(conn: Any, ping: wire.Ping) -> None:
        if ping.get("shutdown") is None:
            on_ping(conn, ping)
        else:
            loop.call_later(0.3, on_ping, conn, ping)

    monkeypatch.setattr(double, "_on_ping", slow_to_acknowledge)
    started = time.monotonic()
    await app.service.shutdown()
    assert 0.25 < time.monotonic() - started < 2.5
    assert [c.finack.is_set() for c in app.pool.connections] == [True, True]


async def test_shutdown_fin_waits_for_finack_and_the_clients_move(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaving = await served("app-a", connections=2, migrate_on_shutdown=True, server_sticky_mode="Preferred")
    staying = await served("app-b", connections=2)
    clients = [await RawClient.connect(session, leaving, f"token-user{i}") for i in range(3)]
    assert {double.state()["clients"][c.id]["server"] for c in clients} == {"app-a"}
    requests = sent(double, "app-a", wire.HandshakeRequest)
    assert [r.migration_level for r in requests] == [wire.MigrationLevel.SHUTDOWN_ONLY] * 2
    # the service moves the clients a little after its finack, as a real move takes a while
    migrate, loop = double._migrate, asyncio.get_running_loop()
    monkeypatch.setattr(double, "_migrate", lambda client: loop.call_later(0.3, migrate, client))

    started = time.monotonic()
    await leaving.service.shutdown()
    assert 0.25 < time.monotonic() - started < 2.5

    fins = sent(double, "app-a", wire.Ping, lambda p: p.messages == ("shutdown", "fin:1"))
    assert len(fins) == 2  # one per connection: each was acknowledged at once
    assert all(c.finack.is_set() for c in leaving.pool.connections)
    assert leaving.pool.clients == {}
    state = double.state()["clients"]
    for client in clients:
        assert (state[client.id]["server"], state[client.id]["migrated_from"]) == ("app-b", ["app-a"])
        assert client.id in staying.pool.clients
    # the clients never noticed: no Close from the old server, no second handshake from the new one
    for client in clients:
        assert await client.call("echo", "still here") == "still here"
        assert [r for r in client.records if r.get("type") == 7 or r == {}] == [{}]
    assert not sent(double, "app-a", wire.CloseConnection)
    assert not double.stray


async def test_shutdown_without_migration_sends_fin0(
    served: Serve, double: ServiceDouble, session: aiohttp.ClientSession
) -> None:
    app = await served(connections=2)
    client = await RawClient.connect(session, app)
    assert [r.migration_level for r in sent(double, "app-a", wire.HandshakeRequest)] == [wire.MigrationLevel.OFF] * 2
    await asyncio.wait_for(app.service.shutdown(), 2.5)
    fins = sent(double, "app-a", wire.Ping, lambda p: p.get("shutdown") is not None)
    assert [p.messages for p in fins] == [("shutdown", "fin:0")] * 2
    assert app.pool.clients == {}
    await asyncio.wait_for(client.closed.wait(), 5)
    assert double.going_away(HUB, "app-a")


# == 8. settings ==================================================================================
def test_settings_take_either_name_of_the_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AZURE_SIGNALR_CONNECTION_STRING",
        "Azure__SignalR__ConnectionString",
        "AZURE_SIGNALR_CONNECTIONSTRING",
    ):
        monkeypatch.delenv(name, raising=False)
    text = f"Endpoint=http://127.0.0.1;Port=7071;AccessKey={KEY};Version=1.0;"
    assert Settings(_env_file=None).azure_signalr_connection_string is None  # type: ignore[call-arg]

    monkeypatch.setenv("Azure__SignalR__ConnectionString", text)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.azure_signalr_connection_string is not None
    assert settings.azure_signalr_connection_string.get_secret_value() == text
    service = create_azure_signalr(settings)
    assert service is not None
    assert (service.endpoint.endpoint, service.endpoint.port) == ("http://127.0.0.1:7071", 7071)
    assert service.options.connection_count == settings.azure_signalr_server_connection_count

    monkeypatch.delenv("Azure__SignalR__ConnectionString")
    monkeypatch.setenv("AZURE_SIGNALR_CONNECTION_STRING", text)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.azure_signalr_connection_string is not None
    assert settings.azure_signalr_connection_string.get_secret_value() == text

    monkeypatch.setenv("AZURE_SIGNALR_CONNECTION_STRING", "  ")
    assert create_azure_signalr(Settings(_env_file=None)) is None  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Endpoint=http://127.0.0.1;Version=1.0;", MISSING_ACCESS_KEY),
        (f"Endpoint=http://127.0.0.1;AccessKey={KEY};Version=2.0;", "Version 2.0 is not supported."),
        (f"AccessKey={KEY};Version=1.0;", "Connection string missing required properties endpoint."),
    ],
)
def test_a_bad_connection_string_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, text: str, error: str
) -> None:
    monkeypatch.delenv("Azure__SignalR__ConnectionString", raising=False)
    monkeypatch.setenv("AZURE_SIGNALR_CONNECTION_STRING", text)
    with pytest.raises(ConfigurationError) as raised:
        create_azure_signalr(Settings(_env_file=None))  # type: ignore[call-arg]
    assert str(raised.value) == f"AZURE_SIGNALR_CONNECTION_STRING: {error}"
