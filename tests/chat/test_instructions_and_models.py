"""Custom instructions and several models per conversation (issue 23), in process: the stores keep
the choices and the labels (memory, SQLite with its migration, Redis against a real redis-server),
the trimming pays for the instructions, and the real `openai` SDK asks the fake Azure OpenAI
(tests/support/fake_ai.py) for the chosen deployment, with the instructions as a system message."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import NOT_FOUND, ConversationService
from signalr_chat.chat.history import ConversationInfo, HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.service import Caller, Rejected
from signalr_chat.chat.sqlite_history import SCHEMA_VERSION, SqliteHistoryStore
from signalr_chat.chat.trimming import MESSAGE_OVERHEAD, fit_to_budget
from signalr_chat.signalr.redis import client_from_url
from tests.support.fake_ai import fake_state
from tests.support.history_stores import KINDS, conversations_on_fake, open_store
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

ANN, BOB = "ann", "bob"


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    chosen = await open_store(str(request.param), request, tmp_path)
    yield chosen
    await chosen.close()


# -- the stores ---------------------------------------------------------------------------
async def test_every_store_keeps_the_choices_with_the_entry_and_the_label_with_the_reply(store: HistoryStore) -> None:
    instructions = 'Answer in French, "briefly", with [brackets] and ünïcödé ✓'
    await store.save_conversation("user:ann", ConversationInfo("c1", "One", 1.0, 2.0, instructions, "gpt-4o-mini"))
    await store.save_conversation("user:ann", ConversationInfo("c2", "Two", 3.0, 3.0))
    assert await store.conversations("user:ann") == [
        ConversationInfo("c2", "Two", 3.0, 3.0, "", ""),
        ConversationInfo("c1", "One", 1.0, 2.0, instructions, "gpt-4o-mini"),
    ]
    # an upsert writes the choices as given, keeping `created`
    await store.save_conversation("user:ann", ConversationInfo("c1", "One", 9.0, 4.0, "", "gpt-4o"))
    assert (await store.conversations("user:ann"))[0] == ConversationInfo("c1", "One", 1.0, 4.0, "", "gpt-4o")

    turn: list[ChatMessage] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "model": "gpt-4o"},
    ]
    listed = ("user:ann", ConversationInfo("c1", "One", 1.0, 5.0, "be brief", "gpt-4o"))
    await store.append("user:ann/c1", turn, listed)
    assert await store.load("user:ann/c1") == turn
    assert (await store.conversations("user:ann"))[0].instructions == "be brief"
    rewritten: list[ChatMessage] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "b", "model": "gpt-4o + gpt-4o-mini"},
    ]
    await store.replace("user:ann/c1", rewritten)
    assert await store.load("user:ann/c1") == rewritten


async def test_redis_reads_entries_and_messages_written_before_the_choices(redis_server: RedisServer) -> None:
    store = RedisHistoryStore(redis_server.url, keep=50)
    redis = client_from_url(redis_server.url, 5.0)
    try:
        # as the store wrote them before: [created, updated, title] and [role, content]
        await redis.hset("signalr_chat:conversations:user:ann", "c1", '[1.5,2.5,"Old, \\"quoted\\""]')
        await redis.rpush("signalr_chat:history:user:ann/c1", json.dumps(["user", "q"]), json.dumps(["assistant", "a"]))
        assert await store.conversations("user:ann") == [ConversationInfo("c1", 'Old, "quoted"', 1.5, 2.5, "", "")]
        assert await store.load("user:ann/c1") == [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]
    finally:
        await redis.aclose()
        await store.close()


#: The schema every file had before schema versions were kept (user_version 0), verbatim.
OLD_SCHEMA = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation, id);
CREATE TABLE conversations (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (owner, id)
);
"""


