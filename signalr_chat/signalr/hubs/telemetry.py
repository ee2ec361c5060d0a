"""OpenTelemetry for hub invocations, under the names ASP.NET Core SignalR uses.

- Tracer `Microsoft.AspNetCore.SignalR.Server`: a Server span `{Hub}/{method}` per hub
  invocation (a stream's span covers the whole stream), parented by a `traceparent` in the
  invocation's headers, else linked to the connection's HTTP request, as .NET 9 does. Only
  when asked for (`trace_invocations`), as .NET records them only once the app adds that
  ActivitySource to its tracer provider: a recorded span costs the SDK 10-30 µs, several
  times a small invocation.
- Meter `signalr_chat.server`: hub messages received and sent. They are counted in plain
  integers and read by the SDK at collection (observable counters): a counter's `add` per
  message cost more than the echo itself, and ASP.NET Core records per connection, not
  per message, for the same reason.

`HubTelemetry.create` returns None unless an OpenTelemetry SDK is configured, so the
dispatcher and connection hooks are one `is not None` each.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
    _instances: ClassVar[dict[tuple[int, int, bool], HubTelemetry]] = {}

    @classmethod
    def create(
        cls,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        trace_invocations: bool = False,
    ) -> HubTelemetry | None:
        """None when no SDK backs either provider. `trace_invocations`: a span per invocation."""
        tracer_provider, meter_provider = sdk_providers(tracer_provider, meter_provider)
        if tracer_provider is None and meter_provider is None:
            return None
        key = (id(tracer_provider), id(meter_provider), trace_invocations)
        instance = cls._instances.get(key)
        if instance is None:
            instance = cls._instances[key] = cls(tracer_provider, meter_provider, trace_invocations=trace_invocations)
        return instance

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        *,
        trace_invocations: bool = True,
    ):
        self.providers = (tracer_provider, meter_provider)
        self.tracer = (
            tracer_provider.get_tracer(SERVER_SOURCE) if tracer_provider is not None and trace_invocations else None
        )
        server = (meter_provider or metrics.NoOpMeterProvider()).get_meter(SERVER_METER)
        #: Messages since the start; the hub connection adds to them, the SDK reads them.
        self.messages_received = 0
        self.messages_sent = 0
        server.create_observable_counter(
            "signalr_chat.server.messages.received",
            callbacks=[lambda _: [metrics.Observation(self.messages_received)]],
            unit="{message}",
            description="Hub messages received from clients.",
        )
        server.create_observable_counter(
            "signalr_chat.server.messages.sent",
            callbacks=[lambda _: [metrics.Observation(self.messages_sent)]],
            unit="{message}",
            description="Hub messages queued for clients.",
        )

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
        arguments = (
            tracer,
            f"{hub_name}/{message.target}",
            parent,
            links,
            {"rpc.system": "signalr", "rpc.service": hub_name, "rpc.method": message.target},
        )
        if method.returns_stream:
            return dataclasses.replace(
                method, function=_wrap_returned_stream(method, functools.partial(_start_span, *arguments))
            )
        return dataclasses.replace(method, function=_wrap(method, functools.partial(_invocation_span, *arguments)))


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
            _failed(span, exc)
            raise


def _failed(span: trace.Span, exc: Exception) -> None:
    span.set_attribute("error.type", error_type(exc))
    span.set_status(Status(StatusCode.ERROR, str(exc) or None))


def _start_span(
    tracer: trace.Tracer, name: str, parent: Context, links: list[Link], attributes: dict[str, str]
) -> trace.Span:
    return tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes, links=links)


def _current(span: trace.Span) -> Any:
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def _wrap_returned_stream(method: HubMethod, start: Callable[[], trace.Span]) -> Any:
    """A method that returns its stream keeps its shape (called at once, or awaited): its span
    starts with the call, is current while it runs and while each item is read, and ends
    with the stream (or when the stream is closed unread)."""
    function = method.function

    def returned(span: trace.Span, stream: Any) -> Any:
        if inspect.isawaitable(stream):  # a plain def handing back a coroutine
            return _awaited_stream(span, stream)
        if not hasattr(stream, "__aiter__"):  # the dispatcher answers with .NET's text
            span.end()
            return stream
        return _TracedStream(span, stream)

    if method.is_async:

        async def call_async(*args: Any) -> Any:
            span = start()
            try:
                with _current(span):
                    stream = await function(*args)
            except Exception as exc:
                _failed(span, exc)
                span.end()
                raise
            return returned(span, stream)

        return call_async

    def call(*args: Any) -> Any:
        span = start()
        try:
            with _current(span):
                stream = function(*args)
        except Exception as exc:
            _failed(span, exc)
            span.end()
            raise
        return returned(span, stream)

    return call


async def _awaited_stream(span: trace.Span, pending: Awaitable[Any]) -> Any:
    try:
        with _current(span):
            stream = await pending
    except BaseException as exc:
        if isinstance(exc, Exception):
            _failed(span, exc)
        span.end()
        raise
    if not hasattr(stream, "__aiter__"):
        span.end()
        return stream
    return _TracedStream(span, stream)


class _TracedStream:
    """A returned stream read inside its invocation's span."""

    __slots__ = ("_iterator", "_source", "_span")

    def __init__(self, span: trace.Span, source: Any) -> None:
        self._span: trace.Span | None = span
        self._source = source
        self._iterator: Any = None

    def __aiter__(self) -> _TracedStream:
        return self

    async def __anext__(self) -> Any:
        span = self._span
        if span is None:
            raise StopAsyncIteration
        try:
            with _current(span):
                if self._iterator is None:
                    self._iterator = self._source.__aiter__()
                return await self._iterator.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except Exception as exc:
            self._end(exc)
            raise

    async def aclose(self) -> None:
        close = getattr(self._iterator if self._iterator is not None else self._source, "aclose", None)
        try:
            if close is not None:
                await close()
        finally:
            self._end(None)

    def _end(self, error: Exception | None) -> None:
        span, self._span = self._span, None
        if span is not None:
            if error is not None:
                _failed(span, error)
            span.end()


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
