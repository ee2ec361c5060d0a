"""The hub every client conformance test talks to, served on 127.0.0.1.

Run as `python -m tests.support.hub_app --port N`; it prints `listening on PORT` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import enum
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any

import pydantic
from aiohttp import web

from signalr_chat.signalr import (
    CancellationToken,
    ConnectionContext,
    ConnectionHandler,
    Hub,
    HubEndpoint,
    HubException,
    HubOptions,
    User,
    authorize,
    map_connection_handler,
    map_hub,
)
from signalr_chat.signalr.azure.client_connection import ServiceTransport
from signalr_chat.signalr.connections.transports.websockets import WebSocketTransport

FIXED_DATE = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ENDPOINTS: dict[str, HubEndpoint] = {}
STATE: dict[str, Any] = {"cancelled": set(), "disconnected": [], "token_cancelled": set()}
FIXED_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


class InvalidOperationException(Exception):
    """Named as the .NET exception the official functional tests' TestHub throws."""


class Channel:
    """A ChannelReader<T> of sorts: the async iterator a stream method returns, written to
    from elsewhere (here: items written up front, or none, ever)."""

    def __init__(self, items: Iterable[Any] = (), *, complete: bool = True) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        for item in items:
            self._queue.put_nowait(item)
        self._complete = complete

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> Any:
        if self._complete and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    LARGE = 3


@dataclasses.dataclass
class Point:
    x: int
    label: str
    when: dt.datetime


class Person(pydantic.BaseModel):
    name: str
    id: uuid.UUID