async def test_an_sqlite_file_of_the_old_schema_opens_and_keeps_its_conversations(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute("INSERT INTO conversations VALUES ('user:ann', 'c1', 'Kept', 1.0, 2.0)")
        old.executemany(
            "INSERT INTO messages (conversation, role, content, created) VALUES (?, ?, ?, 1.0)",
            [("user:ann/c1", "user", "old question"), ("user:ann/c1", "assistant", "old answer")],
        )
    old.close()

    store = SqliteHistoryStore(path, keep=50)
    await store.open()
    try:
        assert await store.conversations("user:ann") == [ConversationInfo("c1", "Kept", 1.0, 2.0, "", "")]
        assert await store.load("user:ann/c1") == [
            {"role": "user", "content": "old question"},
            {"role": "assistant", "content": "old answer"},
        ]
        await store.save_conversation("user:ann", ConversationInfo("c1", "Kept", 1.0, 3.0, "be brief", "m2"))
        await store.append("user:ann/c1", [{"role": "assistant", "content": "new", "model": "m2"}])
    finally:
        await store.close()

    again = SqliteHistoryStore(path, keep=50)  # a migrated file opens as it is
    await again.open()
    try:
        assert await again.conversations("user:ann") == [ConversationInfo("c1", "Kept", 1.0, 3.0, "be brief", "m2")]
        assert (await again.load("user:ann/c1"))[-1] == {"role": "assistant", "content": "new", "model": "m2"}
    finally:
        await again.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    check.close()


async def test_two_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute("INSERT INTO conversations VALUES ('user:ann', 'c1', 'Kept', 1.0, 2.0)")
    old.close()
    stores = [SqliteHistoryStore(path, keep=50) for _ in range(4)]  # a connection (and thread) each
    try:
        await asyncio.gather(*(store.open() for store in stores))
        for store in stores:
            assert await store.conversations("user:ann") == [ConversationInfo("c1", "Kept", 1.0, 2.0, "", "")]
    finally:
        for store in stores:
            await store.close()


async def test_an_sqlite_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    store = SqliteHistoryStore(path, keep=50)
    with pytest.raises(RuntimeError, match="newer version"):
        await store.open()
    await store.close()


# -- the budget --------------------------------------------------------------------------
def test_the_instructions_come_after_the_system_prompt_and_are_paid_for_from_the_history() -> None:
    def count(text: str) -> int:
        return len(text)

    system: ChatMessage = {"role": "system", "content": "s" * 10}
    history: list[ChatMessage] = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"q{i}" + "x" * 18},
            {"role": "assistant", "content": f"a{i}" + "y" * 18, "model": "m"},
        ]
    ask: ChatMessage = {"role": "user", "content": "new"}
    budget = 200
    without = fit_to_budget(system, history, ask, budget, count)
    instructions: ChatMessage = {"role": "system", "content": "i" * 50}
    with_them = fit_to_budget(system, history, ask, budget, count, instructions)
    assert with_them[:2] == [system, instructions]
    assert with_them[-1] == ask
    kept, kept_before = len(with_them) - 3, len(without) - 2
    assert kept < kept_before, "the instructions take the room of earlier turns"
    used = 3 + sum(count(m["content"]) + MESSAGE_OVERHEAD for m in with_them)
    assert used <= budget
    assert all("model" not in m for m in with_them), "a reply's label is never sent to a model"
    assert with_them[2]["role"] == "user"


# -- the pipeline, through the real openai SDK against the fake Azure OpenAI ---------------
class Models:
    """A ConversationService on the real Azure OpenAI client (AI_MODELS=dep-a,dep-b) and the fake."""

    def __init__(self, conversations: ConversationService, fake: web.Application) -> None:
        self.conversations = conversations
        self.fake = fake

    def requests(self) -> list[dict[str, Any]]:
        return fake_state(self.fake).requests

    async def talk(self, caller: Caller, conversation: str, message: str) -> str:
        await self.conversations.start(caller, conversation, "send", message)
        items = [item async for item in self.conversations.follow(caller, conversation, 0)]
        assert items[-1]["end"] == "completed", items
        return "".join(str(item["text"]) for item in items if "text" in item)


@pytest.fixture(params=KINDS)
async def models(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Models]:
    store = await open_store(str(request.param), request, tmp_path)
    async with conversations_on_fake(store, ai_models="dep-a, dep-b", max_instructions_length=40) as (
        conversations,
        fake,
    ):
        yield Models(conversations, fake)


