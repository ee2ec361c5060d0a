"""The fake Azure OpenAI (tests/support/fake_ai.py) driven by the real `openai` SDK and the real `azure-identity`.

These prove the fake is faithful enough for the AI chat tests: the SDK's routes, auth headers, retries, error
classes and stream parsing all work against it, and a client that goes away shows up as an aborted record.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.support.fake_ai import (
    CONTENT_FILTER_ERROR_BODY,
    DEFAULT_API_KEY,
    DEFAULT_BEARER_TOKEN,
    DEFAULT_IDENTITY_HEADER,
    ERROR_BODIES,
    SLOW_TOKEN_COUNT,
    create_fake_app,
    start_fake,
)
from tests.support.listening import free_port, wait_for_port
from tests.support.paths import ROOT

API_VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-mini"
SCOPE = "https://cognitiveservices.azure.com/.default"
RESOURCE = "https://cognitiveservices.azure.com"
AZURE_IDENTITY_ENV = (
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
)


@dataclass
class FakeAI:
    """The in-process fake plus its control API, reached over HTTP like a test of the server would."""

    port: int
    session: aiohttp.ClientSession

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def records(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.endpoint}/_fake/requests") as response:
            result: list[dict[str, Any]] = await response.json()
            return result

    async def token_records(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.endpoint}/_fake/token-requests") as response:
            result: list[dict[str, Any]] = await response.json()
            return result

    async def reset(self) -> None:
        async with self.session.post(f"{self.endpoint}/_fake/reset") as response:
            assert response.status == 200

    async def wait_for_outcome(self, record_id: int, timeout: float = 2.0) -> dict[str, Any]:
        """Poll until the record has stopped streaming; aborts are noticed asynchronously."""
        deadline = time.monotonic() + timeout
        while True:
            record = next(r for r in await self.records() if r["id"] == record_id)
            if record["outcome"] != "streaming" or time.monotonic() > deadline:
                return record
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAI]:
    runner, port = await start_fake(create_fake_app())
    session = aiohttp.ClientSession()
    try:
        yield FakeAI(port, session)
    finally:
        await session.close()
        await runner.cleanup()


@pytest.fixture
async def azure(fake: FakeAI) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    """The classic Azure client: /openai/deployments/{deployment}/...?api-version=..., `api-key` header."""
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=fake.endpoint, api_key=DEFAULT_API_KEY, api_version=API_VERSION, azure_deployment=DEPLOYMENT
    )
    try:
        yield client
    finally:
        await client.close()


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


@dataclass
class Collected:
    chunks: list[ChatCompletionChunk]
    tokens: list[str]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def finish_reason(self) -> str | None:
        with_choices = [chunk for chunk in self.chunks if chunk.choices]
        return with_choices[-1].choices[0].finish_reason if with_choices else None


async def collect(stream: openai.AsyncStream[ChatCompletionChunk], into: Collected | None = None) -> Collected:
    """Gather content deltas, skipping Azure's chunks with no choices (prompt filter results, usage)."""
    collected = into if into is not None else Collected([], [])
    async for chunk in stream:
        collected.chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            collected.tokens.append(chunk.choices[0].delta.content)
    return collected


async def stream_text(client: openai.AsyncOpenAI, text: str, model: str = DEPLOYMENT) -> Collected:
    stream = await client.chat.completions.create(model=model, messages=user(text), stream=True)
    return await collect(stream)


