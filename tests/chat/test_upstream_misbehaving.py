"""The model upstream misbehaving, on command of the fake Azure OpenAI (tests/support/fake_ai.py):
non-string deltas, a runaway reply, keep-alive comments only, a hung server, a stream
that ends mid-reply, multi-line events. The chat app (`create_app`, the real openai SDK)
serves in-process and a hand-driven WebSocket plays the page (SendMessage) and the
Angular app (AskAi): whatever the upstream does, each turn's events close properly and
the user reads a friendly text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from signalr_chat.ai import AiFailed, AiInterrupted, AiReplyTooLong
from signalr_chat.ai.sse_events import ServerSentEvents
from signalr_chat.app.application import create_app
from signalr_chat.app.settings import Settings
from tests.support.fake_ai import (
    DEFAULT_API_KEY,
    RUNAWAY_TOKEN,
    TRUNCATED_TOKENS,
    create_fake_app,
    fake_state,
    start_fake,
)

pytestmark = pytest.mark.timeout(60)

RS = "\x1e"
FAILED = AiFailed.user_message
MAX_REPLY = 5_000
#: Events that end a SendMessage turn / an AskAi turn.
SEED1_END = {"ReceiveStreamEnd", "ReceiveError"}


@dataclass
class Chat:
    ws: aiohttp.ClientWebSocketResponse
    ids: int = 0

    async def call(self, target: str, *args: Any) -> tuple[list[list[Any]], dict[str, Any]]:
        """Invoke and return the events that arrived before the invocation's Completion, and it."""
        self.ids += 1
        invocation_id = str(self.ids)
        record = {"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(args)}
        await self.ws.send_str(json.dumps(record) + RS)
        events: list[list[Any]] = []
        while True:
            message = await self.ws.receive(timeout=30)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            for text in message.data.split(RS)[:-1]:
                item = json.loads(text)
                if item["type"] == 1:
                    events.append([item["target"], *item["arguments"]])
                elif item["type"] == 3 and item["invocationId"] == invocation_id:
                    return events, item


@dataclass
class Upstream:
    app: Any
    port: int

    def records(self) -> list[dict[str, Any]]:
        return fake_state(self.app).requests


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = create_fake_app()
    runner, port = await start_fake(app)
    try:
        yield Upstream(app, port)
    finally:
        await runner.cleanup()


@pytest.fixture
async def chat(upstream: Upstream) -> AsyncIterator[Chat]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        ai_provider="azure",
        azure_openai_endpoint=f"http://127.0.0.1:{upstream.port}",
        azure_openai_deployment="chat",
        azure_openai_api_key=DEFAULT_API_KEY,
        ai_max_retries=0,
        history_store="memory",
        max_reply_length=MAX_REPLY,
        reply_first_token_timeout_seconds=1,
        reply_timeout_seconds=3,
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{server.port}/chatHub") as ws,
        ):
            await ws.send_str('{"protocol":"json","version":1}' + RS)
            assert (await ws.receive(timeout=10)).data == "{}" + RS
            yield Chat(ws)
    finally:
        await server.close()


def tokens(events: list[list[Any]]) -> str:
    return "".join(e[1] for e in events if e[0] == "ReceiveStreamToken")


async def history(chat: Chat) -> list[dict[str, str]]:
    _, completion = await chat.call("GetHistory")
    return list(completion["result"])


async def eventually_aborted(upstream: Upstream) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (record := upstream.records()[-1])["outcome"] == "streaming" and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return record


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_text] == []


# -- non-string delta content ------------------------------------------------------------


async def test_integer_content_ends_send_message_with_the_friendly_error(
    chat: Chat, caplog: pytest.LogCaptureFixture
) -> None:
    events, completion = await chat.call("SendMessage", "[[content:int]]")
    assert events == [
        ["ReceiveStatusUpdate", "thinking"],
        ["ReceiveStreamStart"],
        ["ReceiveStreamToken", "t0"],
        ["ReceiveStreamToken", " t1"],
        ["ReceiveStreamEnd"],
        ["ReceiveError", FAILED],
    ]
    assert "error" not in completion
    assert await history(chat) == [
        {"role": "user", "content": "[[content:int]]"},
        {"role": "assistant", "content": "t0 t1"},
    ], "the text that came is kept"
    assert_no_errors_logged(caplog)


