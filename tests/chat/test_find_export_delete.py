"""Issue 23: search across one's own conversations, export, and "delete all my data", in process
on every store (memory, SQLite, a real Redis), with two users and two guests: nobody finds,
exports or deletes anything of anybody else. What is left after a delete is read from the
SQLite file and from Redis directly, not through the store that deleted it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from redis import Redis

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import (
    BAD_PAGE,
    BAD_PAGE_SIZE,
    BAD_QUERY,
    DEFAULT,
    MAX_PAGE_SIZE,
    MAX_QUERY_LENGTH,
    NOT_FOUND,
    ConversationService,
)
from signalr_chat.chat.export import BAD_FORMAT, JSON_FORMAT, file_name
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import ConversationInfo, HistoryStore, InMemoryHistoryStore, conversation_key
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_guests import SharedGuestSessions
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies, ReplySharing
from signalr_chat.chat.service import Backends, Caller, ChatService, Limits, Rejected
from signalr_chat.chat.shared_replies import SharedReplies
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.support.callers import Callers
from tests.support.conditions import until
from tests.support.redis_server import RedisServer


class GatedModel:
    """Answers "re: " and the last message at once; a message holding "[[hold]]" gets one token
    and then waits for ever (until the reply is stopped)."""

    name = "fake:gated"
    models = ("gated",)
    context_tokens = 100_000
    max_output_tokens = 256

    def __init__(self) -> None:
        self.holding = asyncio.Event()

    def count_tokens(self, text: str) -> int:
        return len(text) // 3 + 1

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str]:
        yield "re: "
        if "[[hold]]" in messages[-1]["content"]:
            self.holding.set()
            await asyncio.Event().wait()
        yield messages[-1]["content"]


@dataclass
class Chat(Callers):
    service: ConversationService
    model: GatedModel
    kind: str
    sqlite_file: Path | None
    redis_url: str | None

    def __post_init__(self) -> None:
        Callers.__init__(self, self.service)

    async def conversation(self, caller: Caller, title: str | None, *messages: str) -> str:
        created = str((await self.service.create(caller, title))["id"])
        for message in messages:
            await self.talk(caller, created, message)
        return created

    def redis_keys(self) -> list[str]:
        assert self.redis_url is not None
        with Redis.from_url(self.redis_url) as redis:
            return sorted(key.decode() for key in redis.scan_iter(count=1000))

    def sqlite_rows(self) -> tuple[list[str], list[str]]:
        """The conversation keys with messages and the owners with list entries, in the file."""
        assert self.sqlite_file is not None
        with sqlite3.connect(self.sqlite_file) as db:
            messages = [row[0] for row in db.execute("SELECT DISTINCT conversation FROM messages")]
            owners = [row[0] for row in db.execute("SELECT DISTINCT owner FROM conversations")]
        return sorted(messages), sorted(owners)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def chat(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Chat]:
    settings = Settings(rate_limit_messages=0)
    model = GatedModel()
    chat_service = ChatService(cast(Any, model), Limits.from_settings(settings), settings.system_prompt)
    limits = InMemoryRateLimits(RateLimiter(0, 60))
    closes: list[Any] = []
    users: HistoryStore
    guests_store: HistoryStore
    replies: ReplySharing
    guests: Any
    sqlite_file, redis_url = None, None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
        users = RedisHistoryStore(server.url, keep=50)
        guests_store = RedisHistoryStore(server.url, keep=50, ttl=600)
        replies = SharedReplies(server.url)
        guests = SharedGuestSessions(server.url, 600)
        closes += [users, guests_store, replies, guests]
    else:
        if request.param == "sqlite":
            sqlite_file = tmp_path / "h.sqlite3"
            sqlite = SqliteHistoryStore(sqlite_file, keep=50)
            await sqlite.open()
            users = sqlite
        else:
            users = InMemoryHistoryStore(50)
        guests_store = InMemoryHistoryStore(50)
        replies = LocalReplies()
        guests = GuestSessions(600)
        closes += [users, guests_store]
    service = ConversationService(
        chat_service,
        signed_in=Backends(users, limits, replies),
        anonymous=Backends(guests_store, limits, replies),
        guests=guests,
    )
    await service.start_sharing()
    yield Chat(service, model, request.param, sqlite_file, redis_url)
    await service.close()
    for part in closes:
        await part.close()


async def _ignore(token: str) -> None:
    return None


async def refusal(work: Any) -> str:
    with pytest.raises(Rejected) as refused:
        await work
    return refused.value.user_message


def found(result: dict[str, object]) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], result["results"])


# -- search ------------------------------------------------------------------------------------


async def test_search_finds_only_the_callers_own_conversations(chat: Chat) -> None:
    service = chat.service
    owners = [chat.user("alice"), chat.user("bob"), await chat.guest(), await chat.guest()]
    mine: list[set[str]] = []
    for n, owner in enumerate(owners):
        talked = await chat.conversation(owner, None, f"the zebra of owner {n}", f"Über ünï of {n}")
        titled = await chat.conversation(owner, f"Zebra crossing {n}")  # only its title matches
        await chat.conversation(owner, None, f"nothing to see {n}")
        await service.reply(owner, f"default zebra {n}", _ignore)  # the seed's history is searched too
        mine.append({talked, titled, DEFAULT})

    for n, owner in enumerate(owners):
        results = found(await service.search(owner, "ZEBRA", 1, MAX_PAGE_SIZE))
        assert {r["id"] for r in results} == mine[n], f"owner {n}"
        for result in results:
            assert result["snippet"][result["match"][0] : result["match"][1]].lower() == "zebra"
            assert f"{n}" in result["snippet"]
        by_where = {r["in"] for r in results}
        assert by_where == {"user", "title"}, by_where
        assert {r["title"] for r in results if r["in"] == "title"} == {f"Zebra crossing {n}"}
        # case-insensitive beyond ASCII, and only their own
        accented = found(await service.search(owner, "üBER ÜNÏ", 1, 10))
        assert [r["snippet"] for r in accented] == [f"Über ünï of {n}"]
        assert found(await service.search(owner, "owner", 1, 10))[0]["snippet"] == f"the zebra of owner {n}"
        assert found(await service.search(owner, f"of owner {(n + 1) % 4}", 1, 10)) == []


async def test_search_is_paged_newest_first_with_snippets_around_the_match(chat: Chat) -> None:
    service = chat.service
    alice = chat.user("alice")
    ids = [await chat.conversation(alice, None, f"needle number {n}") for n in range(5)]
    pages = [await service.search(alice, "needle", page, 2) for page in (1, 2, 3, 4)]
    assert [[r["id"] for r in found(p)] for p in pages] == [ids[4:2:-1], ids[2:0:-1], ids[:1], []]
    assert [p["more"] for p in pages] == [True, True, False, False]
    # a long message: a short piece around the match, cut with "…"
    long = "alpha " * 40 + "the NEEDLE here " + "omega " * 40
    await chat.conversation(alice, None, long)
    result = found(await service.search(alice, "needle here", 1, 1))[0]
    snippet, (start, end) = result["snippet"], result["match"]
    assert snippet.startswith("…") and snippet.endswith("…") and len(snippet) <= 130, snippet
    assert snippet[start:end] == "NEEDLE here"
    # the query is plain text, never a pattern (no regular expression, no LIKE wildcard)
    await chat.conversation(alice, None, "50% off_sale and a.c")
    for query, hits in (("a.c", 1), ("abc", 0), ("%", 1), ("0% o", 1), ("_", 1), ("f_s", 1), ("x%", 0), ("[a", 0)):
        assert len(found(await service.search(alice, query, 1, 10))) == hits, query


async def test_search_bounds_its_query_and_page_with_clear_errors(chat: Chat) -> None:
    service, alice = chat.service, chat.user("alice")
    for query in (None, 5, "", "   ", "x" * (MAX_QUERY_LENGTH + 1), ["x"]):
        assert await refusal(service.search(alice, query, 1, 10)) == BAD_QUERY
    assert (await service.search(alice, "x" * MAX_QUERY_LENGTH, 1, 10))["results"] == []
    for page in (0, -1, 1.5, "1", None, True):
        assert await refusal(service.search(alice, "x", page, 10)) == BAD_PAGE
    for size in (0, MAX_PAGE_SIZE + 1, 2.0, None, False):
        assert await refusal(service.search(alice, "x", 1, size)) == BAD_PAGE_SIZE


# -- export ------------------------------------------------------------------------------------


async def test_export_as_markdown_and_json_round_trips_the_stored_conversation(chat: Chat) -> None:
    service, alice = chat.service, chat.user("alice")
    conversation = await chat.conversation(alice, None, "How do I sort a list?", "And **reverse** it?")
    await service.rename(alice, conversation, "Sorting: lists / tuples")
    stored = await service.open(alice, conversation)

    exported = await service.export(alice, conversation, "json")
    assert exported["fileName"] == "sorting-lists-tuples.json"
    assert exported["mediaType"] == "application/json"
    document = json.loads(exported["text"])
    assert document["format"] == JSON_FORMAT
    assert document["title"] == "Sorting: lists / tuples"
    assert document["id"] == conversation
    assert document["messages"] == stored["messages"]
    assert [m["role"] for m in document["messages"]] == ["user", "assistant", "user", "assistant"]
    for field in ("created", "updated", "exported"):
        assert document[field].endswith("Z") and len(document[field]) == 20, document[field]

    markdown = await service.export(alice, conversation, "markdown")
    assert markdown["fileName"] == "sorting-lists-tuples.md"
    assert markdown["mediaType"] == "text/markdown"
    text = markdown["text"]
    assert text.startswith("# Sorting: lists / tuples\n")
    sections = text.split("\n## ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == ["You", "Assistant", "You", "Assistant"]
    assert sections[2].split("\n\n", 1)[1].strip() == "And **reverse** it?"
    assert sections[3].split("\n\n", 1)[1].strip() == "re: And **reverse** it?"

    # the seed's history, never listed, has no times: they are left out, not invented
    await service.reply(alice, "seed question", _ignore)
    seed = json.loads((await service.export(alice, DEFAULT, "json"))["text"])
    assert (seed["title"], seed["created"], seed["updated"]) == ("seed question", None, None)
    assert (await service.export(alice, DEFAULT, "markdown"))["fileName"] == "seed-question.md"


async def test_export_refuses_a_bad_format_and_anybody_elses_conversation(chat: Chat) -> None:
    service = chat.service
    owners = [chat.user("alice"), chat.user("bob"), await chat.guest(), await chat.guest()]
    ids = [await chat.conversation(owner, f"secret {n}", f"secret text {n}") for n, owner in enumerate(owners)]
    for n, intruder in enumerate(owners):
        unknown = await refusal(service.export(intruder, "0123456789abcdef", "json"))
        assert unknown == NOT_FOUND
        for m, other in enumerate(ids):
            if m != n:
                assert await refusal(service.export(intruder, other, "markdown")) == unknown
    for form in ("pdf", "", None, 1, "JSON"):
        assert await refusal(service.export(owners[0], ids[0], form)) == BAD_FORMAT


def test_file_names_are_safe_and_never_empty() -> None:
    assert file_name("How do I sort a list?", "markdown") == "how-do-i-sort-a-list.md"
    assert file_name('../..\\etc/passwd: "x" <y> | z*', "json") == "etc-passwd-x-y-z.json"
    assert file_name("Ünïcödé ✓ title", "json") == "ünïcödé-title.json"
    assert file_name("?!…", "markdown") == "conversation.md"
    assert len(file_name("word " * 40, "json")) <= 60 + len(".json")


# -- delete all my data --------------------------------------------------------------------------


async def test_delete_all_my_data_leaves_nothing_of_the_user_and_all_of_the_others(chat: Chat) -> None:
    service = chat.service
    alice, bob = chat.user("alice"), chat.user("bob")
    guests = [await chat.guest(), await chat.guest()]
    others = [bob, *guests]
    kept = {}
    for n, owner in enumerate([alice, *others]):
        await service.reply(owner, f"default of {n}", _ignore)
        first = await chat.conversation(owner, None, f"first of {n}")
        await chat.conversation(owner, None, f"second of {n}")
        kept[owner] = (await service.list(owner), await service.open(owner, first), await service.history(owner))
    # what an instance keeps: a reply's chunks (60 s) and a clear's undo; and a reply running
    await chat.talk(alice, DEFAULT, "followable of alice")
    await service.clear(alice, DEFAULT)
    cleared = await chat.conversation(alice, None, "cleared of alice")
    await service.clear(alice, cleared)
    running = str((await service.create(alice, None))["id"])
    await service.start(alice, running, "send", "[[hold]] running of alice")
    await until(chat.model.holding.is_set, "the reply is streaming")

    await service.delete_all(alice)

    assert await service.list(alice) == []
    assert await service.history(alice) == []
    assert (await service.open(alice, DEFAULT))["messages"] == []
    assert [item async for item in service.follow(alice, DEFAULT, 0)] == [], "no chunk is replayed"
    assert not await service.restore(alice, DEFAULT), "nothing to undo"
    assert await service.history(alice) == []
    for gone in (running, cleared):
        assert await refusal(service.open(alice, gone)) == NOT_FOUND
    assert found(await service.search(alice, "alice", 1, 10)) == []
    for owner in others:  # untouched
        listed, opened, history = kept[owner]
        assert await service.list(owner) == listed
        assert await service.open(owner, str(opened["id"])) == opened
        assert await service.history(owner) == history

    if chat.sqlite_file is not None:
        messages, owners = chat.sqlite_rows()
        assert not [key for key in messages if "alice" in key], messages
        assert owners == ["user:bob"]  # the guests are in memory
        assert any(key.startswith("user:bob") for key in messages)
    if chat.redis_url is not None:
        keys = chat.redis_keys()
        assert not [key for key in keys if "user:alice" in key], keys
        assert [key for key in keys if "user:bob" in key]


async def test_a_guest_who_deletes_their_data_is_forgotten_too(chat: Chat) -> None:
    service = chat.service
    guest, other = await chat.guest(), await chat.guest()
    assert guest.guest is not None and other.guest is not None
    for owner in (guest, other):
        await chat.conversation(owner, None, f"mine, {owner.guest}")
        await service.reply(owner, f"default, {owner.guest}", _ignore)
    before = await service.list(other)

    await service.delete_all(guest)

    assert await service.use_guest(Caller("c-new"), guest.guest) != guest.guest, "the id is not taken back"
    assert await service.use_guest(Caller("c-other"), other.guest) == other.guest
    assert await service.list(guest) == [] and await service.history(guest) == []
    assert await service.list(other) == before
    if chat.redis_url is not None:
        keys = chat.redis_keys()
        assert not [key for key in keys if guest.guest in key], keys
        assert [key for key in keys if other.guest in key]


async def test_deleting_all_twice_or_with_nothing_stored_is_fine(chat: Chat) -> None:
    service, carol = chat.service, chat.user("carol")
    await service.delete_all(carol)
    await chat.conversation(carol, None, "hello")
    await service.delete_all(carol)
    await service.delete_all(carol)
    assert await service.list(carol) == []
    await chat.conversation(carol, None, "a fresh start")  # the user goes on as new
    assert [c["title"] for c in await service.list(carol)] == ["a fresh start"]


# -- the store methods, on owners whose ids hold what a key or a pattern treats specially -----------

#: Owners next to each other in key order, or spelling another's key, or a SCAN pattern's specials.
OWNERS = [
    "user:a",
    "user:ab",
    "user:a0",
    "user:a/b",
    "user:a%2Fb",
    "user:",
    "user:*",
    "user:a?",
    "user:[ab]",
    "user:\\",
    "guest:" + "g" * 32,
]
IDS = [DEFAULT, "c1", "x/y", "%", ""]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    made: HistoryStore
    if request.param == "memory":
        made = InMemoryHistoryStore(keep=10)
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        made = RedisHistoryStore(server.url, keep=10)
    else:
        sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=10)
        await sqlite.open()
        made = sqlite
    yield made
    await made.close()


def said(owner: str, conversation: str) -> ChatMessage:
    return {"role": "user", "content": f"said by {owner} in {conversation}"}


async def test_drop_owner_deletes_one_owners_conversations_and_nobody_elses(store: HistoryStore) -> None:
    for owner in OWNERS:
        for conversation in IDS:
            listed = (owner, ConversationInfo(conversation, f"{owner} {conversation}", 1.0, 2.0))
            await store.append(conversation_key(owner, conversation), [said(owner, conversation)], listed)
    for n, owner in enumerate(OWNERS):
        await store.drop_owner(owner)
        for m, other in enumerate(OWNERS):
            gone = m <= n
            assert (await store.conversations(other) == []) == gone, f"dropping {owner!r}: the list of {other!r}"
            for conversation in IDS:
                held = await store.load(conversation_key(other, conversation))
                assert held == ([] if gone else [said(other, conversation)]), f"dropping {owner!r}: {other!r}"


async def test_search_reads_only_the_keys_it_is_given(store: HistoryStore) -> None:
    for owner in OWNERS:
        for conversation in IDS:
            await store.append(conversation_key(owner, conversation), [said(owner, conversation)])
    mine = [conversation_key("user:a", conversation) for conversation in IDS]
    found = await store.search(mine, "SAID BY")
    assert found == {key: said("user:a", conversation) for key, conversation in zip(mine, IDS, strict=True)}
    assert await store.search(mine, "said by user:ab") == {}
    assert await store.search([], "said") == {}
