"""LOG_FORMAT=json: one JSON object per line, naming the connection, the user (never the
token) and, when an OpenTelemetry SDK traces, the trace of the hub invocation."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from signalr_chat.app.application import create_app
from signalr_chat.app.settings import Settings
from signalr_chat.hosting.json_logging import JsonLinesFormatter
from tests.processes.test_chat_process import chat
from tests.support.chat_fixtures import (
    DEPLOYMENT,
    JWT_SECRET,
    ChatServer,
    FakeAI,
    assert_clean_log,
    azure_settings,
    server_env,
    token_for,
)
from tests.support.fake_ai import DEFAULT_API_KEY

RS = "\x1e"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON lines of the model provider's logger (it warns when a request fails)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter())
    logger = logging.getLogger("signalr_chat.ai")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


async def test_a_log_line_names_connection_user_and_trace(
    aiohttp_server: Any, fake_ai: FakeAI, captured: io.StringIO
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    settings = Settings(
        ai_provider="azure",
        azure_openai_endpoint=fake_ai.base,
        azure_openai_deployment=DEPLOYMENT,
        azure_openai_api_key=DEFAULT_API_KEY,
        auth_jwt_secret=JWT_SECRET,
        history_store="memory",
        trace_hub_invocations=True,  # the log line then carries the hub invocation's trace
    )
    server = await aiohttp_server(create_app(settings, tracer_provider=tracer_provider), host="127.0.0.1")
    token = token_for("alice")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{server.port}/chatHub?access_token={token}") as socket,
    ):
        await socket.send_str('{"protocol":"json","version":1}' + RS)
        assert await socket.receive_str() == "{}" + RS
        invocation = {"type": 1, "target": "SendMessage", "arguments": ["hi [[401]]"], "invocationId": "1"}
        await socket.send_str(json.dumps(invocation) + RS)
        while True:
            frame = await socket.receive_str()
            if any(json.loads(m).get("type") == 3 for m in frame.split(RS) if m):
                break
    tracer_provider.shutdown()

    [line] = [json.loads(line) for line in captured.getvalue().splitlines()]
    [hub_span] = [s for s in spans.get_finished_spans() if s.name.endswith("/SendMessage")]
    assert line["level"] == "WARNING" and line["logger"] == "signalr_chat.ai.errors"
    assert "HTTP 401" in line["message"]
    assert line["user_id"] == "alice"
    assert len(line["connection_id"]) == 22, "the connection's id (16 random bytes, base64url)"
    assert line["trace_id"] == format(hub_span.context.trace_id, "032x")
    assert token not in captured.getvalue() and token.split(".")[2] not in captured.getvalue()


@pytest.mark.timeout(120)
def test_a_server_process_logs_json_lines(fake_ai: FakeAI, tmp_path: Path) -> None:
    env = server_env(fake_ai, **azure_settings(fake_ai, history_db=str(tmp_path / "h.db")))
    env.update(LOG_FORMAT="json", LOG_LEVEL="INFO")
    log = tmp_path / "server.log"
    server = ChatServer(env, log=log).start()
    token = token_for("bob")
    try:
        assert chat(server, token, "hello [[401]]")["errors"], "the failed turn was reported to the user"
    finally:
        server.stop()
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip() and not line.startswith("listening on")]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    failed = [entry for entry in lines if "HTTP 401" in entry["message"]]
    assert failed and failed[0]["user_id"] == "bob" and failed[0]["connection_id"]
    assert "trace_id" not in failed[0], "no SDK configured: no trace"
    assert token.split(".")[2] not in text
    assert_clean_log(log)
