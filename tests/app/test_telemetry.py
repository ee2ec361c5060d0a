"""OpenTelemetry: a chat turn over the stock JS client yields ASP.NET Core's SignalR metrics,
a Server span per hub invocation and a GenAI Client span with its metrics, all caught by
the SDK's in-memory exporters; an error turn yields error.type; without an SDK, nothing.

The server runs in this process (the exporters are here), the client under Node, the
model calls go to the fake Azure OpenAI through the real openai SDK.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from signalr_chat.app.application import create_app
from signalr_chat.app.drain import GracefulDrain
from signalr_chat.app.settings import Settings
from signalr_chat.app.telemetry_setup import configure, exporters
from signalr_chat.hosting.server import DRAIN
from tests.support.chat_fixtures import DEPLOYMENT, ChatServer, FakeAI, assert_clean_log, azure_settings, server_env
from tests.support.conditions import until
from tests.support.fake_ai import DEFAULT_API_KEY, word_tokens
from tests.support.node_runner import JS_DIR

HUB = "signalr_chat.chat.hub.ChatHub"
RS = "\x1e"

# The stock client: one connection, the calls given as JSON [[kind, method, argument], ...].
CLIENT = """
import * as signalR from "@microsoft/signalr";
const [url, calls] = process.argv.slice(1);
const c = new signalR.HubConnectionBuilder().withUrl(url, { transport: signalR.HttpTransportType.WebSockets })
    .configureLogging(signalR.LogLevel.None).build();
