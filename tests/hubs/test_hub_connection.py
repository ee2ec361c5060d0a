"""The hub connection in memory: its states, its stream trackers, the background tasks its
connection's owner keeps, and methods that return their stream (.NET's ChannelReader methods)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from signalr_chat.signalr import CancellationToken, Hub, HubEndpoint, HubException, HubOptions
from signalr_chat.signalr.connections import Connection, TransportFeatures
from signalr_chat.signalr.connections import manager as connection_manager
from signalr_chat.signalr.connections.background import BackgroundTasks
from signalr_chat.signalr.connections.transports import websockets
from signalr_chat.signalr.hubs import HubConnectionContext, HubConnectionState
from signalr_chat.signalr.hubs.methods import describe
from signalr_chat.signalr.hubs.upload_stream import UploadStream

pytestmark = pytest.mark.timeout(30)

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
SEEN: dict[str, list[Any]] = {}


def record(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + RS


def records(data: bytes) -> list[Any]:
    return [json.loads(part) for part in data.split(RS) if part]


class Never:
    """An async iterator that never yields (a ChannelReader nobody writes to)."""

    def __aiter__(self) -> Never:
        return self

    async def __anext__(self) -> Any:
        await asyncio.Event().wait()


class StateHub(Hub):
    async def on_connected(self) -> None:
        query = self.context.query.get("connect")
        SEEN.setdefault("connected", []).append(self.context.connection_id)
        if query == "fail":
            raise RuntimeError("refused")
        if query == "slow":
            await asyncio.sleep(0.05)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        SEEN.setdefault("disconnected", []).append(self.context.connection_id)

    #: Set by a test to let `refuses_upload` return.
    gate: asyncio.Event | None = None

    async def refuses_upload(self, items: AsyncIterator[Any]) -> None:
        """Returns without reading its upload once the gate opens: a refusal that took a while."""
        assert StateHub.gate is not None
        await StateHub.gate.wait()
        raise HubException("Refused.")

    def echo(self, value: Any) -> Any:
        return value

    def note(self, value: Any) -> None:
        SEEN.setdefault("noted", []).append(value)

    async def later(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    async def forever(self) -> None:
        SEEN.setdefault("forever", []).append("started")
        try:
            await asyncio.Event().wait()
        finally:
            SEEN.setdefault("forever", []).append("cancelled")

    def infinite(self, key: str, token: CancellationToken) -> AsyncIterator[int]:
        caller = self.clients.caller
        token.on_cancel(lambda: caller.send("StreamCanceled", key))
        return Never()

    async def infinite_async(self, key: str, token: CancellationToken) -> AsyncIterator[int]:
        await asyncio.sleep(0)
        caller = self.clients.caller
        token.on_cancel(lambda: caller.send("StreamCanceled", key))
        return Never()

    async def generator(self, key: str, token: CancellationToken) -> AsyncIterator[int]:
        caller = self.clients.caller
        token.on_cancel(lambda: caller.send("StreamCanceled", key))
        while True:
            yield 1
            await asyncio.sleep(0.01)

    def throws(self, hub_error: bool) -> AsyncIterator[int]:
        if hub_error:
            raise HubException("not now")
        raise ValueError("secret")

    def returns_a_generator(self, key: str) -> AsyncIterator[int]:
        async def items() -> AsyncIterator[int]:
            try:
                yield 1
                yield 2
                await asyncio.Event().wait()
            finally:
                SEEN.setdefault(key, []).append("closed")

        return items()

    def nothing(self) -> AsyncIterator[int]:
        return None  # type: ignore[return-value]


class Transport:
    active = True

    def __init__(self, features: TransportFeatures) -> None:
        self.features = features

    def wake(self) -> None:
        pass

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        await asyncio.sleep(0)  # a transport takes a moment to close

    def drop(self) -> None:
        pass


async def settle(condition: Callable[[], bool] = lambda: False, turns: int = 200) -> None:
    """Lets background work run: until `condition` holds, or `turns` loop turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)