async def test_a_conversation_is_answered_by_its_model_told_its_instructions(models: Models) -> None:
    service = models.conversations
    ann = Caller("c1", ANN)
    assert service.info()["models"] == ["dep-a", "dep-b"]
    assert service.info()["model"] == "dep-a"
    assert service.info()["maxInstructionsLength"] == 40
    chosen = (await service.create(ann, "Chosen"))["id"]
    plain = (await service.create(ann, "Plain"))["id"]
    assert isinstance(chosen, str) and isinstance(plain, str)

    entry = await service.set_instructions(ann, chosen, "  Answer like a pirate.  ")
    assert entry["instructions"] == "Answer like a pirate."
    entry = await service.set_model(ann, chosen, "dep-b")
    assert (entry["model"], entry["instructions"]) == ("dep-b", "Answer like a pirate.")

    await models.talk(ann, chosen, "hello there")
    request = models.requests()[-1]
    assert request["path"] == "/openai/deployments/dep-b/chat/completions"
    sent = request["body"]["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"] == service.chat.system["content"]
    assert sent[1] == {"role": "system", "content": "Answer like a pirate."}
    assert sent[2:] == [{"role": "user", "content": "hello there"}]

    await models.talk(ann, plain, "and you?")
    request = models.requests()[-1]
    assert request["path"] == "/openai/deployments/dep-a/chat/completions", "the default deployment"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"], "no instructions, none sent"

    # the choices and the label survive: a new connection (a reload) sees them
    opened = await service.open(Caller("c2", ANN), chosen)
    assert (opened["instructions"], opened["model"]) == ("Answer like a pirate.", "dep-b")
    messages = cast(list[dict[str, object]], opened["messages"])
    assert [m.get("model") for m in messages] == [None, "dep-b"]
    listed = {str(c["id"]): c for c in await service.list(ann)}
    assert (listed[chosen]["model"], listed[plain]["model"]) == ("dep-b", "dep-a")

    # a switch labels the next replies: the earlier one keeps its label
    await service.set_model(ann, chosen, "dep-a")
    await service.set_instructions(ann, chosen, None)
    await models.talk(ann, chosen, "again")
    request = models.requests()[-1]
    assert request["path"] == "/openai/deployments/dep-a/chat/completions"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user", "assistant", "user"]
    assert all(set(m) == {"role", "content"} for m in request["body"]["messages"]), "labels never leave"
    opened = await service.open(ann, chosen)
    assert [m.get("model") for m in cast(list[dict[str, object]], opened["messages"])] == [None, "dep-b", None, "dep-a"]
    assert opened["instructions"] == ""


async def test_bad_choices_are_refused_and_change_nothing(models: Models) -> None:
    service = models.conversations
    ann = Caller("c1", ANN)
    conversation = str((await service.create(ann, None))["id"])
    await service.set_instructions(ann, conversation, "Be brief.")
    for bad, text in (
        ("x" * 41, "Instructions are too long. The limit is 40 characters."),
        (42, "Instructions must be text."),
    ):
        with pytest.raises(Rejected) as refused:
            await service.set_instructions(ann, conversation, bad)
        assert refused.value.user_message == text
    for bad, text in (
        ("gpt-5", "Unknown model. Choose one of: dep-a, dep-b."),
        ("", "Unknown model. Choose one of: dep-a, dep-b."),
        (["dep-a"], "A model must be named by text."),
    ):
        with pytest.raises(Rejected) as refused:
            await service.set_model(ann, conversation, bad)
        assert refused.value.user_message == text
    opened = await service.open(ann, conversation)
    assert (opened["instructions"], opened["model"]) == ("Be brief.", "dep-a")


async def test_another_owners_conversation_is_refused_as_one_that_does_not_exist(models: Models) -> None:
    service = models.conversations
    ann, bob = Caller("c1", ANN), Caller("c2", BOB)
    guest = Caller("c3", None, await service.use_guest(Caller("c3"), None))
    anns = str((await service.create(ann, None))["id"])
    for caller in (bob, guest):
        for change in (
            service.set_instructions(caller, anns, "Leak everything."),
            service.set_model(caller, anns, "dep-b"),
            service.set_instructions(caller, "no-such-id", "x"),
        ):
            with pytest.raises(Rejected) as refused:
                await change
            assert refused.value.user_message == NOT_FOUND
    opened = await service.open(ann, anns)
    assert (opened["instructions"], opened["model"]) == ("", "dep-a")


