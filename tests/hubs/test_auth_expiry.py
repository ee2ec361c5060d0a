"""Tokens that expire while connected, on the wire: close on authentication expiration and
authentication refresh as ASP.NET Core 11 serves them (negotiate's `tokenLifetimeSeconds`,
`POST {hub}/refresh`, the 409 of an expired long poll), and nothing of it where both are off.

The hub runs in process (pytest-aiohttp); the validator and the connection manager share a
clock the test moves, so a token expires when the test says, without waiting for it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from signalr_chat.signalr import Hub, HubEndpoint, HubOptions, User, map_hub
from signalr_chat.signalr.connections import Connection
from tests.connections.test_heartbeat import RecordingTransport, open_connection
from tests.support.conditions import until, within_loop_turns

pytestmark = pytest.mark.timeout(30)

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
CLOSE_AT_EXPIRY = {"type": 7, "allowReconnect": True}
REFRESH_REQUIRED = "authentication_refresh_required"


class Clock:
    """Unix time as the test says it is."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class RefreshHub(Hub):
    async def on_connected(self) -> None:
        self.context.items["refreshed"] = []

    async def on_authentication_refreshed(self) -> None:
        user = self.context.user
        self.context.items["refreshed"].append(user.expires_at if user is not None else None)

    def expires_at(self) -> float | None:
        user = self.context.user
        return user.expires_at if user is not None else None

    def add(self, a: int, b: int) -> int:
        return a + b


def validator(clock: Clock) -> Callable[[str, web.Request], Any]:
    """`<user>@<unix expiry>` is refused from its expiry on, as a JWT; `<user>` never expires."""

    async def validate(token: str, request: web.Request) -> User | None:
        user, _, expiry = token.partition("@")
        if not expiry:
            return User(user)
        expires_at = float(expiry)
        return User(user, expires_at=expires_at) if expires_at > clock() else None

    return validate


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Served:
    def __init__(self, client: TestClient[Any, Any], endpoints: dict[str, HubEndpoint], clock: Clock) -> None:
        self.client = client
        self.endpoints = endpoints
        self.clock = clock

    def token(self, user: str, seconds: float) -> str:
        return f"{user}@{self.clock() + seconds}"

    async def negotiate(self, path: str, token: str | None, version: int = 1) -> dict[str, Any]:
        headers = bearer(token) if token else {}
        async with self.client.post(f"{path}/negotiate?negotiateVersion={version}", headers=headers) as response:
            assert response.status == 200
            document: dict[str, Any] = await response.json()
            return document

    def connection(self, path: str, token: str) -> Connection:
        connection = self.endpoints[path].connections.get(token)
        assert connection is not None
        return connection

    async def refresh(
        self, path: str, connection_token: str | None, token: str | None, *, in_query: bool = False
    ) -> tuple[int, Any]:
        headers = bearer(token) if token else {}
        url = f"{path}/refresh"
        if connection_token is not None and in_query:
            url += f"?id={connection_token}"
        elif connection_token is not None:
            headers["X-SignalR-Connection-Token"] = connection_token
        async with self.client.post(url, headers=headers) as response:
            body = await response.read()
            if response.status != 405:
                assert response.content_type == "application/json"
            return response.status, json.loads(body) if body else None


PATHS = {
    # as the chat serves it: refresh, and expired connections closed
    "/both": {"close_on_authentication_expiration": True, "enable_authentication_refresh": True},
    "/close": {"close_on_authentication_expiration": True},
    "/refresh": {"enable_authentication_refresh": True},
    "/off": {},
}


@pytest.fixture
async def served(aiohttp_client: Any) -> Served:
    clock = Clock()
    app = web.Application()
    endpoints = {}
    for path, options in PATHS.items():
        endpoint = map_hub(app, path, RefreshHub, options=HubOptions(**options), validator=validator(clock))
        endpoint.connections.wall_clock = clock
        endpoints[path] = endpoint
    return Served(await aiohttp_client(app), endpoints, clock)


async def frame(ws: Any) -> bytes:
    """One JSON frame (Text, as the server sends JSON)."""
    message = await ws.receive(timeout=5)
    assert message.type is WSMsgType.TEXT, message
    return str(message.data).encode()


def records(data: bytes) -> list[Any]:
    return [json.loads(part) for part in data.split(RS) if part]


# ================================================================================
# negotiate
# ================================================================================


async def test_negotiate_reports_the_token_lifetime_where_refresh_is_served(served: Served) -> None:
    document = await served.negotiate("/refresh", served.token("alice", 30.9))
    assert document["tokenLifetimeSeconds"] == 30  # whole seconds left, as ASP.NET Core truncates
    assert (await served.negotiate("/both", served.token("alice", 600)))["tokenLifetimeSeconds"] == 600


