"""The chat as users run it: `python -m signalr_chat` processes against the fake Azure OpenAI.

Every server gets a scrubbed environment: no AZURE_*/OPENAI_* from the outside, and
managed identity pinned to the fake token endpoint, so DefaultAzureCredential never
probes the cloud metadata address. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from signalr_chat.app.settings import Settings

from .fake_ai import DEFAULT_API_KEY, DEFAULT_IDENTITY_HEADER
from .listening import free_port, wait_for_port
from .paths import ROOT

DEPLOYMENT = "chat-deployment"
#: The main server's second deployment (AI_MODELS): a conversation may pick it.
DEPLOYMENT_MINI = "chat-deployment-mini"
JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
_SCRUBBED_PREFIXES = (
    "AZURE_",
    "OPENAI_",
    "IDENTITY_",
    "MSI_",
    "AI_",
    "LOCAL_",
    "AUTH_",
    "HISTORY_",
    "REDIS_",
    "HUB_NAME",
)


class FakeAI:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.base = f"http://127.0.0.1:{port}"

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base}/_fake/requests", timeout=10) as response:
            return list(json.load(response))

    def token_requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.base}/_fake/token-requests", timeout=10) as response:
            return list(json.load(response))

    def requests_with(self, text: str) -> list[dict[str, Any]]:
        """Records whose last message contains `text` (tests tag their messages with a nonce)."""
        found = []
        for record in self.requests():
            messages = (record.get("body") or {}).get("messages") or []
            if messages and text in str(messages[-1].get("content", "")):
                found.append(record)
        return found


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def fake_ai() -> Iterator[FakeAI]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.support.fake_ai", "--port", str(port)], cwd=ROOT)
    try:
        wait_for_port(port, process)
        yield FakeAI(port, process)
    finally:
        stop_process(process)


#: Every visitor the suites simulate comes from 127.0.0.1: the per-address caps (issue 22) would
#: make them one crowd, so servers go without them unless a test asks (guest_limits.test.mjs).
UNCAPPED_ADDRESS = {"GUEST_NEW_PER_ADDRESS": "0", "RATE_LIMIT_MESSAGES_PER_ADDRESS": "0"}


def server_env(fake: FakeAI, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        PYTHONUNBUFFERED="1",
        AZURE_TOKEN_CREDENTIALS="ManagedIdentityCredential",
        IDENTITY_ENDPOINT=f"{fake.base}/msi/token",
        IDENTITY_HEADER=DEFAULT_IDENTITY_HEADER,
        AUTH_JWT_SECRET=JWT_SECRET,
        LOG_LEVEL="WARNING",
        **UNCAPPED_ADDRESS,
    )
    env.update({k.upper(): v for k, v in settings.items()})
    return env


def offline_env(**settings: str) -> dict[str, str]:
    """A chat server that never reaches a model (an OpenAI-compatible server on a closed
    port): for tests of the HTTP and hub layers as `python -m signalr_chat` runs them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        PYTHONUNBUFFERED="1",
        AI_PROVIDER="openai",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        HISTORY_STORE="memory",
        LOG_LEVEL="WARNING",
        **UNCAPPED_ADDRESS,
    )
    env.update({k.upper(): v for k, v in settings.items()})
    return env


def azure_settings(fake: FakeAI, **extra: str) -> dict[str, str]:
    return {
        "ai_provider": "azure",
        "azure_openai_endpoint": fake.base,
        "azure_openai_deployment": DEPLOYMENT,
        "azure_openai_api_key": DEFAULT_API_KEY,
        **extra,
    }


class ChatServer:
    """One `python -m signalr_chat` process; restart() keeps its port and settings."""

    def __init__(self, env: dict[str, str], port: int | None = None, log: Path | None = None) -> None:
        self.env = env
        self.log = log
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChatServer:
        output = None if self.log is None else self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "signalr_chat", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        if output is not None:
            output.close()
        wait_for_port(self.port, self.process, timeout=60)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        time.sleep(0.2)
        self.start()