class TestHub(Hub):
    __test__ = False  # not a pytest class

    async def on_connected(self) -> None:
        if self.context.query.get("fail_connect") == "1":
            raise RuntimeError("refused by on_connected")

    async def on_disconnected(self, exception: BaseException | None) -> None:
        STATE["disconnected"].append(self.context.connection_id)

    async def echo(self, message: Any) -> Any:
        return message

    async def add(self, a: int, b: int) -> int:
        return a + b

    async def get_connection_id(self) -> str:
        return self.context.connection_id

    async def do_nothing(self) -> None:
        return None

    async def send_to_caller(self, method: str, *payload: Any) -> None:
        await self.clients.caller.send(method, *payload)

    async def send_three(self, method: str, first: Any, second: Any, third: Any) -> None:
        """Calls the caller's `method` with three arguments (the binder has no *args support)."""
        await self.clients.caller.send(method, first, second, third)

    async def has_disconnected(self, connection_id: str) -> bool:
        """Whether on_disconnected has run for `connection_id` (on any endpoint)."""
        return connection_id in STATE["disconnected"]

    async def send_then_return(self, count: int) -> str:
        for i in range(count):
            await self.clients.caller.send("Before", i)
        return "done"

    async def broadcast(self, message: Any) -> None:
        await self.clients.all.send("Broadcast", message)

    async def record(self, value: Any) -> None:
        """Non-blocking target: answers with an event, never with a completion."""
        await self.clients.caller.send("Recorded", value)

    async def slow(self, label: str, seconds: float) -> str:
        await self.clients.caller.send("Started", label)
        await asyncio.sleep(seconds)
        return label

    async def throw(self) -> None:
        raise RuntimeError("secret internals")

    # Plain `def` methods: run at once when the connection has a free invocation slot.
    def multiply(self, a: int, b: int) -> int:
        return a * b

    def plain_nothing(self) -> None:
        return None

    def plain_connection_id(self) -> str:
        return self.context.connection_id

    def plain_deferred(self, label: str) -> Awaitable[str]:
        """A plain def handing back a coroutine (as a decorator's wrapper may): awaited."""
        return self.slow(label, 0.05)

    def plain_throw(self) -> None:
        raise RuntimeError("secret internals")

    def plain_hub_exception(self, text: str) -> None:
        raise HubException(text)

    async def throw_hub_exception(self, text: str) -> None:
        raise HubException(text)

    @authorize
    async def secret(self) -> str:
        return "classified"

    async def who_am_i(self) -> str | None:
        return self.context.user_identifier

    async def get_header(self, name: str) -> str | None:
        return self.context.headers.get(name)

    async def get_cookie(self, name: str) -> str | None:
        return self.context.cookies.get(name)

    async def get_query(self, name: str) -> str | None:
        return self.context.query.get(name)

    async def get_bytes(self) -> bytes:
        return b"\x00\x01\x02\xff"

    async def echo_bytes(self, data: bytes) -> dict[str, Any]:
        return {"type": type(data).__name__, "data": data}

    async def unserializable(self) -> Any:
        """A result neither protocol can encode."""
        return object()

    async def get_date(self) -> dt.datetime:
        return FIXED_DATE

    async def echo_date(self, value: Any) -> dict[str, Any]:
        return {"type": type(value).__name__, "value": value}

    def get_values(self) -> dict[str, Any]:
        """One of each type of the value model, for both protocols alike."""
        return {
            "uuid": FIXED_UUID,
            "colour": Colour.RED,
            "size": Size.LARGE,
            "point": Point(1, "a", FIXED_DATE),
            "person": Person(name="Ada", id=FIXED_UUID),
            "tuple": (1, 2),
            "naive": FIXED_DATE.replace(tzinfo=None),
        }

    def big_result(self, size: int) -> str:
        """One result larger than the 1 MiB outbox bound (a long history, say)."""
        return "x" * size

    async def send_many(self, count: int, size: int) -> int:
        """A long reply: `count` events of `size` characters to the caller, as fast as it takes them."""
        chunk = "y" * size
        for i in range(count):
            await self.clients.caller.send("Chunk", i, chunk)
        return count

    def transport_name(self) -> str | None:
        transport = self.context.transport
        return transport.value if transport is not None else None

    async def watched(self, key: str, token: CancellationToken) -> AsyncIterator[int]:
        """A stream that learns of its cancellation from its token, not from a finally."""
        token.on_cancel(lambda: STATE["token_cancelled"].add(key))
        i = 0
        while not token.cancelled:
            yield i
            i += 1
            await asyncio.sleep(0.02)

    async def wait_for_cancel(self, key: str, token: CancellationToken) -> None:
        """A plain method whose token is the connection's: it ends when the caller leaves."""
        await token.wait()
        STATE["token_cancelled"].add(key)

    async def token_cancelled(self, key: str) -> bool:
        return key in STATE["token_cancelled"]

    async def counter(self, count: int, delay: float) -> AsyncIterator[int]:
        for i in range(count):
            yield i
            await asyncio.sleep(delay)

    async def counter_after(self, start_delay: float, count: int, delay: float) -> AsyncIterator[int]:
        """A counter that waits before its first item, for clients that subscribe late."""
        await asyncio.sleep(start_delay)
        async for i in self.counter(count, delay):
            yield i

    async def endless(self, key: str) -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.02)
        finally:
            STATE["cancelled"].add(key)

    async def was_cancelled(self, key: str) -> bool:
        return key in STATE["cancelled"]

    # Methods that return their stream (.NET's ChannelReader<T> methods): called when the
    # StreamInvocation is read. The first three are the official functional tests' TestHub's.
    def stream(self) -> AsyncIterator[str]:
        return Channel(["a", "b", "c"])

    def infinite_stream(self, token: CancellationToken) -> AsyncIterator[str]:
        """Never yields; tells the caller once the stream is cancelled, as TestHub.InfiniteStream."""
        caller = self.clients.caller
        token.on_cancel(lambda: caller.send("StreamCanceled"))
        return Channel(complete=False)

    def stream_throw_exception(self, message: str) -> AsyncIterator[str]:
        raise InvalidOperationException(message)

    async def infinite_stream_async(self, token: CancellationToken) -> AsyncIterator[str]:
        """InfiniteStream as an `async def` that waits before it returns its stream."""
        await asyncio.sleep(0.01)
        caller = self.clients.caller
        token.on_cancel(lambda: caller.send("StreamCanceled"))
        return Channel(complete=False)

    async def stream_throw_exception_async(self, message: str) -> AsyncIterator[str]:
        await asyncio.sleep(0)
        raise InvalidOperationException(message)

    def not_a_stream(self) -> AsyncIterator[int]:
        return None  # type: ignore[return-value]

    async def empty_stream(self) -> AsyncIterator[int]:
        return
        yield

    async def stream_then_fail(self, hub_error: bool) -> AsyncIterator[int]:
        yield 1
        if hub_error:
            raise HubException("stream broke")
        raise RuntimeError("secret internals")

    async def upload_sum(self, numbers: AsyncIterator[int]) -> int:
        return sum([n async for n in numbers])

    async def upload_concat(self, prefix: str, words: AsyncIterator[str], suffix: str) -> str:
        return prefix + "".join([w async for w in words]) + suffix

    async def upload_echo_stream(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in items:
            yield item

    async def upload_catch(self, items: AsyncIterator[Any]) -> str:
        try:
            async for _ in items:
                pass
        except HubException as exc:
            return f"caught: {exc}"
        return "no error"

    async def ask_client(self, method: str, *args: Any) -> Any:
        return await self.clients.caller.invoke(method, *args)

    async def ask_connection(self, connection_id: str, method: str, arg: Any) -> Any:
        """A client result from another connection, wherever it lives (another server, through a backplane)."""
        try:
            return await self.clients.client(connection_id).invoke(method, arg)
        except (HubException, ConnectionError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def ask_client_safely(self, method: str) -> str:
        try:
            return f"ok: {await self.clients.caller.invoke(method)}"
        except HubException as exc:
            return f"error: {exc}"

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def leave_group(self, group: str) -> None:
        await self.groups.remove(self.context.connection_id, group)

    async def send_to_group(self, group: str, message: Any) -> None:
        await self.clients.group(group).send("Group", group, message)

    async def send_to_others_in_group(self, group: str, message: Any) -> None:
        await self.clients.others_in_group(group).send("Group", group, message)

    async def send_to_others(self, message: Any) -> None:
        await self.clients.others.send("Others", message)

    async def send_to_user(self, user: str, message: Any) -> None:
        await self.clients.user(user).send("User", message)

    async def send_to_connection(self, connection_id: str, message: Any) -> None:
        await self.clients.client(connection_id).send("Direct", message)

    async def abort(self, allow_reconnect: bool) -> None:
        self.context.abort(allow_reconnect=allow_reconnect)

    async def drop_transport(self) -> None:
        drop_socket(ENDPOINTS.values(), self.context.connection_id)

    async def drop_and_send(self, count: int) -> None:
        await self.drop_transport()
        await asyncio.sleep(0.05)
        for i in range(count):
            await self.clients.caller.send("Sequenced", i)


def drop_socket(endpoints: Iterable[HubEndpoint], connection_id: str) -> None:
    """Cut a client's WebSocket without a Close, as a failing network would (behind Azure
    SignalR Service: the connection ends at once, and the service closes the client's socket)."""
    for endpoint in endpoints:
        for connection in endpoint.connections:
            transport = connection.transport
            if connection.id == connection_id and isinstance(transport, WebSocketTransport | ServiceTransport):
                transport.drop()


@authorize
class AuthHub(TestHub):
    pass


@authorize
class ExpiryHub(TestHub):
    """Served where authentication expires and can be refreshed: tells what the hub knows of it."""

    async def on_authentication_refreshed(self) -> None:
        self.context.items["refreshed"] = self.context.items.get("refreshed", 0) + 1

    def auth_expires_at(self) -> float | None:
        """The caller's authentication expiry as the hub sees it now (`context.user`)."""
        user = self.context.user
        return user.expires_at if user is not None else None

    def refreshed_count(self) -> int:
        """How often `on_authentication_refreshed` ran for this connection."""
        return int(self.context.items.get("refreshed", 0))

    def notify_after(self, seconds: float, value: Any) -> None:
        """Sends `Notified(value)` to the caller `seconds` from now, with no call of the caller in
        between (a long-polling client then polls again only after it arrives)."""
        clients = self.clients

        async def later() -> None:
            await asyncio.sleep(seconds)
            await clients.caller.send("Notified", value)

        task = asyncio.ensure_future(later())
        STATE.setdefault("later", set()).add(task)
        task.add_done_callback(STATE["later"].discard)


#: `token-<user>-exp<unix seconds>`: a token that expires, as a JWT's `exp` (the seconds may have a fraction).
EXPIRING_TOKEN = re.compile(r"token-(?P<user>.+)-exp(?P<exp>\d+(?:\.\d+)?)")


async def validate(token: str, request: web.Request) -> User | None:
    """Tokens look like `token-<user>`, or `token-<user>-exp<unix>` for one that expires (refused
    from then on, as an expired JWT); anything else is refused."""
    expiring = EXPIRING_TOKEN.fullmatch(token)
    if expiring is not None:
        expires_at = float(expiring["exp"])
        if expires_at <= time.time():
            return None
        user = expiring["user"]
        return User(user, {"name": user}, expires_at=expires_at)
    if token.startswith("token-"):
        return User(token.removeprefix("token-"), {"name": token.removeprefix("token-")})
    return None


class EchoHandler(ConnectionHandler):
    """A raw connection (no hub protocol): every message comes back as it was sent."""

    async def on_connected(self, connection: ConnectionContext) -> None:
        connection.send(f"hello {connection.transport.value if connection.transport else '?'}")

    async def on_received(self, connection: ConnectionContext, data: bytes) -> None:
        connection.send(data)


async def redirect(request: web.Request) -> web.Response:
    base = f"http://{request.host}"
    return web.json_response({"url": f"{base}/testhub", "accessToken": "token-redirected"})


async def set_cookie(request: web.Request) -> web.Response:
    response = web.Response(text="ok")
    response.set_cookie("flavour", "oatmeal")
    return response


#: The cross-origin page the CORS tests pretend to be.
CORS_ORIGIN = "http://example.test:8080"


def create_app(azure_signalr: str | None = None, server_connections: int = 2) -> web.Application:
    """The test hubs; with `azure_signalr` (a connection string) served through Azure SignalR
    Service (its double in the tests), each path a hub of its own name there."""
    app = web.Application()
    base = dict(allow_stateful_reconnect=True, cors_origins=(CORS_ORIGIN,))
    hubs: list[tuple[str, str, type[Hub], HubOptions]] = [
        ("test", "/testhub", TestHub, HubOptions(**base)),
        ("detailed", "/detailed", TestHub, HubOptions(enable_detailed_errors=True, **base)),
        ("auth", "/authhub", AuthHub, HubOptions(**base)),
        ("parallel", "/parallel", TestHub, HubOptions(max_parallel_invocations=4, **base)),
        # authentication that expires: closed at expiry unless refreshed (as the chat serves it) ...
        (
            "expiry",
            "/authexpiry",
            ExpiryHub,
            HubOptions(close_on_authentication_expiration=True, enable_authentication_refresh=True, **base),
        ),
        # ... and refreshed but never closed: an expired long poll is answered 409
        ("refresh", "/authrefresh", ExpiryHub, HubOptions(enable_authentication_refresh=True, **base)),
    ]
    if azure_signalr is None:
        for key, path, hub, options in hubs:
            ENDPOINTS[key] = map_hub(app, path, hub, options=options, validator=validate)
    else:
        from signalr_chat.signalr.azure import AzureSignalR, ServiceOptions

        service = AzureSignalR(azure_signalr, ServiceOptions(connection_count=server_connections))
        for key, path, hub, options in hubs:
            ENDPOINTS[key] = service.map_hub(app, path, hub, options=options, validator=validate, hub_name=path[1:])
    map_connection_handler(app, "/echo", EchoHandler())
    app.router.add_post("/redirect/negotiate", redirect)
    app.router.add_get("/cookie", set_cookie)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--azure-signalr", help="serve the hubs through Azure SignalR Service (a connection string)")
    parser.add_argument("--server-connections", type=int, default=2)
    args = parser.parse_args()
    from signalr_chat.hosting.server import run

    run(create_app(args.azure_signalr, args.server_connections), "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