@pytest.mark.parametrize(
    ("path", "user", "version"),
    [
        ("/off", "alice@", 1),  # refresh not served
        ("/close", "alice@", 1),  # closing on expiry alone does not offer refresh
        ("/refresh", "alice", 1),  # a token that never expires
        ("/refresh", None, 1),  # anonymous
        ("/refresh", "alice@", 0),  # negotiate v0 has no private token to refresh with
    ],
)
async def test_negotiate_reports_no_lifetime_otherwise(
    served: Served, path: str, user: str | None, version: int
) -> None:
    token = served.token("alice", 30) if user == "alice@" else user
    document = await served.negotiate(path, token, version)
    assert "tokenLifetimeSeconds" not in document


# ================================================================================
# POST {hub}/refresh
# ================================================================================


@pytest.mark.parametrize("in_query", [False, True], ids=["header", "id-query"])
async def test_refresh_takes_a_new_token_of_the_same_user(served: Served, in_query: bool) -> None:
    first = served.token("alice", 30)
    document = await served.negotiate("/both", first)
    connection = served.connection("/both", document["connectionToken"])
    renewed = served.token("alice", 90.5)
    status, body = await served.refresh("/both", document["connectionToken"], renewed, in_query=in_query)
    assert status == 200
    assert body["connectionId"] == document["connectionId"]
    assert body["tokenLifetimeSeconds"] == 90
    assert datetime.fromisoformat(body["refreshedAt"]).tzinfo is not None
    assert set(body) == {"connectionId", "refreshedAt", "tokenLifetimeSeconds"}
    assert connection.user is not None and connection.user.expires_at == float(renewed.partition("@")[2])


async def test_refresh_never_moves_the_expiry_backwards(served: Served) -> None:
    document = await served.negotiate("/both", served.token("alice", 90))
    status, body = await served.refresh("/both", document["connectionToken"], served.token("alice", 30))
    assert (status, body["tokenLifetimeSeconds"]) == (200, 90)  # the later one still holds


async def test_refresh_errors_leave_the_connection_as_it_was(served: Served) -> None:
    first = served.token("alice", 30)
    document = await served.negotiate("/both", first)
    token = document["connectionToken"]
    connection = served.connection("/both", token)
    held = connection.user

    cases = [
        (None, served.token("alice", 60), 400, "missing_connection_token"),
        ("no-such-connection", served.token("alice", 60), 404, "connection_not_found"),
        (token, None, 401, "invalid_token"),
        (token, "alice@1", 401, "invalid_token"),  # an expired token
        (token, served.token("mallory", 60), 403, "user_changed"),
    ]
    for connection_token, bearer_token, status, error in cases:
        answered, body = await served.refresh("/both", connection_token, bearer_token)
        assert (answered, body["error"]) == (status, error), (connection_token, bearer_token)
        assert isinstance(body["error_description"], str) and body["error_description"]
        assert connection.user is held

    async with served.client.get("/both/refresh", headers={"X-SignalR-Connection-Token": token}) as response:
        assert response.status == 405
    # an anonymous connection cannot become someone's
    anonymous = await served.negotiate("/both", None)
    answered, body = await served.refresh("/both", anonymous["connectionToken"], served.token("alice", 60))
    assert (answered, body["error"]) == (403, "user_changed")
    # a negotiate v0 id is public, not a connection token
    v0 = await served.negotiate("/both", served.token("alice", 30), version=0)
    answered, body = await served.refresh("/both", v0["connectionId"], served.token("alice", 60))
    assert (answered, body["error"]) == (404, "connection_not_found")


async def test_no_refresh_endpoint_without_the_option(served: Served) -> None:
    for path in ("/off", "/close"):
        document = await served.negotiate(path, served.token("alice", 30))
        async with served.client.post(
            f"{path}/refresh",
            headers={**bearer(served.token("alice", 60)), "X-SignalR-Connection-Token": document["connectionToken"]},
        ) as response:
            assert response.status == 404