async def test_azure_classic_stream(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """Tokens arrive one per chunk and the first, choice-less Azure chunk parses."""
    collected = await stream_text(azure, "hello world")

    assert collected.tokens == ["Echo:", " hello", " world", " (history:", " 2", " messages)"]
    assert collected.text == "Echo: hello world (history: 2 messages)"
    assert collected.finish_reason == "stop"
    first = collected.chunks[0]
    assert first.choices == []
    assert (first.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    assert collected.chunks[1].choices[0].delta.role == "assistant"
    assert collected.chunks[2].id.startswith("chatcmpl-")

    [record] = await fake.records()
    assert record["path"] == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert record["query"] == {"api-version": API_VERSION}
    assert record["api_key"] == DEFAULT_API_KEY
    assert record["authorization"] is None
    assert record["deployment"] == DEPLOYMENT
    assert record["body"]["stream"] is True
    assert record["body"]["messages"][1] == {"role": "user", "content": "hello world"}
    assert (record["status"], record["outcome"], record["tokens_sent"]) == (200, "completed", 6)


async def test_azure_classic_non_streaming(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    completion = await azure.chat.completions.create(model=DEPLOYMENT, messages=user("hi there"))

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Echo: hi there (history: 2 messages)"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    [record] = await fake.records()
    assert (record["outcome"], record["tokens_sent"]) == ("completed", 6)


async def test_stream_usage_chunk(azure: openai.AsyncAzureOpenAI) -> None:
    """With include_usage, a last choice-less chunk carries usage, as on Azure."""
    stream = await azure.chat.completions.create(
        model=DEPLOYMENT, messages=user("[[tokens:4]]"), stream=True, stream_options={"include_usage": True}
    )
    collected = await collect(stream)

    assert collected.tokens == ["t0", " t1", " t2", " t3"]
    assert collected.chunks[-1].choices == []
    assert collected.chunks[-1].usage is not None
    assert collected.chunks[-1].usage.completion_tokens == 4


async def test_classic_route_needs_api_version(fake: FakeAI) -> None:
    url = f"{fake.endpoint}/openai/deployments/{DEPLOYMENT}/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with fake.session.post(url, json=body, headers={"api-key": DEFAULT_API_KEY}) as response:
        assert response.status == 404
        assert await response.json() == {"error": {"code": "404", "message": "Resource not found"}}


async def test_azure_v1_route(fake: FakeAI) -> None:
    """The plain client on Azure's /openai/v1/ sends `Authorization: Bearer <key>`, which Azure (and the fake) take."""
    client = openai.AsyncOpenAI(base_url=f"{fake.endpoint}/openai/v1/", api_key=DEFAULT_API_KEY)
    try:
        collected = await stream_text(client, "over v1")
    finally:
        await client.close()

    assert collected.text == "Echo: over v1 (history: 2 messages)"
    [record] = await fake.records()
    assert record["path"] == "/openai/v1/chat/completions"
    assert record["query"] == {}
    assert record["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert record["api_key"] is None
    assert record["deployment"] == DEPLOYMENT


async def test_openai_compatible_route(fake: FakeAI) -> None:
    client = openai.AsyncOpenAI(base_url=f"{fake.endpoint}/v1", api_key=DEFAULT_API_KEY)
    try:
        collected = await stream_text(client, "plain", model="local-model")
    finally:
        await client.close()

    assert collected.text == "Echo: plain (history: 2 messages)"
    [record] = await fake.records()
    assert record["path"] == "/v1/chat/completions"
    assert record["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert record["body"]["model"] == "local-model"


@pytest.fixture
def managed_identity_env(fake: FakeAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """App Service managed identity pointed at the fake; nothing else azure-identity could pick up."""
    for name in AZURE_IDENTITY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{fake.endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", DEFAULT_IDENTITY_HEADER)


@pytest.mark.usefixtures("managed_identity_env")
async def test_managed_identity_end_to_end(fake: FakeAI) -> None:
    """DefaultAzureCredential -> App Service MI endpoint -> Entra token -> `Authorization: Bearer` on the chat call."""
    credential = DefaultAzureCredential()
    try:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=fake.endpoint,
            api_version=API_VERSION,
            azure_deployment=DEPLOYMENT,
            azure_ad_token_provider=get_bearer_token_provider(credential, SCOPE),
        )
        try:
            first = await stream_text(client, "with entra")
            second = await stream_text(client, "again")
        finally:
            await client.close()
    finally:
        await credential.close()

    assert first.text == "Echo: with entra (history: 2 messages)"
    assert second.text == "Echo: again (history: 2 messages)"
    [token_request] = await fake.token_records()  # the second call used the cached token
    assert token_request["query"] == {"api-version": "2019-08-01", "resource": RESOURCE}
    assert token_request["headers"]["x-identity-header"] == DEFAULT_IDENTITY_HEADER
    assert token_request["status"] == 200
    records = await fake.records()
    assert [r["authorization"] for r in records] == [f"Bearer {DEFAULT_BEARER_TOKEN}"] * 2
    assert [r["api_key"] for r in records] == [None, None]


@pytest.mark.usefixtures("managed_identity_env")
async def test_managed_identity_wrong_identity_header(fake: FakeAI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake checks X-IDENTITY-HEADER; azure-identity's failure surfaces unwrapped from the SDK call."""
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    credential = DefaultAzureCredential()
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=fake.endpoint,
        api_version=API_VERSION,
        azure_deployment=DEPLOYMENT,
        azure_ad_token_provider=get_bearer_token_provider(credential, SCOPE),
    )
    try:
        with pytest.raises(ClientAuthenticationError):
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"))
    finally:
        await client.close()
        await credential.close()

    assert [r["status"] for r in await fake.token_records()] == [401]
    assert await fake.records() == []


async def test_wrong_key_is_authentication_error(fake: FakeAI) -> None:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=fake.endpoint, api_key="wrong", api_version=API_VERSION, azure_deployment=DEPLOYMENT
    )
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=user("hi"), stream=True)
    finally:
        await client.close()

    assert caught.value.status_code == 401
    assert caught.value.body == ERROR_BODIES[401]["error"]
    assert [(r["status"], r["outcome"], r["api_key"]) for r in await fake.records()] == [(401, "error", "wrong")]


@pytest.mark.parametrize(
    ("marker", "error", "status"),
    [
        ("[[401]]", openai.AuthenticationError, 401),
        ("[[403]]", openai.PermissionDeniedError, 403),
    ],
)
async def test_scripted_auth_errors(
    fake: FakeAI, azure: openai.AsyncAzureOpenAI, marker: str, error: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as caught:
        await azure.chat.completions.create(model=DEPLOYMENT, messages=user(f"go {marker}"), stream=True)

    assert caught.value.status_code == status
    assert caught.value.code == str(status)
    assert len(await fake.records()) == 1  # 4xx other than 408/409/429 is not retried


async def test_rate_limit_retries_then_fails(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """max_retries=2 means 3 attempts; `retry-after-ms: 10` is honoured (default backoff would take over 1 s)."""
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        await azure.with_options(max_retries=2).chat.completions.create(
            model=DEPLOYMENT, messages=user("[[429]]"), stream=True
        )
    elapsed = time.monotonic() - started

    assert caught.value.status_code == 429
    assert caught.value.code == "429"
    assert caught.value.response.headers["retry-after-ms"] == "10"
    records = await fake.records()
    assert [r["status"] for r in records] == [429, 429, 429]
    assert elapsed < 1.0


async def test_rate_limit_once_then_success(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    collected = await stream_text(azure, "[[429-once]] hi")

    assert collected.text == "Echo: [[429-once]] hi (history: 2 messages)"
    assert [(r["status"], r["outcome"]) for r in await fake.records()] == [(429, "error"), (200, "completed")]


async def test_server_error_without_retries(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await azure.with_options(max_retries=0).chat.completions.create(
            model=DEPLOYMENT, messages=user("[[500]]"), stream=True
        )

    assert caught.value.status_code == 500
    assert caught.value.code == "InternalServerError"
    assert len(await fake.records()) == 1


async def test_prompt_content_filter(azure: openai.AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await azure.chat.completions.create(model=DEPLOYMENT, messages=user("[[filter]]"), stream=True)

    assert caught.value.code == "content_filter"
    assert caught.value.param == "prompt"
    assert caught.value.body == CONTENT_FILTER_ERROR_BODY["error"]


async def test_completion_content_filter_finish(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    collected = await stream_text(azure, "[[filter-finish]]")

    assert collected.tokens == ["t0", " t1", " t2"]
    assert collected.finish_reason == "content_filter"
    [record] = await fake.records()
    assert (record["outcome"], record["tokens_sent"]) == ("completed", 3)


async def raw_chunks(client: openai.AsyncOpenAI, text: str) -> list[dict[str, Any]]:
    """Every event as sent, through the SDK's raw stream: the asynchronous filter's annotation
    choices have no `delta`, which the SDK's typed chunks do not expect."""
    request = client.chat.completions.with_streaming_response.create(model=DEPLOYMENT, messages=user(text), stream=True)
    async with request as response:
        lines = [line async for line in response.iter_lines()]
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]


async def test_length_marker_finishes_with_length(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    collected = await stream_text(azure, "[[length]]")

    assert collected.tokens == ["t0", " t1", " t2"]
    assert collected.finish_reason == "length"


async def test_asynchronous_filter_annotations_follow_the_text_they_cover(azure: openai.AsyncAzureOpenAI) -> None:
    chunks = await raw_chunks(azure, "[[async-filter-pass]]")

    assert chunks[0]["choices"] == [] and chunks[0]["prompt_filter_results"], "the prompt's annotation"
    choices = [chunk["choices"][0] for chunk in chunks if chunk["choices"]]
    texts = [c["delta"]["content"] for c in choices if c.get("delta", {}).get("content")]
    assert texts == [f"t{i}" if i == 0 else f" t{i}" for i in range(6)]
    annotations = [c for c in choices if "delta" not in c]
    assert len(annotations) == 3, "after every 2 tokens but the last, and one after the finish"
    assert all(
        c["content_filter_offsets"].keys() == {"check_offset", "start_offset", "end_offset"} for c in annotations
    )
    assert all(c["finish_reason"] is None for c in annotations)
    assert all(not v["filtered"] for c in annotations for v in c["content_filter_results"].values())
    checks = [c["content_filter_offsets"]["check_offset"] for c in annotations]
    assert checks == sorted(checks), "check_offset never decreases"
    assert annotations[-1]["content_filter_offsets"]["end_offset"] - annotations[0]["content_filter_offsets"][
        "start_offset"
    ] == len("".join(texts)), "together they cover the reply"
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["stop"]
    assert "delta" not in choices[-1], "the last annotation follows the finish"


async def test_asynchronous_filter_violation_comes_late_after_the_text(
    fake: FakeAI, azure: openai.AsyncAzureOpenAI
) -> None:
    chunks = await raw_chunks(azure, "[[async-filter]]")

    choices = [chunk["choices"][0] for chunk in chunks if chunk["choices"]]
    texts = [c["delta"]["content"] for c in choices if c.get("delta", {}).get("content")]
    assert len(texts) == 6, "all the text was sent before the verdict"
    verdict = choices[-1]
    assert "delta" not in verdict
    assert verdict["finish_reason"] == "content_filter"
    assert verdict["content_filter_results"]["protected_material_text"] == {"detected": True, "filtered": True}
    offsets = verdict["content_filter_offsets"]
    assert offsets["end_offset"] > offsets["start_offset"] == offsets["check_offset"]
    [record] = await fake.records()
    assert (record["outcome"], record["tokens_sent"]) == ("completed", 6)


async def test_tokens_marker(azure: openai.AsyncAzureOpenAI) -> None:
    collected = await stream_text(azure, "[[tokens:25]]")

    assert collected.tokens == ["t0", *(f" t{i}" for i in range(1, 25))]


async def test_empty_stream(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    collected = await stream_text(azure, "[[empty]]")

    assert collected.tokens == []
    assert collected.finish_reason == "stop"
    [record] = await fake.records()
    assert (record["outcome"], record["tokens_sent"]) == ("completed", 0)


async def test_drop_mid_stream_raises_connection_error(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """A dropped transport after two tokens: the SDK raises APIConnectionError from inside the iteration."""
    stream = await azure.chat.completions.create(model=DEPLOYMENT, messages=user("[[drop]]"), stream=True)
    collected = Collected([], [])
    with pytest.raises(openai.APIConnectionError) as caught:
        await collect(stream, collected)

    assert type(caught.value) is openai.APIConnectionError  # not the APITimeoutError subclass
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert collected.tokens == ["t0", " t1"]
    [record] = await fake.records()  # mid-stream failures are not retried by the SDK
    assert (record["status"], record["outcome"], record["tokens_sent"]) == (200, "error", 2)


async def test_drop_before_response_is_retried(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """Without streaming, the drop happens before any response; that the SDK does retry."""
    with pytest.raises(openai.APIConnectionError):
        await azure.with_options(max_retries=1).chat.completions.create(model=DEPLOYMENT, messages=user("[[drop]]"))

    assert [r["outcome"] for r in await fake.records()] == ["error", "error"]


async def test_closing_stream_aborts_upstream(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """stream.close() after three tokens: the fake's handler is cancelled and records the abort."""
    stream = await azure.chat.completions.create(model=DEPLOYMENT, messages=user("[[slow]]"), stream=True)
    tokens: list[str] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            tokens.append(chunk.choices[0].delta.content)
            if len(tokens) == 3:
                break
    await stream.close()

    [record] = await fake.records()
    record = await fake.wait_for_outcome(record["id"])
    assert tokens == ["tok0", " tok1", " tok2"]
    assert record["outcome"] == "aborted"
    assert 3 <= record["tokens_sent"] < SLOW_TOKEN_COUNT


async def test_cancelling_consumer_aborts_upstream(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    """Cancelling the task that iterates the stream also closes the connection and aborts upstream."""
    three = asyncio.Event()
    collected = Collected([], [])

    async def consume() -> None:
        stream = await azure.chat.completions.create(model=DEPLOYMENT, messages=user("[[slow]]"), stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                collected.tokens.append(chunk.choices[0].delta.content)
                if len(collected.tokens) == 3:
                    three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [record] = await fake.records()
    record = await fake.wait_for_outcome(record["id"])
    assert record["outcome"] == "aborted"
    assert 3 <= record["tokens_sent"] < SLOW_TOKEN_COUNT


async def test_reset_clears_records(fake: FakeAI, azure: openai.AsyncAzureOpenAI) -> None:
    await stream_text(azure, "[[429-once]] x")
    assert len(await fake.records()) == 2
    await fake.reset()
    assert await fake.records() == []
    assert await fake.token_records() == []
    await stream_text(azure, "[[429-once]] x")  # the once-only 429 is forgotten by a reset too
    assert [(r["id"], r["status"]) for r in await fake.records()] == [(1, 429), (2, 200)]


@pytest.fixture
def fake_process() -> Iterator[int]:
    """`python -m tests.support.fake_ai --port P`, as the server's tests will run it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_ai", "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield port
    finally:
        process.terminate()
        try:
            assert process.wait(10) == 0  # SIGTERM is a clean shutdown
        except subprocess.TimeoutExpired:
            process.kill()
            raise


async def test_runs_as_a_process(fake_process: int) -> None:
    async with aiohttp.ClientSession() as session:
        fake = FakeAI(fake_process, session)
        await fake.reset()
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=fake.endpoint, api_key=DEFAULT_API_KEY, api_version=API_VERSION, azure_deployment=DEPLOYMENT
        )
        try:
            collected = await stream_text(client, "from a process")
        finally:
            await client.close()
        assert collected.text == "Echo: from a process (history: 2 messages)"
        [record] = await fake.records()
        assert record["outcome"] == "completed"
