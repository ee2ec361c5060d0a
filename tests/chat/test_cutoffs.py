"""Honest ends of a reply, in process through the real `openai` SDK against the fake Azure
OpenAI (tests/support/fake_ai.py), on every history store (memory, SQLite, Redis):

- a reply the provider stops at its token limit (`finish_reason: "length"`, [[length]]) or
  that reaches MAX_REPLY_LENGTH is stored and ended with `cut: "length"`; ContinueReply
  takes the mark away once the continuation finishes normally;
- Azure's asynchronous content filter: annotation chunks never count as text ([[async-filter-pass]]),
  and a late violation ([[async-filter]]) withdraws the reply: nothing of it is stored or
  replayed, and its end says so with the content-policy text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from signalr_chat.ai import AiContentFiltered, AiContentWithdrawn, AiReplyTooLong
from signalr_chat.chat.conversations import CONTINUE_PROMPT, ConversationService
from signalr_chat.chat.history import HistoryStore
from signalr_chat.chat.service import Caller
from tests.support import fake_ai
from tests.support.fake_ai import (
    ASYNC_FILTER_TOKENS,
    LENGTH_TOKENS,
    fake_state,
    numbered_tokens,
)
from tests.support.history_stores import KINDS, conversations_on_fake, open_store

pytestmark = pytest.mark.timeout(60)

POLICY = AiContentFiltered.user_message
MAX_REPLY = 200
DEPLOYMENT = "chat"


@dataclass
class Chat:
    conversations: ConversationService
    store: HistoryStore
    upstream: web.Application
    caller: Caller

    async def run(
        self, kind: str, text: object = None, index: int = 0, conversation: str = "default"
    ) -> list[dict[str, object]]:
        """Starts a reply and follows it to its end."""
        await self.conversations.start(self.caller, conversation, kind, text, index)
        return [item async for item in self.conversations.follow(self.caller, conversation, 0)]

    async def messages(self, conversation: str = "default") -> list[dict[str, object]]:
        return cast(list[dict[str, object]], (await self.conversations.open(self.caller, conversation))["messages"])

    def requests(self) -> list[dict[str, Any]]:
        return fake_state(self.upstream).requests


def text_of(items: list[dict[str, object]]) -> str:
    return "".join(str(item["text"]) for item in items if "text" in item)


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    opened = await open_store(request.param, request, tmp_path, keep=20)
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
def prompt_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The late verdict is late for a browser to have shown the text (1 s); these tests follow
    replies from their start, so a twentieth of that is late enough and keeps `make check` short."""
    monkeypatch.setattr(fake_ai, "ASYNC_FILTER_VERDICT_DELAY", 0.05)


@pytest.fixture
async def chat(store: HistoryStore) -> AsyncIterator[Chat]:
    async with conversations_on_fake(
        store,
        owns_store=False,  # the store fixture closes it, after the test has read it
        azure_openai_deployment=DEPLOYMENT,
        ai_max_retries=0,
        max_reply_length=MAX_REPLY,
    ) as (conversations, upstream):
        yield Chat(conversations, store, upstream, Caller("c1", "ann"))


# -- cut at a length limit -----------------------------------------------------------------


async def test_a_reply_the_provider_cut_at_its_token_limit_is_marked_cut_and_continued(chat: Chat) -> None:
    question = "[[length]] write a long story"
    items = await chat.run("send", question)
    cut_text = "".join(numbered_tokens("t", LENGTH_TOKENS))
    assert text_of(items) == cut_text
    end = items[-1]
    assert (end["end"], end.get("cut"), end.get("error"), end.get("withdrawn")) == ("completed", "length", None, None)
    expected = [{"role": "user", "content": question}, {"role": "assistant", "content": cut_text, "cut": "length"}]
    history = await chat.conversations.history(chat.caller)  # GetHistory says so too
    assert history == expected
    expected[1]["model"] = DEPLOYMENT  # GetConversation labels each reply with its model
    assert await chat.messages() == expected

    # the mark is ours: the model is never sent it
    items = await chat.run("continue")
    sent = chat.requests()[-1]["body"]["messages"]
    assert sent[-2:] == [{"role": "assistant", "content": cut_text}, {"role": "user", "content": CONTINUE_PROMPT}]
    assert items[-1]["end"] == "completed" and "cut" not in items[-1]
    rest = text_of(items)
    assert rest.startswith("Echo: " + CONTINUE_PROMPT)
    # continued to a normal finish: one reply, the mark gone
    assert await chat.messages() == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": cut_text + rest, "model": DEPLOYMENT},
    ]