def hub_endpoint(**options: Any) -> HubEndpoint:
    return HubEndpoint(StateHub, options=HubOptions(**options))


async def opened(
    endpoint: HubEndpoint, query: str = "", *, handshake: bool = True
) -> tuple[Connection, HubConnectionContext]:
    from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

    from signalr_chat.signalr.connections import RequestInfo

    connection = endpoint.connections.create(1)
    connection.features = websockets.FEATURES
    parameters: MultiDict[str] = MultiDict()
    if query:
        parameters["connect"] = query
    connection.request = RequestInfo(CIMultiDictProxy(CIMultiDict()), MultiDictProxy(parameters), {})
    application = endpoint.connection_endpoint.application_factory(connection)
    connection.application = application
    application.start()
    connection.attach(Transport(websockets.FEATURES))
    assert isinstance(application, HubConnectionContext)
    if handshake:
        await application.receive(HANDSHAKE)
        assert connection.take_pending() == b"{}" + RS
    return connection, application


@pytest.fixture(autouse=True)
def forget_seen() -> None:
    SEEN.clear()


# -- the state machine --------------------------------------------------------------


async def test_a_connection_goes_through_its_states_and_logs_each_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "signalr_chat.signalr.hubs.hub_connection")
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint, handshake=False)
    assert hub.state is HubConnectionState.HANDSHAKING
    await hub.receive(HANDSHAKE)
    assert hub.state is HubConnectionState.CONNECTED
    assert hub.connection_id == connection.id and hub.caller_context.connection_id == connection.id
    closing = asyncio.ensure_future(hub.receive(record({"type": 7})))
    await asyncio.sleep(0)
    assert hub.state is HubConnectionState.CLOSING, "the client's Close: ending, the transport still closing"
    await closing
    assert hub.state is HubConnectionState.CLOSED
    assert SEEN["disconnected"] == [connection.id]
    changes = [r.getMessage().split(": ", 1)[1] for r in caplog.records if " -> " in r.getMessage()]
    assert changes == [
        "HANDSHAKING -> CONNECTING",
        "CONNECTING -> CONNECTED",
        "CONNECTED -> CLOSING",
        "CLOSING -> CLOSED",
    ]


async def test_nothing_is_dispatched_once_the_connection_is_closing() -> None:
    endpoint = hub_endpoint()
    _, hub = await opened(endpoint)
    await hub.receive(record({"type": 1, "target": "note", "arguments": ["before"]}))
    frame = record({"type": 7}) + record({"type": 1, "target": "note", "arguments": ["behind the Close"]})
    await hub.receive(frame)
    await hub.receive(record({"type": 1, "target": "note", "arguments": ["late"]}))
    assert SEEN["noted"] == ["before"], "neither the invocation behind the Close nor late bytes were run"
    assert hub.state is HubConnectionState.CLOSED


async def test_a_failed_handshake_ends_without_the_hub_hearing_of_it() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint, handshake=False)
    await hub.receive(b'{"protocol":"nope","version":1}\x1e')
    assert hub.state is HubConnectionState.CLOSED
    assert connection.disposed
    assert "connected" not in SEEN and "disconnected" not in SEEN


async def test_a_failing_on_connected_closes_and_leaves_nothing_in_the_lifetime_manager() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint, "fail", handshake=False)
    await hub.receive(HANDSHAKE)
    assert hub.state is HubConnectionState.CLOSED
    assert records(connection.take_pending())[-1] == {"type": 7, "error": "Connection closed with an error."}
    assert "disconnected" not in SEEN, "on_disconnected follows only an on_connected that returned"
    assert connection.id not in endpoint.lifetime.connections  # type: ignore[attr-defined]