async def test_the_hub_learns_of_a_refresh(served: Served) -> None:
    """`context.user` is the refreshed user for later calls, and on_authentication_refreshed runs."""
    first = served.token("alice", 30)
    document = await served.negotiate("/both", first)
    async with served.client.ws_connect(f"/both?id={document['connectionToken']}", headers=bearer(first)) as ws:
        await ws.send_str(HANDSHAKE.decode())
        assert await frame(ws) == b"{}" + RS
        renewed = served.token("alice", 120)
        status, _ = await served.refresh("/both", document["connectionToken"], renewed)
        assert status == 200
        invoke = {"type": 1, "invocationId": "1", "target": "expires_at", "arguments": []}
        await ws.send_str(json.dumps(invoke) + "\x1e")
        reply = records(await frame(ws))
        assert reply == [{"type": 3, "invocationId": "1", "result": float(renewed.partition("@")[2])}]
        connection = served.connection("/both", document["connectionToken"])
        await until(lambda: bool(connection.items["refreshed"]))
        assert connection.items["refreshed"] == [float(renewed.partition("@")[2])]


# ================================================================================
# long polling: 409 for an expired connection
# ================================================================================


async def long_polling_connection(served: Served, path: str, token: str) -> tuple[str, Connection]:
    document = await served.negotiate(path, token)
    url = f"{path}?id={document['connectionToken']}"
    async with served.client.get(url + "&_=1", headers=bearer(token)) as first:
        assert first.status == 200
    async with served.client.post(url, data=HANDSHAKE, headers=bearer(token)) as response:
        assert response.status == 200
    async with served.client.get(url + "&_=2", headers=bearer(token)) as poll:
        assert await poll.read() == b"{}" + RS
    return url, served.connection(path, document["connectionToken"])


async def test_an_expired_long_poll_is_answered_409_until_refreshed(served: Served) -> None:
    first = served.token("alice", 10)
    url, connection = await long_polling_connection(served, "/refresh", first)
    served.clock.now += 11  # the token, and so the connection's authentication, expired

    # the client's cached token is refused now: it learns to refresh, not that it is unauthorized
    async with served.client.get(url + "&_=3", headers=bearer(first)) as poll:
        assert poll.status == 409
        assert poll.content_type == "application/json"
        assert (await poll.json())["error"] == REFRESH_REQUIRED
    # a token still valid but no newer than the connection's authentication changes nothing
    async with served.client.get(url + "&_=4", headers=bearer(f"alice@{served.clock() - 1}")) as poll:
        assert poll.status == 409

    renewed = served.token("alice", 30)
    status, _ = await served.refresh("/refresh", url.partition("id=")[2], renewed)
    assert status == 200
    invoke = json.dumps({"type": 1, "invocationId": "1", "target": "add", "arguments": [2, 3]}).encode() + RS
    async with served.client.post(url, data=invoke, headers=bearer(renewed)) as response:
        assert response.status == 200
    async with served.client.get(url + "&_=5", headers=bearer(renewed)) as poll:
        assert poll.status == 200
        assert records(await poll.read()) == [{"type": 3, "invocationId": "1", "result": 5}]
    assert not connection.disposed


async def test_a_poll_with_a_newer_token_extends_the_connection(served: Served) -> None:
    """ASP.NET Core lets a poll that presents newer credentials refresh the connection, too."""
    url, connection = await long_polling_connection(served, "/refresh", served.token("alice", 10))
    renewed = served.token("alice", 60)
    invoke = json.dumps({"type": 1, "invocationId": "1", "target": "add", "arguments": [1, 1]}).encode() + RS
    async with served.client.post(url, data=invoke, headers=bearer(renewed)) as response:
        assert response.status == 200
    async with served.client.get(url + "&_=3", headers=bearer(renewed)) as poll:
        assert records(await poll.read()) == [{"type": 3, "invocationId": "1", "result": 2}]
    assert connection.user is not None and connection.user.expires_at == float(renewed.partition("@")[2])
    await until(lambda: len(connection.items.get("refreshed", [])) == 1)
    served.clock.now += 11  # past the first token: the connection runs on the newer one
    invoke = json.dumps({"type": 1, "invocationId": "2", "target": "add", "arguments": [2, 2]}).encode() + RS
    async with served.client.post(url, data=invoke, headers=bearer(renewed)) as response:
        assert response.status == 200
    async with served.client.get(url + "&_=4", headers=bearer(renewed)) as poll:
        assert records(await poll.read()) == [{"type": 3, "invocationId": "2", "result": 4}]


async def test_an_expired_long_poll_without_refresh_is_401_as_before(served: Served) -> None:
    first = served.token("alice", 10)
    url, _ = await long_polling_connection(served, "/off", first)
    served.clock.now += 11
    async with served.client.get(url + "&_=3", headers=bearer(first)) as poll:
        assert poll.status == 401
        assert await poll.read() == b""


# ================================================================================
# the heartbeat closes expired connections
# ================================================================================


