"""Third-party Python clients against the test hub: pysignalr (asyncio) and signalrcore (threads)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import msgpack
import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage as PyCompletion
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol
from signalrcore.hub.base_hub_connection import BaseHubConnection
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

pytestmark = pytest.mark.timeout(60)

THROW_ERROR = "An unexpected error occurred invoking 'throw' on the server."
FIXED_DATE = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
WAIT = 10.0


# ================================================================================
# pysignalr
# ================================================================================


class PyClient:
    """A running pysignalr client with helpers that turn callbacks into awaitables."""

    def __init__(self, client: SignalRClient) -> None:
        self.client = client
        self.errors: list[PyCompletion] = []

    async def invoke(self, method: str, *args: Any) -> PyCompletion:
        done: asyncio.Future[PyCompletion] = asyncio.get_running_loop().create_future()

        async def on_completion(message: Any) -> None:
            if not done.done():
                done.set_result(message)

        await self.client.send(method, list(args), on_invocation=on_completion)
        return await asyncio.wait_for(done, WAIT)

    async def event(self, name: str, method: str, *args: Any) -> list[Any]:
        """Register a handler for `name`, invoke `method`, return the arguments the handler got."""
        got: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        async def handler(arguments: Any) -> None:
            if not got.done():
                got.set_result(arguments)

        self.client.on(name, handler)
        await self.invoke(method, *args)
        return await asyncio.wait_for(got, WAIT)

    async def stream(self, method: str, *args: Any) -> tuple[list[Any], PyCompletion]:
        items: list[Any] = []
        complete: asyncio.Future[PyCompletion] = asyncio.get_running_loop().create_future()

        async def on_next(item: Any) -> None:
            items.append(item)

        async def on_complete(message: Any) -> None:
            if not complete.done():
                complete.set_result(message)

        async def on_error(message: Any) -> None:
            if not complete.done():
                complete.set_result(message)

        await self.client.stream(method, list(args), on_next, on_complete, on_error)
        return items, await asyncio.wait_for(complete, WAIT)


@asynccontextmanager
async def pysignalr_client(url: str, protocol: str) -> AsyncIterator[PyClient]:
    client = SignalRClient(
        url,
        protocol=MessagepackProtocol() if protocol == "messagepack" else JSONProtocol(),
        retry_count=1,
        connection_timeout=5,
    )
    wrapper = PyClient(client)
    opened = asyncio.Event()

    async def on_open() -> None:
        opened.set()

    async def on_error(message: Any) -> None:
        wrapper.errors.append(message)

    client.on_open(on_open)
    client.on_error(on_error)
    task = asyncio.ensure_future(client.run())
    try:
        done, _ = await asyncio.wait(
            {task, asyncio.ensure_future(opened.wait())}, timeout=WAIT, return_when="FIRST_COMPLETED"
        )
        if task in done:
            task.result()  # raises the connection failure
        assert opened.is_set(), "pysignalr did not connect"
        yield wrapper
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


PROTOCOLS = ["json", "messagepack"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pysignalr_invoke(hub_server: Any, protocol: str) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), protocol) as client:
        echo = await client.invoke("echo", "hello")
        assert (echo.result, echo.error) == ("hello", None)
        assert (await client.invoke("add", 2, 3)).result == 5
        assert (await client.invoke("Add", 40, 2)).result == 42  # method names are case-insensitive
        assert (await client.invoke("echo", {"a": [1, 2, None]})).result == {"a": [1, 2, None]}
        void = await client.invoke("do_nothing")
        assert (void.result, void.error) == (None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pysignalr_error_text(hub_server: Any, protocol: str) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), protocol) as client:
        failed = await client.invoke("throw")
        assert failed.error == THROW_ERROR
        assert failed.result is None
        assert [e.error for e in client.errors] == [THROW_ERROR]
        missing = await client.invoke("no_such_method")
        assert missing.error == (
            "Failed to invoke 'no_such_method' due to an error on the server. HubException: Method does not exist."
        )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pysignalr_server_to_client_event(hub_server: Any, protocol: str) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), protocol) as client:
        assert await client.event("Event", "send_to_caller", "Event", "payload") == ["payload"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pysignalr_stream(hub_server: Any, protocol: str) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), protocol) as client:
        items, complete = await client.stream("counter", 4, 0.01)
        assert items == [0, 1, 2, 3]
        assert complete.error is None
        items, complete = await client.stream("empty_stream")
        assert items == []
        assert complete.error is None


async def test_pysignalr_messagepack_bytes_and_dates(hub_server: Any) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), "messagepack") as client:
        assert (await client.invoke("get_bytes")).result == b"\x00\x01\x02\xff"
        date = (await client.invoke("get_date")).result
        # pysignalr leaves the timestamp extension (-1) undecoded
        assert isinstance(date, msgpack.Timestamp)
        assert date.to_datetime() == FIXED_DATE


async def test_pysignalr_json_bytes_and_dates(hub_server: Any) -> None:
    async with pysignalr_client(hub_server.url("/testhub"), "json") as client:
        assert (await client.invoke("get_bytes")).result == "AAEC/w=="
        date = (await client.invoke("get_date")).result
        assert isinstance(date, str)
        assert dt.datetime.fromisoformat(date) == FIXED_DATE


# ================================================================================
# signalrcore (thread based: every wait is bounded)
# ================================================================================


class CoreClient:
    def __init__(self, connection: BaseHubConnection) -> None:
        self.connection = connection
        self.errors: list[Any] = []
        self._lock = threading.Lock()

    def invoke(self, method: str, *args: Any) -> Any:
        """The Completion message; errors arrive through on_error instead."""
        done = threading.Event()
        box: list[Any] = []

        def on_completion(message: Any) -> None:
            box.append(message)
            done.set()

        before = len(self.errors)
        self.connection.invoke(method, list(args), on_invocation=on_completion)
        deadline = threading.Event()
        for _ in range(int(WAIT / 0.02)):
            if done.is_set() or len(self.errors) > before:
                break
            deadline.wait(0.02)
        if done.is_set():
            return box[0]
        if len(self.errors) > before:
            return self.errors[-1]
        raise TimeoutError(f"no completion for {method}")

    def event(self, name: str, method: str, *args: Any) -> list[Any]:
        got = threading.Event()
        box: list[Any] = []

        def handler(arguments: Any) -> None:
            box.append(arguments)
            got.set()

        self.connection.on(name, handler)
        self.connection.invoke(method, list(args))
        assert got.wait(WAIT), f"no {name} event"
        return list(box[0])

    def stream(self, method: str, *args: Any) -> tuple[list[Any], Any]:
        items: list[Any] = []
        finished = threading.Event()
        box: list[Any] = []

        def on_complete(message: Any) -> None:
            box.append(message)
            finished.set()

        self.connection.stream(method, list(args)).subscribe(
            {"next": items.append, "complete": on_complete, "error": on_complete}
        )
        assert finished.wait(WAIT), f"stream {method} did not complete"
        return items, box[0]


@contextmanager
def signalrcore_client(url: str, protocol: str, transport: HttpTransportType | None = None) -> Iterator[CoreClient]:
    builder = HubConnectionBuilder().with_url(url, options={"transport": transport} if transport else None)
    if protocol == "messagepack":
        builder = builder.with_hub_protocol(MessagePackHubProtocol())
    connection = builder.build()
    client = CoreClient(connection)
    opened = threading.Event()
    connection.on_open(opened.set)
    connection.on_error(client.errors.append)
    connection.start()
    try:
        assert opened.wait(WAIT), "signalrcore did not connect"
        yield client
    finally:
        # The receive thread blocks in recv(); shut the socket down so stop() can join it at once.
        sock = getattr(getattr(connection.transport, "_client", None), "sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        stopper = threading.Thread(target=connection.stop, daemon=True)
        stopper.start()
        stopper.join(5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_invoke(hub_server: Any, protocol: str) -> None:
    with signalrcore_client(hub_server.url("/testhub"), protocol) as client:
        assert client.invoke("echo", "hello").result == "hello"
        assert client.invoke("add", 2, 3).result == 5
        assert client.invoke("Echo", [1, {"b": None}]).result == [1, {"b": None}]
        void = client.invoke("do_nothing")
        assert (void.result, void.error) == (None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_error_text(hub_server: Any, protocol: str) -> None:
    with signalrcore_client(hub_server.url("/testhub"), protocol) as client:
        failed = client.invoke("throw")
        assert failed.error == THROW_ERROR
        assert client.errors and client.errors[-1].error == THROW_ERROR
        # the connection is still usable after an error completion
        assert client.invoke("add", 1, 1).result == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_server_to_client_event(hub_server: Any, protocol: str) -> None:
    with signalrcore_client(hub_server.url("/testhub"), protocol) as client:
        assert client.event("Event", "send_to_caller", "Event", "payload") == ["payload"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_signalrcore_stream(hub_server: Any, protocol: str) -> None:
    with signalrcore_client(hub_server.url("/testhub"), protocol) as client:
        # signalrcore sends the StreamInvocation before .subscribe() attaches the callbacks, so
        # items that arrive first go to its no-op handlers; a short start delay avoids that race.
        items, complete = client.stream("counter_after", 0.2, 3, 0.01)
        assert items == [0, 1, 2]
        assert complete.error is None


def test_signalrcore_messagepack_bytes(hub_server: Any) -> None:
    with signalrcore_client(hub_server.url("/testhub"), "messagepack") as client:
        assert client.invoke("get_bytes").result == b"\x00\x01\x02\xff"
        date = client.invoke("get_date").result
        assert isinstance(date, msgpack.Timestamp)
        assert date.to_datetime() == FIXED_DATE


def test_signalrcore_server_sent_events(hub_server: Any) -> None:
    # (signalrcore's long-polling client handles only the first record of a poll response, so a
    # batched poll, which ASP.NET also sends, confuses it; that transport is left out.)
    with signalrcore_client(hub_server.url("/testhub"), "json", HttpTransportType.server_sent_events) as client:
        assert client.invoke("echo", "over http").result == "over http"
        assert client.event("Event", "send_to_caller", "Event", 7) == [7]
        assert client.invoke("throw").error == THROW_ERROR
