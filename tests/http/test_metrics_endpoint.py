"""`/metrics`: off by default; when enabled, a Prometheus scrape after chat traffic parses with
prometheus-client's text parser and holds the SignalR, GenAI and server metrics; a token, when
set, is required."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.app.test_telemetry import CLIENT
from tests.support.chat_fixtures import ChatServer, FakeAI, azure_settings, serve_chat
from tests.support.node_runner import JS_DIR

TOKEN = "scrape-token-for-tests"


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), ""


@pytest.fixture(scope="module")
def metrics_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    tmp = tmp_path_factory.mktemp("metrics")
    yield from serve_chat(fake_ai, tmp, **azure_settings(fake_ai, metrics_enabled="true", metrics_token=TOKEN))


def samples(text: str) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def test_metrics_are_off_by_default(chat_server: ChatServer) -> None:
    assert get(f"{chat_server.base}/metrics")[0] == 404


def test_metrics_need_the_token(metrics_server: ChatServer) -> None:
    assert get(f"{metrics_server.base}/metrics")[0] == 401
    assert get(f"{metrics_server.base}/metrics", "wrong")[0] == 401


def test_a_scrape_after_traffic_holds_the_counters(metrics_server: ChatServer, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    calls = json.dumps([["invoke", "SendMessage", "hello metrics"], ["invoke", "SendMessage", "and again"]])
    result = subprocess.run(
        [node, "--input-type=module", "-e", CLIENT, f"{metrics_server.base}/chatHub", calls],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    tokens = sum(1 for event in json.loads(result.stdout)["events"] if event[0] == "ReceiveStreamToken")

    status, content_type, text = get(f"{metrics_server.base}/metrics", TOKEN)
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    found = samples(text)
    sent = sum(s.value for s in found["signalr_chat_server_messages_sent_total"])
    assert sent >= tokens + 8, "two turns: thinking, start, tokens, end and a completion each"
    assert sum(s.value for s in found["signalr_chat_server_messages_received_total"]) >= 2
    # the client stopped before the scrape; the server may still be closing it
    durations = [s for s in found["signalr_server_connection_duration_seconds_count"]]
    assert durations and {s.labels["signalr_transport"] for s in durations} == {"web_sockets"}
    assert "signalr_server_active_connections" in found
    usage = {s.labels["gen_ai_token_type"]: s.value for s in found["gen_ai_client_token_usage_count"]}
    assert usage["input"] >= 2 and usage["output"] >= 2
    [model_calls] = found["gen_ai_client_operation_duration_seconds_count"]
    assert model_calls.labels["gen_ai_provider_name"] == "azure.ai.openai" and model_calls.value >= 2
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_count" in found
    assert "signalr_chat_server_outbox_size_bytes" in found