const events = [];
for (const name of ["ReceiveStreamToken", "ReceiveError"]) c.on(name, (...args) => events.push([name, ...args]));
await c.start();
const outcomes = [];
for (const [kind, method, argument] of JSON.parse(calls)) {
    try {
        if (kind === "stream") {
            const items = [];
            await new Promise((resolve, reject) => c.stream(method, argument).subscribe({
                next: (item) => items.push(item), complete: resolve, error: reject }));
            outcomes.push({ items });
        } else {
            outcomes.push({ result: await c.invoke(method, argument) });
        }
    } catch (error) {
        outcomes.push({ error: String(error) });
    }
}
await c.stop();
console.log(JSON.stringify({ events, outcomes }));
"""


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def settings(fake: FakeAI, **extra: Any) -> Settings:
    return Settings(
        ai_provider="azure",
        azure_openai_endpoint=fake.base,
        azure_openai_deployment=DEPLOYMENT,
        azure_openai_api_key=DEFAULT_API_KEY,
        ai_max_retries=0,
        history_store="memory",
        **{"trace_hub_invocations": True, **extra},
    )


async def serve(aiohttp_server: Any, telemetry: Telemetry | None, app_settings: Settings) -> str:
    providers = (
        {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider} if telemetry else {}
    )
    server = await aiohttp_server(create_app(app_settings, **providers), host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def stock_client(base: str, *calls: tuple[str, str, str]) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    process = await asyncio.create_subprocess_exec(
        node,
        "--input-type=module",
        "-e",
        CLIENT,
        f"{base}/chatHub",
        json.dumps(calls),
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return dict(json.loads(out))


def only(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


@pytest.mark.parametrize("capture", [False, True], ids=["content-off", "content-on"])
async def test_a_chat_turn_yields_signalr_and_genai_telemetry(
    aiohttp_server: Any, fake_ai: FakeAI, telemetry: Telemetry, capture: bool
) -> None:
    base = await serve(aiohttp_server, telemetry, settings(fake_ai, genai_capture_message_content=capture))
    message = f"hello {uuid.uuid4().hex[:8]}"
    seen = await stock_client(base, ("invoke", "SendMessage", message))
    tokens = [e[1] for e in seen["events"] if e[0] == "ReceiveStreamToken"]
    assert "".join(tokens) == f"Echo: {message} (history: 2 messages)"

    hub = only(telemetry.finished(f"{HUB}/SendMessage"))
    assert hub.kind is SpanKind.SERVER
    assert dict(hub.attributes or {}) == {"rpc.system": "signalr", "rpc.service": HUB, "rpc.method": "SendMessage"}
    assert hub.parent is None and not hub.links, "no traceparent anywhere: a root span"
    assert hub.status.status_code is StatusCode.UNSET

    model = only(telemetry.finished(f"chat {DEPLOYMENT}"))
    assert model.kind is SpanKind.CLIENT
    assert model.parent is not None and model.parent.span_id == hub.context.span_id, "the model call is in the turn"
    attributes = dict(model.attributes or {})
    input_tokens = len(word_tokens(Settings().system_prompt)) + 4 + len(word_tokens(message)) + 4
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": DEPLOYMENT,
        "gen_ai.response.model": DEPLOYMENT,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": len(tokens),
        "server.address": "127.0.0.1",
        "server.port": fake_ai.port,
    }
    assert {k: attributes.get(k) for k in expected} == expected
    assert str(attributes["gen_ai.response.id"]).startswith("chatcmpl-")
    assert 0 < float(attributes["gen_ai.response.time_to_first_chunk"]) <= (model.end_time - model.start_time) / 1e9  # type: ignore[arg-type,operator]
    if capture:
        assert message in str(attributes["gen_ai.input.messages"])
        assert json.loads(str(attributes["gen_ai.output.messages"])) == [
            {"role": "assistant", "parts": [{"type": "text", "content": "".join(tokens)}], "finish_reason": "stop"}
        ]
    else:
        assert not any("messages" in key for key in attributes), "content is never recorded unless opted in"

    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": DEPLOYMENT,
        "gen_ai.response.model": DEPLOYMENT,
        "server.address": "127.0.0.1",
        "server.port": fake_ai.port,
    }
    usage = {p.attributes["gen_ai.token.type"]: p for p in telemetry.points("gen_ai.client.token.usage")}
    assert {k: (p.sum, p.count) for k, p in usage.items()} == {"input": (input_tokens, 1), "output": (len(tokens), 1)}
    assert dict(usage["input"].attributes) == {**common, "gen_ai.token.type": "input"}
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.operation.time_to_first_chunk"):
        [point] = telemetry.points(name)
        assert (dict(point.attributes), point.count) == (common, 1), name

    # the server notices the client's close a moment after the client is gone
    await until(lambda: telemetry.points("signalr.server.connection.duration"), "the connection's duration")
    [duration] = telemetry.points("signalr.server.connection.duration")
    assert dict(duration.attributes) == {
        "signalr.connection.status": "normal_closure",
        "signalr.transport": "web_sockets",
    }
    assert duration.count == 1 and duration.sum > 0
    [active] = telemetry.points("signalr.server.active_connections")
    assert (dict(active.attributes), active.value) == ({"signalr.transport": "web_sockets"}, 0)

    [received] = telemetry.points("signalr_chat.server.messages.received")
    assert received.value >= 1
    [sent] = telemetry.points("signalr_chat.server.messages.sent")
    # thinking, StreamStart, the tokens, StreamEnd, and the invocation's Completion
    assert sent.value == len(tokens) + 4
    [outbox] = telemetry.points("signalr_chat.server.outbox.size")
    assert outbox.value == 0


async def test_an_error_turn_yields_error_type(aiohttp_server: Any, fake_ai: FakeAI, telemetry: Telemetry) -> None:
    base = await serve(aiohttp_server, telemetry, settings(fake_ai))
    seen = await stock_client(base, ("stream", "StreamMessage", "boom [[500]]"))
    assert "error" in seen["outcomes"][0]

    hub = only(telemetry.finished(f"{HUB}/StreamMessage"))
    assert hub.kind is SpanKind.SERVER
    assert hub.status.status_code is StatusCode.ERROR
    assert (hub.attributes or {})["error.type"] == "signalr_chat.signalr.hubs.errors.HubException"

    model = only(telemetry.finished(f"chat {DEPLOYMENT}"))
    assert model.status.status_code is StatusCode.ERROR
    assert (model.attributes or {})["error.type"] == "openai.InternalServerError"
    [duration] = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == "openai.InternalServerError"
    assert telemetry.points("gen_ai.client.token.usage") == [], "no usage without a reply"


async def test_hub_name_names_the_spans(aiohttp_server: Any, fake_ai: FakeAI, telemetry: Telemetry) -> None:
    """HUB_NAME (a .NET peer's hub type, for a mixed fleet) is the hub in the traces too."""
    base = await serve(aiohttp_server, telemetry, settings(fake_ai, hub_name="Chat.Hubs.ChatHub"))
    await stock_client(base, ("invoke", "SendMessage", "hello"))
    hub = only(telemetry.finished("Chat.Hubs.ChatHub/SendMessage"))
    assert (hub.attributes or {})["rpc.service"] == "Chat.Hubs.ChatHub"
    assert telemetry.finished(f"{HUB}/SendMessage") == []


async def test_traceparent_parents_the_span_else_the_request_is_linked(
    aiohttp_server: Any, fake_ai: FakeAI, telemetry: Telemetry
) -> None:
    """The stock JS client sends no trace context; a .NET client puts `traceparent` in the
    invocation's headers, and a proxy may put one on the connection's HTTP request."""
    base = await serve(aiohttp_server, telemetry, settings(fake_ai))
    request_trace, request_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{base}/chatHub", headers={"traceparent": f"00-{request_trace}-{request_span}-01"}
        ) as socket,
    ):
        await socket.send_str('{"protocol":"json","version":1}' + RS)
        assert (await socket.receive_str()) == "{}" + RS
        with_header = {
            "type": 1,
            "target": "GetHistory",
            "arguments": [],
            "invocationId": "1",
            "headers": {"traceparent": f"00-{caller_trace}-{caller_span}-01"},
        }
        without = {"type": 1, "target": "GetHistory", "arguments": [], "invocationId": "2"}
        for message in (with_header, without):
            await socket.send_str(json.dumps(message) + RS)
            reply = json.loads((await socket.receive_str()).rstrip(RS))
            assert reply["type"] == 3 and reply["invocationId"] == message["invocationId"]

    first, second = telemetry.finished(f"{HUB}/GetHistory")
    assert first.parent is not None
    assert (f"{first.parent.trace_id:032x}", f"{first.parent.span_id:016x}") == (caller_trace, caller_span)
    assert first.context.trace_id == first.parent.trace_id and not first.links
    assert second.parent is None
    [link] = second.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (request_trace, request_span)