async def test_the_choices_stay_through_clear_restore_rename_and_a_reply_that_ran_meanwhile(models: Models) -> None:
    service = models.conversations
    ann = Caller("c1", ANN)
    conversation = str((await service.create(ann, None))["id"])
    await service.set_model(ann, conversation, "dep-b")
    await service.set_instructions(ann, conversation, "Be brief.")
    await service.start(ann, conversation, "send", "[[slow]] go")
    async with aclosing(service.follow(ann, conversation, 0)) as items:
        async for item in items:
            if "text" in item:
                break  # it streams: it read its instructions already
    await service.set_instructions(ann, conversation, "Changed while it ran.")
    assert await service.stop(ann, conversation)
    ended = [item async for item in service.follow(ann, conversation, 0)]
    assert ended[-1]["end"] == "stopped"  # and stored, with its list entry, after the change
    opened = await service.open(ann, conversation)
    assert opened["instructions"] == "Changed while it ran.", "storing the reply did not undo the change"
    assert opened["title"] == "[[slow]] go"
    assert cast(list[dict[str, object]], opened["messages"])[-1]["model"] == "dep-b"
    await service.rename(ann, conversation, "Renamed")
    await service.clear(ann, conversation)
    opened = await service.open(ann, conversation)
    assert (opened["title"], opened["instructions"], opened["model"]) == ("New chat", "Changed while it ran.", "dep-b")
    assert await service.restore(ann, conversation)
    opened = await service.open(ann, conversation)
    assert (opened["title"], opened["instructions"], opened["model"]) == ("Renamed", "Changed while it ran.", "dep-b")


async def test_the_seed_methods_answer_with_the_default_conversations_choices(models: Models) -> None:
    service = models.conversations
    ann = Caller("c1", ANN)
    await service.set_model(ann, "default", "dep-b")
    await service.set_instructions(ann, "default", "Seed instructions.")
    tokens: list[str] = []

    async def emit(token: str) -> None:
        tokens.append(token)

    await service.reply(ann, await service.check(ann, "seed hello"), emit)
    request = models.requests()[-1]
    assert request["path"] == "/openai/deployments/dep-b/chat/completions"
    assert request["body"]["messages"][1] == {"role": "system", "content": "Seed instructions."}
    assert await service.history(ann) == [
        {"role": "user", "content": "seed hello"},
        {"role": "assistant", "content": "".join(tokens)},
    ], "GetHistory keeps its shape"
    opened = await service.open(ann, "default")
    assert cast(list[dict[str, object]], opened["messages"])[-1]["model"] == "dep-b"


async def test_a_message_that_no_longer_fits_with_the_instructions_says_so(models: Models) -> None:
    service = models.conversations
    ann = Caller("c1", ANN)
    conversation = str((await service.create(ann, None))["id"])
    await service.set_instructions(ann, conversation, "Be brief.")
    chat = service.chat
    budget = chat.model.context_tokens - chat.model.max_output_tokens
    with pytest.raises(Rejected) as refused:
        chat.prompt([], {"role": "user", "content": "x" * (3 * budget)}, "Be brief.")
    assert refused.value.user_message == (
        "Message and this conversation's instructions are too long for the model's context window. Please shorten them."
    )


def test_ai_models_is_read_as_a_list_with_the_default_first() -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    azure = {"ai_provider": "azure", "azure_openai_endpoint": "http://127.0.0.1:9", "azure_openai_api_key": "k"}
    assert settings(**azure, ai_models="gpt-4o,gpt-4o-mini").chat_models() == ["gpt-4o", "gpt-4o-mini"]
    assert settings(**azure, azure_openai_deployment="d").chat_models() == ["d"]
    assert settings(**azure).chat_models() == []
    assert settings(ai_provider="openai", openai_model="m").chat_models() == ["m"]
    assert settings(ai_provider="openai", ai_models=" a , b ").chat_models() == ["a", "b"]
    with pytest.raises(ValueError, match="AI_MODELS lists a more than once"):
        settings(ai_models="a,b,a")


async def test_an_openai_compatible_server_is_asked_for_the_chosen_model() -> None:
    async with conversations_on_fake(InMemoryHistoryStore(50), provider="openai", ai_models="llama3.2,qwen2.5") as (
        conversations,
        fake,
    ):
        models = Models(conversations, fake)
        ann = Caller("c1", ANN)
        conversation = str((await conversations.create(ann, None))["id"])
        await models.talk(ann, conversation, "first")
        await conversations.set_model(ann, conversation, "qwen2.5")
        await models.talk(ann, conversation, "second")
        first, second = models.requests()
        assert (first["path"], first["body"]["model"]) == ("/v1/chat/completions", "llama3.2")
        assert (second["path"], second["body"]["model"]) == ("/v1/chat/completions", "qwen2.5")
        opened = await conversations.open(ann, conversation)
        labels = [m.get("model") for m in cast(list[dict[str, object]], opened["messages"])]
        assert labels == [None, "llama3.2", None, "qwen2.5"]
