"""OpenTelemetry for the SignalR layer, under the names ASP.NET Core SignalR uses.

- Meter `Microsoft.AspNetCore.Http.Connections`: `signalr.server.connection.duration` and
  `signalr.server.active_connections`, with ASP.NET Core's attributes and values.
- Tracer `Microsoft.AspNetCore.SignalR.Server`: a Server span `{Hub}/{method}` per hub
  invocation (a stream's span covers the whole stream), parented by a `traceparent` in the
  invocation's headers, else linked to the connection's HTTP request, as .NET 9 does.
- Meter `signalr_chat.server`: this server's own counters (messages in and out, slow
  clients dropped, bytes waiting in outboxes).

`SignalRTelemetry.create` returns None unless an OpenTelemetry SDK is configured, so the
hub layer's call sites are one `is not None` and an unconfigured server pays nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .options import TransportKind

if TYPE_CHECKING:
    from .connection import Connection
    from .hub_connection import HubConnectionContext
    from .hub_methods import HubMethod
    from .protocol import InvocationMessage, StreamInvocationMessage

try:  # what the API hands out before an SDK is set: the only way to tell "not configured"
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _UnsetMeterProvider
except ImportError:  # pragma: no cover - a future API without it
    _UnsetMeterProvider = metrics.NoOpMeterProvider  # type: ignore[misc,assignment]

CONNECTIONS_METER = "Microsoft.AspNetCore.Http.Connections"
SERVER_SOURCE = "Microsoft.AspNetCore.SignalR.Server"
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


def error_type(exc: BaseException) -> str:
    """The exception's fully qualified class name, as .NET's `error.type` is its FullName."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def hub_name(hub_type: type) -> str:
    """The hub's full name, the `rpc.service` (.NET: the hub class's namespace-qualified name)."""
    return f"{hub_type.__module__}.{hub_type.__qualname__}"


class SignalRTelemetry:
    """One per pair of providers (instruments are created once), shared by every endpoint."""

    #: By the providers' ids; each instance holds its providers, so an id is never reused.
    _instances: ClassVar[dict[tuple[int, int], SignalRTelemetry]] = {}

    @classmethod
    def create(
        cls, tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
    ) -> SignalRTelemetry | None:
        tracer_provider, meter_provider = sdk_providers(tracer_provider, meter_provider)
        if tracer_provider is None and meter_provider is None:
            return None
        key = (id(tracer_provider), id(meter_provider))
        instance = cls._instances.get(key)
        if instance is None:
            instance = cls._instances[key] = cls(tracer_provider, meter_provider)
        return instance

    def __init__(self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None):
        self.providers = (tracer_provider, meter_provider)
        self.tracer = tracer_provider.get_tracer(SERVER_SOURCE) if tracer_provider is not None else None
        meters = meter_provider or metrics.NoOpMeterProvider()
        connections = meters.get_meter(CONNECTIONS_METER)
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
        server = meters.get_meter(SERVER_METER)
        self._received = server.create_counter(
            "signalr_chat.server.messages.received", unit="{message}", description="Hub messages received from clients."
        )
        self._sent = server.create_counter(
            "signalr_chat.server.messages.sent", unit="{message}", description="Hub messages queued for clients."
        )
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

    # -- connections (ConnectionManager and the endpoint call these) ------------
    def watch(self, connections: Callable[[], Iterable[Connection]]) -> None:
        """An endpoint's live connections, whose outboxes the gauge sums at collection time."""
        self._outboxes.append(connections)

    def _observe_outboxes(self, _options: metrics.CallbackOptions) -> Iterator[metrics.Observation]:
        total = sum(c._pending_size for source in self._outboxes for c in source())
        yield metrics.Observation(total)

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
        transport = TRANSPORTS.get(connection.transport_kind) if connection.transport_kind else None
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

    # -- messages (HubConnectionContext) -----------------------------------------
    def received(self, count: int) -> None:
        self._received.add(count)

    def sent(self) -> None:
        self._sent.add(1)

    # -- invocations (HubDispatcher) ---------------------------------------------
    def traced(
        self,
        hub_type: type,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        method: HubMethod,
    ) -> HubMethod:
        """`method`, run inside a Server span for this invocation."""
        tracer = self.tracer
        if tracer is None:
            return method
        service = _hub_name(hub_type)
        parent: Context | None = None
        links: list[Link] = []
        if message.headers and "traceparent" in message.headers:
            parent = propagate.extract(message.headers)
        else:
            parent = Context()  # no ambient parent: .NET clears Activity.Current for the call
            request = connection.connection.request
            if request is not None and "traceparent" in request.headers:
                origin = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
                if origin.is_valid:
                    links.append(Link(origin))
        span = functools.partial(
            _invocation_span,
            tracer,
            f"{service}/{message.target}",
            parent,
            links,
            {"rpc.system": "signalr", "rpc.service": service, "rpc.method": message.target},
        )
        return dataclasses.replace(method, function=_wrap(method, span))


_hub_name = functools.cache(hub_name)


@contextmanager
def _invocation_span(
    tracer: trace.Tracer, name: str, parent: Context | None, links: list[Link], attributes: dict[str, str]
) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.SERVER,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", error_type(exc))
            span.set_status(Status(StatusCode.ERROR, str(exc) or None))
            raise


def _wrap(method: HubMethod, span: Callable[[], Any]) -> Any:
    function = method.function
    if method.streaming:

        async def stream(*args: Any) -> AsyncIterator[Any]:
            with span():
                async for item in function(*args):
                    yield item

        return stream
    if method.is_async:

        async def call(*args: Any) -> Any:
            with span():
                return await function(*args)

        return call

    def call_now(*args: Any) -> Any:
        with span():
            return function(*args)

    return call_now
