"""OpenTelemetry for connections, under the names ASP.NET Core's connection layer uses.

- Meter `Microsoft.AspNetCore.Http.Connections`: `signalr.server.connection.duration` and
  `signalr.server.active_connections`, with ASP.NET Core's attributes and values.
- Meter `signalr_chat.server`: slow clients dropped, and the bytes waiting in outboxes.

`ConnectionTelemetry.create` returns None unless an OpenTelemetry SDK is configured, so
the call sites are one `is not None` and an unconfigured server pays nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, Protocol

from opentelemetry import metrics, trace

from ..protocol.negotiate import TransportKind


class Connection(Protocol):
    """What the metrics read of a connection (a Protocol: connection.py imports this module)."""

    _pending_size: int

    @property
    def transport_kind(self) -> TransportKind | None: ...


try:  # what the API hands out before an SDK is set: the only way to tell "not configured"
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _UnsetMeterProvider
except ImportError:  # pragma: no cover - a future API without it
    _UnsetMeterProvider = metrics.NoOpMeterProvider  # type: ignore[misc,assignment]

CONNECTIONS_METER = "Microsoft.AspNetCore.Http.Connections"
SERVER_METER = "signalr_chat.server"
#: Bucket advice of signalr.server.connection.duration (OpenTelemetry semantic conventions).
DURATION_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
TRANSPORTS = {
    TransportKind.WEBSOCKETS: "web_sockets",
    TransportKind.SERVER_SENT_EVENTS: "server_sent_events",
    TransportKind.LONG_POLLING: "long_polling",
}
NORMAL_CLOSURE, TIMEOUT, APP_SHUTDOWN = "normal_closure", "timeout", "app_shutdown"


def sdk_providers(
    tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
) -> tuple[trace.TracerProvider | None, metrics.MeterProvider | None]:
    """The given providers, else the global ones; None for each that no SDK backs."""
    tracer_provider = tracer_provider or trace.get_tracer_provider()
    meter_provider = meter_provider or metrics.get_meter_provider()
    if isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        tracer_provider = None
    if isinstance(meter_provider, _UnsetMeterProvider | metrics.NoOpMeterProvider):
        meter_provider = None
    return tracer_provider, meter_provider


class ConnectionTelemetry:
    """One per meter provider (instruments are created once), shared by every endpoint."""

    #: By the provider's id; each instance holds its provider, so an id is never reused.
    _instances: ClassVar[dict[int, ConnectionTelemetry]] = {}

    @classmethod
    def create(cls, meter_provider: metrics.MeterProvider | None = None) -> ConnectionTelemetry | None:
        _, meter_provider = sdk_providers(None, meter_provider)
        if meter_provider is None:
            return None
        instance = cls._instances.get(id(meter_provider))
        if instance is None:
            instance = cls._instances[id(meter_provider)] = cls(meter_provider)
        return instance

    def __init__(self, meter_provider: metrics.MeterProvider) -> None:
        self.meter_provider = meter_provider
        connections = meter_provider.get_meter(CONNECTIONS_METER)
        self._duration = connections.create_histogram(
            "signalr.server.connection.duration",
            unit="s",
            description="The duration of connections on the server.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._active = connections.create_up_down_counter(
            "signalr.server.active_connections",
            unit="{connection}",
            description="Number of connections that are currently active on the server.",
        )
        server = meter_provider.get_meter(SERVER_METER)
        self._dropped = server.create_counter(
            "signalr_chat.server.slow_clients.dropped",
            unit="{connection}",
            description="Connections closed because their unsent messages outgrew the outbox limit.",
        )
        self._outboxes: list[Callable[[], Iterable[Connection]]] = []
        server.create_observable_gauge(
            "signalr_chat.server.outbox.size",
            callbacks=[self._observe_outboxes],
            unit="By",
            description="Bytes queued for clients and not yet written to their transports.",
        )
        self._started: dict[Connection, float] = {}
        self._timed_out: set[Connection] = set()
        self.shutting_down = False

    def watch(self, connections: Callable[[], Iterable[Connection]]) -> None:
        """An endpoint's live connections, whose outboxes the gauge sums at collection time."""
        self._outboxes.append(connections)

    def _observe_outboxes(self, _options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        yield metrics.Observation(sum(c._pending_size for source in self._outboxes for c in source()))

    def connection_created(self, connection: Connection) -> None:
        self._started[connection] = time.perf_counter()

    def transport_started(self, connection: Connection) -> None:
        assert connection.transport_kind is not None
        self._active.add(1, {"signalr.transport": TRANSPORTS[connection.transport_kind]})

    def timed_out(self, connection: Connection) -> None:
        self._timed_out.add(connection)

    def connection_ended(self, connection: Connection) -> None:
        started = self._started.pop(connection, None)
        timed_out = connection in self._timed_out
        self._timed_out.discard(connection)
        kind = connection.transport_kind
        transport = TRANSPORTS[kind] if kind is not None else None
        if transport is not None:
            self._active.add(-1, {"signalr.transport": transport})
        if started is None:
            return
        status = APP_SHUTDOWN if self.shutting_down else TIMEOUT if timed_out else NORMAL_CLOSURE
        attributes = {"signalr.connection.status": status}
        if transport is not None:
            attributes["signalr.transport"] = transport
        self._duration.record(time.perf_counter() - started, attributes)

    def slow_client_dropped(self) -> None:
        self._dropped.add(1)