async def test_a_continuation_cut_again_stays_marked_and_a_failed_one_keeps_the_mark(chat: Chat) -> None:
    await chat.run("send", "[[length]] first")
    first = "".join(numbered_tokens("t", LENGTH_TOKENS))
    # a regenerate to a cut question is cut again: marked again
    items = await chat.run("regenerate")
    assert items[-1]["cut"] == "length"
    assert (await chat.messages())[-1] == {"role": "assistant", "content": first, "cut": "length", "model": DEPLOYMENT}
    # a continuation stopped before it finished leaves the reply cut short
    await chat.conversations.start(chat.caller, "default", "continue")
    await chat.conversations.stop(chat.caller, "default")
    ended = [item async for item in chat.conversations.follow(chat.caller, "default", 0)]
    assert ended[-1]["end"] == "stopped"
    last = (await chat.messages())[-1]
    assert last["cut"] == "length" and str(last["content"]).startswith(first)


async def test_a_reply_cut_at_max_reply_length_is_marked_cut(chat: Chat) -> None:
    items = await chat.run("send", "[[tokens:100]] a long one")
    assert len(text_of(items)) == MAX_REPLY
    assert items[-1]["end"] == "completed" and items[-1]["cut"] == "length"
    assert (await chat.messages())[-1]["cut"] == "length"


async def test_seed_methods_end_a_cut_reply_as_they_always_did_and_it_is_stored_marked(chat: Chat) -> None:
    tokens: list[str] = []

    async def emit(token: str) -> None:
        tokens.append(token)

    # the model's own limit: a normal end for SendMessage/AskAi, whose events have no mark
    text = await chat.conversations.reply(chat.caller, "[[length]] seed", emit)
    assert text == "".join(tokens) == "".join(numbered_tokens("t", LENGTH_TOKENS))
    assert (await chat.conversations.history(chat.caller))[-1]["cut"] == "length"
    # MAX_REPLY_LENGTH: the error they always got, and the reply stored marked too
    with pytest.raises(AiReplyTooLong):
        await chat.conversations.reply(chat.caller, "[[tokens:100]] seed", emit)
    assert (await chat.conversations.history(chat.caller))[-1]["cut"] == "length"


# -- Azure's asynchronous content filter ------------------------------------------------------


async def test_annotations_of_the_asynchronous_filter_never_count_as_text(chat: Chat) -> None:
    question = "[[async-filter-pass]] tell me"
    items = await chat.run("send", question)
    whole = "".join(numbered_tokens("t", ASYNC_FILTER_TOKENS))
    assert text_of(items) == whole
    assert [item["sequence"] for item in items if "text" in item] == list(range(1, ASYNC_FILTER_TOKENS + 1))
    assert items[-1]["end"] == "completed" and "withdrawn" not in items[-1]
    assert await chat.messages() == [
        {"role": "user", "content": question},
        {"role": "assistant", "content": whole, "model": DEPLOYMENT},
    ]


async def test_a_late_violation_withdraws_the_reply_from_the_store_and_the_replay(chat: Chat) -> None:
    await chat.run("send", "before")
    kept = await chat.messages()
    question = "[[async-filter]] tell me"
    items = await chat.run("send", question)
    # the text streamed before the verdict came, then the end that takes it back
    assert text_of(items) == "".join(numbered_tokens("t", ASYNC_FILTER_TOKENS))
    end = items[-1]
    assert (end["end"], end["error"], end["withdrawn"]) == ("error", POLICY, True)
    assert chat.requests()[-1]["outcome"] == "completed"

    # nothing of it stored: as an error before any text, the question is taken back too
    assert await chat.messages() == kept
    opened = await chat.conversations.open(chat.caller, "default")
    assert opened["reply"] is None or opened["reply"]["sequence"] == 0  # type: ignore[index]
    # and nothing of it replayed: a follower that comes now gets the end alone
    replay = [item async for item in chat.conversations.follow(chat.caller, "default", 0)]
    assert replay == [{"sequence": 0, "end": "error", "error": POLICY, "withdrawn": True, "replyId": end["replyId"]}]


async def test_an_edit_whose_reply_is_withdrawn_loses_nothing(chat: Chat) -> None:
    await chat.run("send", "[[length]] story")
    before = await chat.messages()
    items = await chat.run("edit", "[[async-filter]] story", 0)
    assert items[-1]["withdrawn"] is True
    assert await chat.messages() == before, "an edit whose reply was withdrawn loses nothing"


async def test_seed_send_message_withdrawn_stores_nothing(chat: Chat) -> None:
    tokens: list[str] = []

    async def emit(token: str) -> None:
        tokens.append(token)

    with pytest.raises(AiContentWithdrawn):
        await chat.conversations.reply(chat.caller, "[[async-filter]] seed", emit)
    assert len(tokens) == ASYNC_FILTER_TOKENS
    assert await chat.conversations.history(chat.caller) == []