async def test_hub_invocations_are_traced_only_when_asked_for(
    aiohttp_server: Any, fake_ai: FakeAI, telemetry: Telemetry
) -> None:
    """TRACE_HUB_INVOCATIONS is off by default, as a .NET app records the hub's spans only once
    it adds their ActivitySource: the model call is then a root span, and the metrics count
    as before."""
    base = await serve(aiohttp_server, telemetry, settings(fake_ai, trace_hub_invocations=False))
    seen = await stock_client(base, ("invoke", "SendMessage", "hello"))
    tokens = [e for e in seen["events"] if e[0] == "ReceiveStreamToken"]
    assert tokens
    assert telemetry.finished(f"{HUB}/SendMessage") == []
    model = only(telemetry.finished(f"chat {DEPLOYMENT}"))
    assert model.parent is None, "no hub span to be its parent"
    [sent] = telemetry.points("signalr_chat.server.messages.sent")
    assert sent.value == len(tokens) + 4  # thinking, StreamStart, the tokens, StreamEnd, the Completion
    [received] = telemetry.points("signalr_chat.server.messages.received")
    assert received.value >= 1


async def test_without_an_sdk_nothing_is_built(aiohttp_server: Any, fake_ai: FakeAI) -> None:
    """The global providers of this test process are the API's placeholders: no SDK."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert type(metrics.get_meter_provider()).__name__ == "_ProxyMeterProvider"
    app = create_app(settings(fake_ai))
    drain = app[DRAIN]
    assert isinstance(drain, GracefulDrain)
    assert drain.endpoints
    for endpoint in drain.endpoints:
        assert endpoint.dispatcher.telemetry is None and endpoint.connection_endpoint.telemetry is None
    base = await serve(aiohttp_server, None, settings(fake_ai))
    seen = await stock_client(base, ("invoke", "SendMessage", "hello"))
    assert seen["outcomes"] == [{}], "SendMessage completed (void: no result)"
    assert [e[0] for e in seen["events"]].count("ReceiveStreamToken") > 1


def test_otel_variables_choose_the_exporters() -> None:
    assert exporters({}, "TRACES") == []
    assert exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "TRACES") == ["otlp"]
    assert exporters({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"}, "TRACES") == []
    assert exporters({"OTEL_METRICS_EXPORTER": "console, prometheus"}, "METRICS") == ["console", "prometheus"]
    assert exporters({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, "TRACES") == []
    assert configure(Settings(), environ={}) is None, "nothing asked for: no SDK is set up"
    assert configure(Settings(), environ={"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is None


def test_a_server_process_exports_what_otel_variables_ask_for(fake_ai: FakeAI, tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=console: the spans of a turn reach stdout when the server stops."""
    env = server_env(fake_ai, **azure_settings(fake_ai, history_db=str(tmp_path / "h.db")))
    env.update(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="chat-under-test", TRACE_HUB_INVOCATIONS="true")
    log = tmp_path / "server.log"
    server = ChatServer(env, log=log).start()
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    try:
        calls = json.dumps([["invoke", "SendMessage", "hello"]])
        result = subprocess.run(
            [node, "--input-type=module", "-e", CLIENT, f"{server.base}/chatHub", calls],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
    text = log.read_text()
    assert f'"name": "{HUB}/SendMessage"' in text, text[-3000:]
    assert f'"name": "chat {DEPLOYMENT}"' in text
    assert '"service.name": "chat-under-test"' in text
    assert_clean_log(log)


@pytest.mark.local_model
async def test_the_local_model_is_traced_too(aiohttp_server: Any, telemetry: Telemetry) -> None:
    """The built-in model: the same span and duration metrics, provider `llama_cpp`, no usage."""
    local = Settings(
        ai_provider="local", local_max_output_tokens=16, history_store="memory", trace_hub_invocations=True
    )
    base = await serve(aiohttp_server, telemetry, local)
    seen = await stock_client(base, ("invoke", "SendMessage", "Say hi."))
    tokens = [e[1] for e in seen["events"] if e[0] == "ReceiveStreamToken"]
    assert tokens, seen

    hub = only(telemetry.finished(f"{HUB}/SendMessage"))
    [model] = [s for s in telemetry.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert model.name.startswith("chat SmolLM2")
    assert model.parent is not None and model.parent.span_id == hub.context.span_id
    attributes = dict(model.attributes or {})
    assert attributes["gen_ai.provider.name"] == "llama_cpp"
    assert attributes["gen_ai.request.max_tokens"] == 16
    assert "gen_ai.usage.output_tokens" not in attributes, "llama.cpp's stream reports no usage"
    [duration] = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes["gen_ai.provider.name"] == "llama_cpp" and duration.count == 1
    [first] = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1 and 0 < first.sum <= duration.sum
