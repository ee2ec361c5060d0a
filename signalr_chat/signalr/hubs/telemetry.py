"""OpenTelemetry for hub invocations, under the names ASP.NET Core SignalR uses.

- Tracer `Microsoft.AspNetCore.SignalR.Server`: a Server span `{Hub}/{method}` per hub
  invocation (a stream's span covers the whole stream), parented by a `traceparent` in the
  invocation's headers, else linked to the connection's HTTP request, as .NET 9 does.
- Meter `signalr_chat.server`: hub messages received and sent.

`HubTelemetry.create` returns None unless an OpenTelemetry SDK is configured, so the
dispatcher and connection hooks are one `is not None` each.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ..connections.telemetry import SERVER_METER, sdk_providers

if TYPE_CHECKING:
    from ..protocol import InvocationMessage, StreamInvocationMessage
    from .hub_connection import HubConnectionContext
    from .methods import HubMethod

SERVER_SOURCE = "Microsoft.AspNetCore.SignalR.Server"


def error_type(exc: BaseException) -> str:
    """The exception's fully qualified class name, as .NET's `error.type` is its FullName."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class HubTelemetry:
    """One per pair of providers (instruments are created once), shared by every endpoint."""

    #: By the providers' ids; each instance holds its providers, so an id is never reused.
    _instances: ClassVar[dict[tuple[int, int], HubTelemetry]] = {}

    @classmethod
    def create(
        cls, tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
    ) -> HubTelemetry | None:
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
        server = (meter_provider or metrics.NoOpMeterProvider()).get_meter(SERVER_METER)
        self._received = server.create_counter(
            "signalr_chat.server.messages.received", unit="{message}", description="Hub messages received from clients."
        )
        self._sent = server.create_counter(
            "signalr_chat.server.messages.sent", unit="{message}", description="Hub messages queued for clients."
        )

    def received(self, count: int) -> None:
        self._received.add(count)

    def sent(self) -> None:
        self._sent.add(1)

    def traced(
        self,
        hub_name: str,
        connection: HubConnectionContext,
        message: InvocationMessage | StreamInvocationMessage,
        method: HubMethod,
    ) -> HubMethod:
        """`method`, run inside a Server span for this invocation."""
        tracer = self.tracer
        if tracer is None:
            return method
        links: list[Link] = []
        if message.headers and "traceparent" in message.headers:
            parent = propagate.extract(message.headers)
        else:
            parent = Context()  # no ambient parent: .NET clears Activity.Current for the call
            request = connection.connection_context.request
            if request is not None and "traceparent" in request.headers:
                origin = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
                if origin.is_valid:
                    links.append(Link(origin))
        span = functools.partial(
            _invocation_span,
            tracer,
            f"{hub_name}/{message.target}",
            parent,
            links,
            {"rpc.system": "signalr", "rpc.service": hub_name, "rpc.method": message.target},
        )
        return dataclasses.replace(method, function=_wrap(method, span))


@contextmanager
def _invocation_span(
    tracer: trace.Tracer, name: str, parent: Context, links: list[Link], attributes: dict[str, str]
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