async def test_a_connection_closed_while_on_connected_runs_is_disconnected_once() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint, "slow", handshake=False)
    handshaking = asyncio.ensure_future(hub.receive(HANDSHAKE))
    await asyncio.sleep(0)
    assert hub.state is HubConnectionState.CONNECTING
    await connection.dispose()  # the server stops, say
    assert hub.state is HubConnectionState.CLOSED
    assert "disconnected" not in SEEN, "not yet: on_connected has not returned"
    await handshaking
    assert SEEN["disconnected"] == [connection.id]
    assert connection.id not in endpoint.lifetime.connections  # type: ignore[attr-defined]


async def test_a_dropped_socket_under_stateful_reconnect_stays_connected() -> None:
    endpoint = hub_endpoint(allow_stateful_reconnect=True)
    connection = endpoint.connections.create(1, stateful_reconnect=True)
    connection.features = websockets.FEATURES
    hub = endpoint.connection_endpoint.application_factory(connection)
    assert isinstance(hub, HubConnectionContext)
    connection.application = hub
    transport = Transport(websockets.FEATURES)
    connection.attach(transport)
    await hub.receive(b'{"protocol":"json","version":2}\x1e')
    connection.detach(transport)
    await hub.on_transport_ended(None)
    assert hub.state is HubConnectionState.CONNECTED and hub.accepts_reconnect
    await connection.dispose()  # the disconnect timeout, say
    assert hub.state is HubConnectionState.CLOSED and not hub.accepts_reconnect


# -- trackers and what the endpoint tells the drain ------------------------------------


async def test_the_endpoint_lists_running_streams_and_stops_accepting() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "generator", "arguments": ["k"]}))
    await settle(lambda: connection.has_pending)
    (task,) = endpoint.running_streams()
    assert not task.done() and len(hub.streams) == 1
    await hub.receive(record({"type": 5, "invocationId": "s1"}))
    await settle(task.done)
    await settle(lambda: len(hub.streams) == 0)
    assert endpoint.running_streams() == []
    assert records(connection.take_pending())[-1] == {"type": 3, "invocationId": "s1"}
    assert endpoint.connection_endpoint.accepting
    endpoint.stop_accepting()
    assert not endpoint.connection_endpoint.accepting


async def test_closing_cancels_streams_and_ends_uploads() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "generator", "arguments": ["k"]}))
    await settle(lambda: connection.has_pending)
    (task,) = hub.streams.tasks()
    await connection.dispose()
    await settle(lambda: not hub.streams.tasks())
    assert task.cancelled()


async def test_an_upload_ended_while_its_buffer_is_full_ends_after_its_items_without_a_task() -> None:
    upload = UploadStream("u1", 2)
    await upload.put(1)
    await upload.put(2)
    upload.complete("The connection was closed.")
    assert [await upload.__anext__(), await upload.__anext__()] == [1, 2]
    with pytest.raises(HubException, match=r"The connection was closed\."):
        await upload.__anext__()


async def test_a_method_that_stops_reading_its_upload_never_holds_up_the_connection() -> None:
    """More items than the stream buffers while the method has not read any: the reader waits for
    room, and is let go when the method ends, with what it never read dropped."""
    capacity = 3
    StateHub.gate = gate = asyncio.Event()
    connection, hub = await opened(hub_endpoint(stream_buffer_capacity=capacity))
    await hub.receive(
        record({"type": 1, "invocationId": "1", "target": "refuses_upload", "arguments": [], "streamIds": ["s"]})
    )
    items = b"".join(record({"type": 2, "invocationId": "s", "item": i}) for i in range(capacity + 5))
    feeding = asyncio.ensure_future(hub.receive(items))
    await settle()
    assert not feeding.done(), "the buffer is full: the reader waits for room"
    gate.set()
    await settle(feeding.done)
    assert feeding.done(), "the connection reads on once the method has ended"
    await hub.receive(record({"type": 3, "invocationId": "s"}))  # the client completes it late: ignored
    await hub.receive(record({"type": 1, "invocationId": "2", "target": "echo", "arguments": ["next"]}))
    await settle(lambda: connection.has_pending)
    answers = [r for r in records(connection.take_pending()) if r.get("type") == 3]
    assert answers == [
        {
            "type": 3,
            "invocationId": "1",
            "error": "An unexpected error occurred invoking 'refuses_upload' on the server. HubException: Refused.",
        },
        {"type": 3, "invocationId": "2", "result": "next"},
    ]