def token_for(user: str, name: str | None = None, lifetime: float = 3600) -> str:
    claims = {"sub": user, "name": name or user.title(), "exp": int(time.time() + lifetime)}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def assert_clean_log(log: Path) -> None:
    """No traceback (an unexpected error) and no unclosed client or credential at shutdown."""
    text = log.read_text(errors="replace")
    for sign in ("Traceback", "Unclosed", "was never awaited"):
        assert sign not in text, f"server log {log} shows {sign!r}:\n{text[-4000:]}"


def serve_chat(fake: FakeAI, tmp: Path, **settings: str) -> Iterator[ChatServer]:
    """A chat server process for the length of a fixture; its log must be clean at the end."""
    settings.setdefault("history_db", str(tmp / "history.sqlite3"))
    log = tmp / "server.log"
    server = ChatServer(server_env(fake, **settings), log=log).start()
    try:
        yield server
    finally:
        server.stop()
    assert_clean_log(log)


@pytest.fixture(scope="session")
def chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """Azure OpenAI (classic routes, API key), default limits, two deployments to pick from (the
    default first, which reads images); a 2 s reply grace period, so the test of a reply nobody came
    back for is short."""
    settings = azure_settings(
        fake_ai, reply_grace_seconds="2", ai_models=f"{DEPLOYMENT},{DEPLOYMENT_MINI}", ai_vision_models=DEPLOYMENT
    )
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("chat"), **settings)


@pytest.fixture(scope="session")
def tight_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """Small limits, to test trimming, the length limit and the rate limit."""
    yield from serve_chat(
        fake_ai,
        tmp_path_factory.mktemp("tight"),
        **azure_settings(
            fake_ai,
            max_history_messages="4",
            max_message_length="200",
            rate_limit_messages="3",
            rate_limit_window_seconds="60",
            reply_grace_seconds="0",
            ai_context_tokens="600",
            ai_max_output_tokens="100",
        ),
    )


@pytest.fixture(scope="session")
def capped_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """The per-address caps of issue 22 on: 3 messages per visitor, 9 per address across
    visitors (3 x RATE_LIMIT_MESSAGES, the default), and 5 new guests per address."""
    yield from serve_chat(
        fake_ai,
        tmp_path_factory.mktemp("capped"),
        **azure_settings(
            fake_ai,
            rate_limit_messages="3",
            rate_limit_window_seconds="60",
            rate_limit_messages_per_address="9",
            guest_new_per_address="5",
        ),
    )


@pytest.fixture(scope="session")
def entra_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """Azure OpenAI with no key: DefaultAzureCredential -> managed identity (the fake's /msi/token)."""
    settings = azure_settings(fake_ai)
    del settings["azure_openai_api_key"]
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("entra"), **settings)


@pytest.fixture(scope="session")
def entra_v1_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """The Azure v1 API ({endpoint}/openai/v1/) with DefaultAzureCredential."""
    settings = azure_settings(fake_ai, azure_openai_v1="true")
    del settings["azure_openai_api_key"]
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("entra-v1"), **settings)


@pytest.fixture(scope="session")
def openai_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """An OpenAI-compatible server (the fake's /v1 route)."""
    yield from serve_chat(
        fake_ai,
        tmp_path_factory.mktemp("openai"),
        openai_base_url=f"{fake_ai.base}/v1",
        openai_api_key=DEFAULT_API_KEY,
        openai_model="fake-model",
    )


@pytest.fixture(scope="session")
def local_chat_server(fake_ai: FakeAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """The built-in offline model, chosen because no provider is configured."""
    yield from serve_chat(fake_ai, tmp_path_factory.mktemp("local"), local_max_output_tokens="48")


def offline_settings(**extra: Any) -> Settings:
    """Chat settings that need nothing running (a model nobody answers, history in memory),
    read from no .env file."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        ai_provider="azure",
        azure_openai_endpoint="http://127.0.0.1:9",
        azure_openai_deployment="d",
        azure_openai_api_key="k",
        history_store="memory",
        **extra,
    )
