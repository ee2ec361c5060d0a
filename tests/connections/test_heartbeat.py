"""The shared heartbeat driven by an injected clock: keep-alive, client, handshake and
disconnect timeouts, in memory, without waiting for real seconds."""

from __future__ import annotations

import time

from signalr_chat.signalr import Hub, HubEndpoint, HubOptions
from signalr_chat.signalr.connections import Connection, TransportFeatures
from signalr_chat.signalr.connections.transports import long_polling, websockets
from signalr_chat.signalr.protocol import JSON, MESSAGEPACK
from tests.support.conditions import within_loop_turns

JSON_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
MSGPACK_HANDSHAKE = b'{"protocol":"messagepack","version":1}\x1e'


class QuietHub(Hub):
    def echo(self, value: str) -> str:
        return value


class RecordingTransport:
    """Stands in for a socket: always ready, and notes whether it was ended."""

    active = True

    def __init__(self, features: TransportFeatures) -> None:
        self.features = features
        self.closed = False

    def wake(self) -> None:
        pass

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        self.closed = True

    def drop(self) -> None:
        self.closed = True


def endpoint(**options: float) -> HubEndpoint:
    return HubEndpoint(QuietHub, options=HubOptions(**options))  # type: ignore[arg-type]


async def open_connection(
    hub: HubEndpoint, handshake: bytes | None = JSON_HANDSHAKE, features: TransportFeatures = websockets.FEATURES
) -> Connection:
    connection = hub.connections.create(1)
    connection.features = features
    application = connection.application = hub.connection_endpoint.application_factory(connection)
    application.start()
    connection.attach(RecordingTransport(features))
    if handshake is not None:
        await application.receive(handshake)
        assert connection.take_pending() == b"{}\x1e"
    return connection


async def test_an_idle_connection_is_pinged_after_the_keep_alive_interval() -> None:
    hub = endpoint(keep_alive_interval=15, client_timeout=30)
    now = time.monotonic()
    json = await open_connection(hub)
    msgpack = await open_connection(hub, MSGPACK_HANDSHAKE)
    hub.connections.tick(now + 14)
    assert not json.has_pending
    hub.connections.tick(now + 15.5)
    assert json.take_pending() == JSON.ping == b'{"type":6}\x1e'
    assert msgpack.take_pending() == MESSAGEPACK.ping == b"\x02\x91\x06"


async def test_a_connection_that_was_sent_something_is_not_pinged() -> None:
    hub = endpoint(keep_alive_interval=15, client_timeout=30)
    now = time.monotonic()
    connection = await open_connection(hub)
    assert connection.application is not None
    await connection.application.receive(b'{"type":1,"invocationId":"1","target":"echo","arguments":["x"]}\x1e')
    await within_loop_turns(lambda: connection.has_pending)
    connection.take_pending()
    hub.connections.tick(now + 10)  # the Completion counted as sent at this beat
    hub.connections.tick(now + 20)
    assert not connection.has_pending
    hub.connections.tick(now + 25.5)
    assert connection.take_pending() == JSON.ping


async def test_a_silent_client_is_closed_with_allow_reconnect_after_the_client_timeout() -> None:
    hub = endpoint(keep_alive_interval=15, client_timeout=30)
    now = time.monotonic()
    silent = await open_connection(hub)
    chatty = await open_connection(hub)
    assert chatty.application is not None
    hub.connections.tick(now + 1)
    for second in range(2, 40):
        await chatty.application.receive(b'{"type":6}\x1e')
        hub.connections.tick(now + second)
    await within_loop_turns(lambda: silent.disposed)
    assert b'{"type":7,"allowReconnect":true}\x1e' in silent.take_pending()
    assert not chatty.disposed


async def test_long_polling_is_neither_pinged_nor_timed_out_while_polled() -> None:
    hub = endpoint(keep_alive_interval=15, client_timeout=30)
    now = time.monotonic()
    connection = await open_connection(hub, features=long_polling.FEATURES)
    for second in range(1, 100, 5):
        hub.connections.tick(now + second)
    assert not connection.has_pending and not connection.disposed


async def test_a_handshake_that_never_completes_is_canceled() -> None:
    hub = endpoint(handshake_timeout=15)
    now = time.monotonic()
    silent = await open_connection(hub, handshake=None)
    partial = await open_connection(hub, handshake=None)
    assert partial.application is not None
    await partial.application.receive(b'{"protocol":"json",')
    hub.connections.tick(now + 14)
    assert not silent.disposed and not partial.disposed
    hub.connections.tick(now + 16)
    await within_loop_turns(lambda: silent.disposed and partial.disposed)
    assert silent.take_pending() == partial.take_pending() == b'{"error":"Handshake was canceled."}\x1e'


async def test_abandoned_connections_are_disposed_after_the_disconnect_timeout() -> None:
    hub = endpoint(disconnect_timeout=15)
    now = time.monotonic()
    never_started = hub.connections.create(1)
    idle_poll = await open_connection(hub, features=long_polling.FEATURES)
    assert idle_poll.transport is not None
    idle_poll.transport = long_polling.LongPollingTransport(idle_poll)  # attached, no poll waiting
    idle_poll.last_active = now
    hub.connections.tick(now + 14)
    assert len(hub.connections) == 2
    hub.connections.tick(now + 16)
    await within_loop_turns(lambda: never_started.disposed and idle_poll.disposed)
    hub.connections.tick(now + 17)
    assert len(hub.connections) == 0, "forgotten once disposed"