# -- background tasks --------------------------------------------------------------------


async def test_background_tasks_are_kept_logged_and_cancelled_by_their_owner(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("test")

    async def fail() -> None:
        raise RuntimeError("boom")

    failing = tasks.spawn(fail())
    forever = tasks.spawn(asyncio.Event().wait())
    await settle(failing.done)
    await asyncio.sleep(0)
    assert list(tasks) == [forever], "a finished task is forgotten, a running one kept"
    assert any(r.getMessage() == "test task failed" and r.exc_info for r in caplog.records)
    await tasks.aclose(grace=0.01)
    assert forever.cancelled() and len(tasks) == 0


async def test_an_invocation_slot_is_kept_while_it_runs_and_forgotten_when_it_ends() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 1, "invocationId": "1", "target": "later", "arguments": ["x"]}))
    assert len(endpoint.connections.tasks) == 1, "the slot's task belongs to the connection's owner"
    await settle(lambda: connection.has_pending)
    assert records(connection.take_pending()) == [{"type": 3, "invocationId": "1", "result": "x"}]
    await settle(lambda: len(endpoint.connections.tasks) == 0)
    assert len(endpoint.connections.tasks) == 0, "and forgotten once it ended"


async def test_shutdown_cancels_what_still_runs_for_connections_after_a_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_manager, "SHUTDOWN_GRACE", 0.05)
    endpoint = hub_endpoint()
    _, hub = await opened(endpoint)
    await hub.receive(record({"type": 1, "target": "forever", "arguments": []}))
    await settle(lambda: "forever" in SEEN)
    assert len(endpoint.connections.tasks) == 1, "the invocation's slot task belongs to the connection's owner"
    await endpoint.shutdown()
    assert SEEN["forever"] == ["started", "cancelled"]
    assert len(endpoint.connections.tasks) == 0


async def test_an_async_cancellation_callback_runs_in_the_background() -> None:
    tasks = BackgroundTasks("test")
    token = CancellationToken(tasks)
    ran: list[str] = []

    async def tell() -> None:
        await asyncio.sleep(0)
        ran.append("told")

    token.on_cancel(tell)
    token.on_cancel(lambda: ran.append("at once"))
    token.cancel()
    assert ran == ["at once"]
    await settle(lambda: len(ran) == 2)
    assert ran == ["at once", "told"]


# -- methods that return their stream ------------------------------------------------------


def test_which_methods_return_their_stream() -> None:
    infinite = describe("infinite", StateHub.infinite)
    assert infinite.streaming and infinite.returns_stream and not infinite.is_async
    awaited = describe("infinite_async", StateHub.infinite_async)
    assert awaited.streaming and awaited.returns_stream and awaited.is_async
    generator = describe("generator", StateHub.generator)
    assert generator.streaming and not generator.returns_stream
    assert not describe("echo", StateHub.echo).streaming


@pytest.mark.parametrize("target", ["infinite", "infinite_async"])
async def test_a_stream_cancelled_in_its_own_frame_still_runs_its_token_callback(target: str) -> None:
    """StreamInvocation and CancelInvocation read together: the method was called when its
    StreamInvocation was read (or, an async def, runs before the stream is read), so the
    callback it registered runs, and the caller gets its Completion."""
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    frame = record({"type": 4, "invocationId": "s1", "target": target, "arguments": ["k"]})
    await hub.receive(frame + record({"type": 5, "invocationId": "s1"}))
    await settle(lambda: len(records(b"".join(connection._pending))) == 2)
    assert sorted(records(connection.take_pending()), key=lambda r: r["type"]) == [
        {"type": 1, "target": "StreamCanceled", "arguments": ["k"]},
        {"type": 3, "invocationId": "s1"},
    ]
    assert hub.streams.tasks() == [] and endpoint.running_streams() == []


