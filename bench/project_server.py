"""This project, as the benchmark runs it: a hub with the benchmark's methods, or the chat app.

`--app hub` maps `BenchHub` at /hub with default HubOptions; `--app chat` is the real chat
application (settings from the environment, as `python -m signalr_chat` reads them).
Both are served by `signalr_chat.hosting.server` on uvloop, like the product. Logging stays at
WARNING, so the access log costs nothing in either.

Run as `python -m bench.project_server --port 0 [--app chat]`; BENCH_DIAG=1 serves
`GET /bench/diag` (the soak scenario's view of the process: asyncio tasks, the chat's
bookkeeping, and with `?objects=1` the garbage collector's objects); BENCH_OTEL=1 turns the
OpenTelemetry SDK on; BENCH_REDIS_URL=redis://... serves `--app hub` through the Redis
backplane (hub name `BENCH_HUB`, so that every instance shares its channels);
BENCH_AZURE_SIGNALR=<connection string> serves it through Azure SignalR Service (hub
`benchhub` there; the bench uses the service double, tests/support/azure_service.py). The chat app
reads REDIS_URL and AZURE_SIGNALR_CONNECTION_STRING from its own settings instead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from collections import Counter
from typing import Any

from aiohttp import web

from signalr_chat.signalr import Hub, HubOptions, map_hub

from . import procfs

#: The bench hub's name in Redis channels: `{BENCH_HUB}:all`, `{BENCH_HUB}:connection:{id}`, ...
BENCH_HUB = "BenchHub"


class BenchHub(Hub):
    def echo(self, message: Any) -> Any:
        return message

    async def echo_async(self, message: Any) -> Any:
        return message

    async def broadcast(self, stamp: int, payload: Any) -> None:
        await self.clients.all.send("Broadcast", stamp, payload)

    async def join_group(self, group: str) -> None:
        await self.groups.add(self.context.connection_id, group)

    async def send_to_group(self, group: str, stamp: int, payload: Any) -> None:
        await self.clients.group(group).send("Group", stamp, payload)


def _telemetry() -> tuple[Any, Any] | None:
    """BENCH_OTEL=spans: the SDK on and a span per hub invocation (TRACE_HUB_INVOCATIONS in the
    chat); else the endpoint's default (the SDK's metrics, if installed, and no hub spans)."""
    if os.environ.get("BENCH_OTEL") != "spans":
        return None
    from signalr_chat.signalr.connections.telemetry import ConnectionTelemetry
    from signalr_chat.signalr.hubs.telemetry import HubTelemetry

    return HubTelemetry.create(trace_invocations=True), ConnectionTelemetry.create()


def create_hub_app() -> web.Application:
    app = web.Application()
    # permessage-deflate only for the deflate scenario, which sets BENCH_DEFLATE=1
    options = HubOptions(websocket_compression=os.environ.get("BENCH_DEFLATE") == "1")
    service = os.environ.get("BENCH_AZURE_SIGNALR")
    if service:
        from signalr_chat.signalr.azure import AzureSignalR, ServiceOptions  # the azure scenario

        AzureSignalR(service, ServiceOptions()).map_hub(app, "/hub", BenchHub, options=options, hub_name=BENCH_HUB)
        return app
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if not redis_url:
        map_hub(app, "/hub", BenchHub, options=options, telemetry=_telemetry())
        return app
    from signalr_chat.signalr.redis import RedisHubLifetimeManager  # the scale-out scenario
    from signalr_chat.signalr.redis.coalescing import DEFAULT_WINDOW

    # BENCH_COALESCE_MS: another window, to measure what it changes (0: off)
    window = float(os.environ.get("BENCH_COALESCE_MS", DEFAULT_WINDOW * 1000)) / 1000
    lifetime = RedisHubLifetimeManager(redis_url, hub_name=BENCH_HUB, coalesce_window=window)
    map_hub(app, "/hub", BenchHub, options=options, lifetime=lifetime, hub_name=BENCH_HUB)
    return app


DIAG_PATH = "/bench/diag"


def add_diagnostics(app: web.Application) -> None:
    """`GET /bench/diag`, for BENCH_DIAG=1 only: what a leak would grow, as JSON.

    `tasks`: the event loop's asyncio tasks, this request's own handler excluded, and with
    `?objects=1` the most frequent by coroutine; `chat`: the sizes of the chat's per-connection
    and per-conversation bookkeeping (private attributes of ConversationService, read only);
    `?objects=1` also runs a full collection first, then counts the objects the collector
    tracks (those created since the server's `gc.freeze()`) by type. That costs the loop
    tens to hundreds of milliseconds at 500 chats, so the soak asks for it only at its
    landmarks; `diag_ms` says how long this answer took.
    """

    async def diag(request: web.Request) -> web.Response:
        started = time.perf_counter()
        me = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not me]
        body: dict[str, Any] = {"tasks": len(tasks)}
        chat = _chat_service(app)
        if chat is not None:
            body["chat"] = {
                name: len(getattr(chat, f"_{name}", ()))
                for name in ("conversations", "watching", "seed_replies", "tasks")
            }
        if request.query.get("objects") == "1":
            body["tasks_by_coroutine"] = dict(Counter(_coroutine_name(task) for task in tasks).most_common(15))
            body["gc_collected"] = gc.collect()
            objects = gc.get_objects()
            body["objects"] = len(objects)
            body["objects_by_type"] = dict(Counter(type(o).__qualname__ for o in objects).most_common(40))
            del objects
        body["diag_ms"] = round(1000 * (time.perf_counter() - started), 1)
        return web.json_response(body)

    app.router.add_get(DIAG_PATH, diag)


def _chat_service(app: web.Application) -> object | None:
    from signalr_chat.app.application import CHAT_SERVICE

    return app.get(CHAT_SERVICE)


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coroutine = task.get_coro()
    return getattr(coroutine, "__qualname__", type(coroutine).__name__)


def install_sdk() -> None:
    """BENCH_OTEL=1 (or `spans`): the OpenTelemetry SDK on, recording every span and metric point.

    Spans go through the BatchSpanProcessor a deployment uses, to an exporter that drops
    them; metrics aggregate in a reader that is never collected. The figure is then the
    server's cost of recording, not the network's cost of exporting.
    """
    from collections.abc import Sequence

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--app", choices=("hub", "chat"), default="hub")
    args = parser.parse_args()
    procfs.raise_nofile()
    if os.environ.get("BENCH_OTEL") in ("1", "spans"):
        install_sdk()
    from signalr_chat.hosting.server import run

    if args.app == "chat":
        from signalr_chat.app.application import create_app
        from signalr_chat.app.settings import Settings
        from signalr_chat.hosting.json_logging import configure_logging

        settings = Settings()  # from the environment
        configure_logging(settings.log_level, settings.log_format)  # as `python -m signalr_chat` does
        app = create_app(settings)
    else:
        app = create_hub_app()
    if os.environ.get("BENCH_DIAG") == "1":
        add_diagnostics(app)
    run(app, "127.0.0.1", args.port)


if __name__ == "__main__":
    main()