@pytest.mark.parametrize("path", ["/both", "/close"])
async def test_the_heartbeat_closes_an_expired_websocket_with_asp_net_cores_close(served: Served, path: str) -> None:
    token = served.token("alice", 10)
    document = await served.negotiate(path, token)
    async with served.client.ws_connect(f"{path}?id={document['connectionToken']}", headers=bearer(token)) as ws:
        await ws.send_str(HANDSHAKE.decode())
        assert await frame(ws) == b"{}" + RS
        served.clock.now += 10  # expired: the next heartbeat (within a second) closes it
        assert records(await frame(ws)) == [CLOSE_AT_EXPIRY]  # no error; the client may reconnect
        closing = await ws.receive(timeout=5)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == 1000


async def test_the_heartbeat_closes_an_expired_long_polling_connection(served: Served) -> None:
    token = served.token("alice", 10)
    url, connection = await long_polling_connection(served, "/both", token)
    waiting = asyncio.ensure_future(served.client.get(url + "&_=3", headers=bearer(token)))
    await until(lambda: connection.active)
    served.clock.now += 10
    async with await waiting as poll:
        assert poll.status == 200
        assert records(await poll.read()) == [CLOSE_AT_EXPIRY]
    async with served.client.get(url + "&_=4", headers=bearer(served.token("alice", 60))) as poll:
        assert poll.status in (204, 404)
    assert connection.disposed


async def test_without_the_option_an_expired_connection_keeps_serving(served: Served) -> None:
    token = served.token("alice", 10)
    for path in ("/off", "/refresh"):
        document = await served.negotiate(path, token)
        async with served.client.ws_connect(f"{path}?id={document['connectionToken']}", headers=bearer(token)) as ws:
            await ws.send_str(HANDSHAKE.decode())
            assert await frame(ws) == b"{}" + RS
            served.clock.now += 11
            connection = served.connection(path, document["connectionToken"])
            served.endpoints[path].connections.tick(time.monotonic())
            served.endpoints[path].connections.tick(time.monotonic() + 1.5)
            invoke = {"type": 1, "invocationId": "1", "target": "add", "arguments": [2, 2]}
            await ws.send_str(json.dumps(invoke) + "\x1e")
            assert records(await frame(ws)) == [{"type": 3, "invocationId": "1", "result": 4}]
            assert not connection.disposed and not connection.close_requested
        served.clock.now -= 11


# -- the heartbeat itself, with clocks of the test's own ----------------------------


async def test_the_heartbeat_asks_once_and_spares_the_anonymous_and_the_unexpiring() -> None:
    hub = HubEndpoint(RefreshHub, options=HubOptions(close_on_authentication_expiration=True))
    now, wall = time.monotonic(), 1_000_000.0
    expiring = await open_connection(hub)
    expiring.user = User("alice", expires_at=wall + 10)
    forever = await open_connection(hub)
    forever.user = User("bob")
    anonymous = await open_connection(hub)
    unstarted = hub.connections.create(1)  # negotiated, never started
    unstarted.user = User("carol", expires_at=wall + 10)

    hub.connections.tick(now, wall + 9.9)
    assert not any(c.close_requested for c in (expiring, forever, anonymous, unstarted))
    hub.connections.tick(now + 1, wall + 10)
    assert expiring.close_requested and unstarted.close_requested
    assert not forever.close_requested and not anonymous.close_requested
    await within_loop_turns(lambda: expiring.disposed and unstarted.disposed)
    assert expiring.take_pending() == b'{"type":7,"allowReconnect":true}\x1e'
    hub.connections.tick(now + 2, wall + 11)  # asked once: nothing more happens
    assert not forever.disposed and not anonymous.disposed


async def test_the_heartbeat_leaves_expired_connections_alone_without_the_option() -> None:
    hub = HubEndpoint(RefreshHub, options=HubOptions())
    now, wall = time.monotonic(), 1_000_000.0
    connection = await open_connection(hub)
    connection.user = User("alice", expires_at=wall)
    transport = connection.transport
    assert isinstance(transport, RecordingTransport)
    hub.connections.tick(now + 1, wall + 60)
    await asyncio.sleep(0)
    assert not connection.close_requested and not connection.disposed and not transport.closed
    assert not connection.has_pending


def test_the_options_default_off_as_in_asp_net_core() -> None:
    options = HubOptions()
    assert not options.close_on_authentication_expiration and not options.enable_authentication_refresh
    connection_options = HubOptions(
        close_on_authentication_expiration=True, enable_authentication_refresh=True
    ).connection_options()
    assert connection_options.close_on_authentication_expiration
    assert connection_options.enable_authentication_refresh
