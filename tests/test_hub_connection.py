"""The hub connection in memory: the background tasks its connection's owner keeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from signalr_chat.signalr import Hub, HubEndpoint, HubException, HubOptions
from signalr_chat.signalr.connections import Connection, TransportFeatures
from signalr_chat.signalr.connections import manager as connection_manager
from signalr_chat.signalr.connections.background import BackgroundTasks
from signalr_chat.signalr.connections.transports import websockets
from signalr_chat.signalr.hubs import HubConnectionContext
from signalr_chat.signalr.hubs.upload_stream import UploadStream

pytestmark = pytest.mark.timeout(30)

RS = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
SEEN: dict[str, list[Any]] = {}


def record(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + RS


def records(data: bytes) -> list[Any]:
    return [json.loads(part) for part in data.split(RS) if part]


class StateHub(Hub):
    def echo(self, value: Any) -> Any:
        return value

    async def forever(self) -> None:
        SEEN.setdefault("forever", []).append("started")
        try:
            await asyncio.Event().wait()
        finally:
            SEEN.setdefault("forever", []).append("cancelled")


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


# -- uploads ----------------------------------------------------------------------------


async def test_an_upload_ended_while_its_buffer_is_full_ends_after_its_items_without_a_task() -> None:
    upload = UploadStream("u1", 2)
    await upload.put(1)
    await upload.put(2)
    upload.complete("The connection was closed.")
    assert [await upload.__anext__(), await upload.__anext__()] == [1, 2]
    with pytest.raises(HubException, match=r"The connection was closed\."):
        await upload.__anext__()


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