async def test_list_content_ends_ask_ai_with_completed(chat: Chat, caplog: pytest.LogCaptureFixture) -> None:
    events, completion = await chat.call("AskAi", "[[content:list]]")
    message_id = completion["result"]
    assert events == [
        ["typing", message_id, True],
        ["typing", message_id, False],
        ["error", message_id, FAILED],
        ["completed", message_id],
    ]
    assert_no_errors_logged(caplog)


# -- a runaway upstream ---------------------------------------------------------------------


async def test_runaway_reply_is_cut_at_the_limit_and_the_upstream_stopped(chat: Chat, upstream: Upstream) -> None:
    events, _ = await chat.call("SendMessage", "[[runaway]]")
    assert tokens(events) == RUNAWAY_TOKEN * (MAX_REPLY // len(RUNAWAY_TOKEN))
    assert events[-2:] == [["ReceiveStreamEnd"], ["ReceiveError", AiReplyTooLong.user_message]]
    record = await eventually_aborted(upstream)
    assert record["outcome"] == "aborted", "the upstream request was stopped at the cap"
    stored = await history(chat)
    assert len(stored[1]["content"]) == MAX_REPLY, "the reply is stored as far as the cap"


# -- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", ["[[keepalive-only]]", "[[hang]]"])
async def test_an_upstream_that_sends_no_text_times_out(chat: Chat, upstream: Upstream, marker: str) -> None:
    started = time.monotonic()
    events, _ = await chat.call("SendMessage", marker)
    assert events == [["ReceiveStatusUpdate", "thinking"], ["ReceiveError", FAILED]]
    assert time.monotonic() - started < 10, "the first-token deadline (1 s here) ended it"
    assert (await eventually_aborted(upstream))["outcome"] == "aborted"
    events, _ = await chat.call("AskAi", marker)
    assert [e[0] for e in events] == ["typing", "typing", "error", "completed"]
    assert events[2][2] == FAILED


async def test_a_reply_still_streaming_at_the_deadline_ends_with_the_error(chat: Chat) -> None:
    events, _ = await chat.call("SendMessage", "[[slow]]")  # 400 tokens, 0.05 s apart: 20 s
    assert events[-2:] == [["ReceiveStreamEnd"], ["ReceiveError", FAILED]]
    shown = tokens(events)
    assert shown.startswith("tok0 tok1")
    assert (await history(chat))[1]["content"] == shown, "what was shown is kept"


# -- a stream that ends mid-reply -----------------------------------------------------------------


async def test_a_stream_ending_without_finish_is_interrupted(chat: Chat, caplog: pytest.LogCaptureFixture) -> None:
    events, _ = await chat.call("SendMessage", "[[truncated]]")
    expected = "".join(f"t{i}" if i == 0 else f" t{i}" for i in range(TRUNCATED_TOKENS))
    assert tokens(events) == expected
    assert events[-2:] == [["ReceiveStreamEnd"], ["ReceiveError", AiInterrupted.user_message]]
    assert (await history(chat))[1]["content"] == expected, "the text is kept"
    assert_no_errors_logged(caplog)


# -- multi-line events ----------------------------------------------------------------------------


async def test_multi_line_data_events_are_read(chat: Chat) -> None:
    events, _ = await chat.call("SendMessage", "[[multiline]] hello")
    assert tokens(events) == "Echo: [[multiline]] hello (history: 2 messages)"
    assert events[-1] == ["ReceiveStreamEnd"]


@pytest.mark.parametrize(
    ("lines", "events"),
    [
        (["data: a", ""], ["a"]),
        (["data: {", 'data:  "x": 1', "data: }", ""], ['{\n "x": 1\n}']),
        ([": keep-alive", "", "event: delta", "data:b", "id: 1", "retry: 5", ""], ["b"]),
        (["data", "data: x", ""], ["\nx"]),
        (["", "", "data: [DONE]", ""], ["[DONE]"]),
        (["data: incomplete"], []),
        (["dataset: no", ""], []),
    ],
)
def test_server_sent_events(lines: list[str], events: list[str]) -> None:
    parser = ServerSentEvents()
    assert [e for line in lines if (e := parser.feed(line)) is not None] == events
