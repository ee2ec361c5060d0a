"""`python -m bench.invocations`: the hub layer's CPU per echo invocation, in process, with
telemetry off and with the OpenTelemetry SDK on, measured back to back in one run.

No sockets and no load generator: a connection of a mapped hub is fed JSON invocation
records in batches and its outbox is taken, as a transport would, so the figure is the
hub layer's own cost (decode, dispatch, the method, the completion, encode) and what the
telemetry adds to it. The sockets' cost is the same with and without telemetry; `make
bench` (`--scenario telemetry`) measures the whole server. Rounds alternate between the
configurations, so a machine that slows down slows all of them; the medians are printed
with their ratio to "off".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from signalr_chat.signalr import Hub, HubEndpoint
from signalr_chat.signalr.connections import Connection, RequestInfo
from signalr_chat.signalr.connections.telemetry import ConnectionTelemetry
from signalr_chat.signalr.connections.transports import websockets
from signalr_chat.signalr.hubs import HubConnectionContext
from signalr_chat.signalr.hubs.telemetry import HubTelemetry

RS = b"\x1e"
BATCH = 100


class EchoHub(Hub):
    def echo(self, value: Any) -> Any:
        return value

    async def echo_async(self, value: Any) -> Any:
        return value


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Transport:
    active = True

    def __init__(self) -> None:
        self.features = websockets.FEATURES

    def wake(self) -> None:
        pass

    async def close(self, *, going_away: bool = False, error: bool = False) -> None:
        pass

    def drop(self) -> None:
        pass


def telemetry(kind: str) -> tuple[HubTelemetry | None, ConnectionTelemetry | None]:
    """off; on (the SDK, hub invocations untraced: the default); spans (a span per invocation,
    every one recorded, as the SDK's default sampler does); sampled (spans, 1% recorded)."""
    if kind == "off":
        return None, None
    sampler = ParentBased(TraceIdRatioBased(0.01)) if kind == "sampled" else None
    tracer_provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hub = HubTelemetry.create(tracer_provider, meter_provider, trace_invocations=kind != "on")
    return hub, ConnectionTelemetry.create(meter_provider)


async def opened(endpoint: HubEndpoint) -> tuple[Connection, HubConnectionContext]:
    connection = endpoint.connections.create(1)
    connection.features = websockets.FEATURES
    connection.request = RequestInfo(CIMultiDictProxy(CIMultiDict()), MultiDictProxy(MultiDict()), {})
    application = endpoint.connection_endpoint.application_factory(connection)
    assert isinstance(application, HubConnectionContext)
    connection.application = application
    application.start()
    connection.attach(_Transport())  # type: ignore[arg-type]
    await application.receive(b'{"protocol":"json","version":1}' + RS)
    connection.take_pending()
    return connection, application


async def round_us(connection: Connection, hub: HubConnectionContext, target: str, count: int) -> float:
    """CPU µs per invocation over `count` invocations, fed `BATCH` records at a time."""
    batch = b"".join(
        json.dumps({"type": 1, "invocationId": str(n), "target": target, "arguments": ["x" * 32]}).encode() + RS
        for n in range(BATCH)
    )
    started = time.process_time()
    for _ in range(count // BATCH):
        await hub.receive(batch)
        completions = connection.take_pending().count(RS)
        while completions < BATCH:  # async methods complete in the next loop turns
            await asyncio.sleep(0)
            completions += connection.take_pending().count(RS)
    return (time.process_time() - started) / count * 1e6


async def measure(kinds: list[str], rounds: int, count: int) -> dict[tuple[str, str], list[float]]:
    opened_by_kind = {}
    for kind in kinds:
        endpoint = HubEndpoint(EchoHub, telemetry=telemetry(kind))
        opened_by_kind[kind] = await opened(endpoint)
    figures: dict[tuple[str, str], list[float]] = {}
    for target in ("Echo", "EchoAsync"):
        for kind in kinds:  # warm-up
            await round_us(*opened_by_kind[kind], target, count // 4)
        for _ in range(rounds):
            for kind in kinds:
                figures.setdefault((target, kind), []).append(await round_us(*opened_by_kind[kind], target, count))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.invocations", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=20_000, help="invocations per round")
    parser.add_argument("--kinds", default="off,on,spans,sampled")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    figures = asyncio.run(measure(kinds, args.rounds, args.count))
    print(
        "| method | " + " | ".join(f"{k} µs" for k in kinds) + " | " + " | ".join(f"{k}/off" for k in kinds[1:]) + " |"
    )
    print("|---" * (2 * len(kinds)) + "|")
    for target in ("Echo", "EchoAsync"):
        medians = [statistics.median(figures[(target, k)]) for k in kinds]
        ratios = [f"{m / medians[0]:.2f}x" for m in medians[1:]]
        print(f"| {target} | " + " | ".join(f"{m:.2f}" for m in medians) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