async def test_an_async_generator_cancelled_in_its_own_frame_never_runs() -> None:
    """Async generators stay as they were: their body is the stream, cancelled before it starts."""
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    frame = record({"type": 4, "invocationId": "s1", "target": "generator", "arguments": ["k"]})
    await hub.receive(frame + record({"type": 5, "invocationId": "s1"}))
    await settle(lambda: connection.has_pending)
    await settle()
    assert records(connection.take_pending()) == [{"type": 3, "invocationId": "s1"}]


@pytest.mark.parametrize(
    ("hub_error", "detailed", "error"),
    [
        (False, False, "An unexpected error occurred invoking 'throws' on the server."),
        (False, True, "An unexpected error occurred invoking 'throws' on the server. ValueError: secret"),
        (True, False, "An unexpected error occurred invoking 'throws' on the server. HubException: not now"),
    ],
)
async def test_an_exception_before_the_stream_is_returned_fails_the_invocation(
    hub_error: bool, detailed: bool, error: str
) -> None:
    endpoint = hub_endpoint(enable_detailed_errors=detailed)
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "throws", "arguments": [hub_error]}))
    assert records(connection.take_pending()) == [{"type": 3, "invocationId": "s1", "error": error}], "at once"
    assert hub.streams.tasks() == []
    await hub.receive(record({"type": 1, "invocationId": "2", "target": "echo", "arguments": ["still here"]}))
    assert records(connection.take_pending()) == [{"type": 3, "invocationId": "2", "result": "still here"}]


async def test_a_returned_generator_is_read_then_closed_when_cancelled() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "returns_a_generator", "arguments": ["g"]}))
    await settle(lambda: len(records(b"".join(connection._pending))) == 2)
    await hub.receive(record({"type": 5, "invocationId": "s1"}))
    await settle(lambda: "g" in SEEN)
    await settle(lambda: len(records(b"".join(connection._pending))) == 3)
    assert records(connection.take_pending()) == [
        {"type": 2, "invocationId": "s1", "item": 1},
        {"type": 2, "invocationId": "s1", "item": 2},
        {"type": 3, "invocationId": "s1"},
    ]
    assert SEEN["g"] == ["closed"]


async def test_a_stream_method_returning_no_stream_gets_the_dotnet_text() -> None:
    endpoint = hub_endpoint()
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "nothing", "arguments": []}))
    await settle(lambda: connection.has_pending)
    error = "The value returned by the streaming method 'nothing' is not a ChannelReader<> or IAsyncEnumerable<>."
    assert records(connection.take_pending()) == [{"type": 3, "invocationId": "s1", "error": error}]


async def test_a_returned_stream_is_traced_from_its_call_to_its_end() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from signalr_chat.signalr.hubs.telemetry import HubTelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    endpoint = HubEndpoint(StateHub, hub_name="State", telemetry=(HubTelemetry(provider, None), None))
    connection, hub = await opened(endpoint)
    await hub.receive(record({"type": 4, "invocationId": "s1", "target": "returns_a_generator", "arguments": ["g"]}))
    await settle(lambda: len(records(b"".join(connection._pending))) == 2)
    assert exporter.get_finished_spans() == (), "the span lasts as long as the stream"
    await hub.receive(record({"type": 5, "invocationId": "s1"}))
    frame = record({"type": 4, "invocationId": "s2", "target": "infinite_async", "arguments": ["k"]})
    await hub.receive(frame + record({"type": 5, "invocationId": "s2"}))
    await hub.receive(record({"type": 4, "invocationId": "s3", "target": "throws", "arguments": [False]}))
    await settle(lambda: len(exporter.get_finished_spans()) == 3)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"State/returns_a_generator", "State/infinite_async", "State/throws"}
    assert spans["State/returns_a_generator"].status.status_code is StatusCode.UNSET
    assert spans["State/infinite_async"].status.status_code is StatusCode.UNSET
    failed = spans["State/throws"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "ValueError"
