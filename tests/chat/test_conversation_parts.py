"""The parts of conversations, in process: the stores (every one runs the same behaviour
tests, Redis against a real redis-server), guest ids, titles, and a reply's numbered chunks
followed from any point."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import ConversationService, derive_title
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import ConversationInfo, HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies, ReplyRun
from signalr_chat.chat.service import Backends, Caller, ChatService, Limits
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.support.redis_server import RedisServer


def turns(n: int) -> list[ChatMessage]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        memory = InMemoryHistoryStore(keep=4)
        yield memory
        await memory.close()
        return
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = RedisHistoryStore(server.url, keep=4)
        yield redis
        await redis.close()
        return
    sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=4)
    await sqlite.open()
    yield sqlite
    await sqlite.close()


async def test_append_keeps_the_last_messages_in_order(store: HistoryStore) -> None:
    await store.append("user:ann", turns(2))
    await store.append("user:ann", turns(6)[2:])
    await store.append("user:bob", [{"role": "user", "content": 'ünïcödé ✓ "quoted", [1, 2]'}])
    assert await store.load("user:ann") == turns(6)[-4:]
    assert await store.load("user:bob") == [{"role": "user", "content": 'ünïcödé ✓ "quoted", [1, 2]'}]
    assert await store.load("user:nobody") == []
    await store.clear("user:ann")
    assert await store.load("user:ann") == []
    assert await store.load("user:bob") != []


async def test_conversation_lists_are_per_owner_newest_first(store: HistoryStore) -> None:
    await store.save_conversation("user:a", ConversationInfo("c1", "One", 1.0, 1.0))
    await store.save_conversation("user:a", ConversationInfo("c2", "Two", 2.0, 2.0))
    await store.save_conversation("user:b", ConversationInfo("c1", "Bob's", 3.0, 3.0))
    assert [c.id for c in await store.conversations("user:a")] == ["c2", "c1"]
    await store.save_conversation("user:a", ConversationInfo("c1", "One, renamed", 1.0, 5.0))
    assert await store.conversations("user:a") == [
        ConversationInfo("c1", "One, renamed", 1.0, 5.0),
        ConversationInfo("c2", "Two", 2.0, 2.0),
    ]
    await store.forget_conversation("user:a", "c1")
    assert [c.id for c in await store.conversations("user:a")] == ["c2"]
    assert [c.title for c in await store.conversations("user:b")] == ["Bob's"]
    # a title may hold anything; times keep every digit
    now = 1_765_000_000.123456
    await store.save_conversation("user:a", ConversationInfo("c3", 'Commas, [brackets] and "quotes" ✓', now, now))
    await store.save_conversation("user:a", ConversationInfo("c3", "Renamed, again", now + 5, now + 7.25))
    assert (await store.conversations("user:a"))[0] == ConversationInfo("c3", "Renamed, again", now, now + 7.25)


async def test_replace_rewrites_and_trims(store: HistoryStore) -> None:
    await store.append("k", turns(4))
    await store.replace("k", turns(2))
    assert await store.load("k") == turns(2)
    await store.replace("k", turns(6))
    assert await store.load("k") == turns(6)[-4:]


async def test_a_cut_mark_is_stored_with_its_reply_and_goes_when_it_is_rewritten(store: HistoryStore) -> None:
    question: ChatMessage = {"role": "user", "content": "q"}
    cut: ChatMessage = {"role": "assistant", "content": "half", "cut": "length"}
    await store.append("k", [question, cut])
    assert await store.load("k") == [question, cut]
    whole: ChatMessage = {"role": "assistant", "content": "half and the rest"}
    await store.replace("k", [question, whole])
    assert await store.load("k") == [question, whole]


async def test_an_sqlite_file_from_before_cut_marks_keeps_its_messages_and_takes_marks(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL,"
            " role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL);"
            "INSERT INTO messages (conversation, role, content, created) VALUES ('k', 'user', 'old', 0);"
        )
        db.commit()
    store = SqliteHistoryStore(path, keep=4)
    await store.open()
    try:
        assert await store.load("k") == [{"role": "user", "content": "old"}]
        await store.append("k", [{"role": "assistant", "content": "half", "cut": "length"}])
        assert (await store.load("k"))[-1] == {"role": "assistant", "content": "half", "cut": "length"}
    finally:
        await store.close()


async def test_guest_ids_are_issued_kept_and_expire() -> None:
    now = [0.0]
    guests = GuestSessions(ttl=100, clock=lambda: now[0])
    guest = await guests.use(None)
    assert len(guest) == 32
    assert await guests.use(guest) == guest
    assert await guests.use("x" * 32) != "x" * 32, "an id the server never issued is not taken"
    assert await guests.use(12345) not in (guest, 12345)
    now[0] = 90
    guests.touch(guest)
    now[0] = 150  # 60 s after the touch: alive
    assert await guests.use(guest) == guest
    now[0] = 300
    assert guest in await guests.expired()
    assert await guests.use(guest) != guest


def test_titles_come_from_the_first_line() -> None:
    assert derive_title("  How do I\nsort a list?") == "How do I"
    long = "word " * 30
    title = derive_title(long)
    assert title.endswith("…") and len(title) <= 61 and " wor…" not in title
    assert derive_title("   ") == "New chat"


async def test_a_reply_is_followed_from_any_chunk_without_gap_or_duplicate() -> None:
    run = ReplyRun("c", "question", continues=False)
    for text in ("a", "b", "c"):
        await run.append(text)

    async def collect(after: int) -> list[dict[str, object]]:
        return [item async for item in run.follow(after)]

    late = asyncio.create_task(collect(1))
    early = asyncio.create_task(collect(0))
    await asyncio.sleep(0)  # both have replayed what there was and wait for more
    await run.append("d")
    await run.append("e")
    run.finish("stopped")
    for task, first in ((early, 1), (late, 2)):
        items = await task
        chunks = [i for i in items if "text" in i]
        assert [i["sequence"] for i in chunks] == list(range(first, 6))
        assert "".join(str(i["text"]) for i in chunks) == "abcde"[first - 1 :]
        assert items[-1] == {"sequence": 5, "end": "stopped", "replyId": run.id}
    assert await collect(5) == [{"sequence": 5, "end": "stopped", "replyId": run.id}]


async def test_a_withdrawn_reply_is_replayed_as_its_end_alone() -> None:
    run = ReplyRun("c", "question", continues=False)
    live = run.follow(0)
    await run.append("bad")
    assert await anext(live) == {"sequence": 1, "text": "bad"}
    run.finish("error", "policy", withdrawn=True)
    end = {"end": "error", "replyId": run.id, "error": "policy", "withdrawn": True}
    assert [item async for item in live] == [{"sequence": 1, **end}]
    assert [item async for item in run.follow(0)] == [{"sequence": 0, **end}]
    assert run.describe()["sequence"] == 0


class _NoModel:
    """Conversations are listed, created and forgotten without ever asking a model."""

    name = "fake:none"
    models = ("none",)
    context_tokens = 4096
    max_output_tokens = 256


async def test_an_expired_guest_is_forgotten_with_their_conversations() -> None:
    settings = Settings(guest_ttl_seconds=100)
    anonymous = InMemoryHistoryStore(keep=10)
    chat = ChatService(cast(Any, _NoModel()), Limits.from_settings(settings), settings.system_prompt)
    limits, replies = InMemoryRateLimits(RateLimiter(5, 10)), LocalReplies()
    now = [0.0]
    conversations = ConversationService(
        chat,
        signed_in=Backends(InMemoryHistoryStore(10), limits, replies),
        anonymous=Backends(anonymous, limits, replies),
        guests=GuestSessions(ttl=100, clock=lambda: now[0]),
    )
    guests: dict[str, str] = {}

    def connection(name: str) -> Caller:
        return Caller(name, None, guests.get(name))

    async def use_guest(name: str, guest_id: str | None) -> str | None:
        guest = await conversations.use_guest(connection(name), guest_id)  # the hub keeps it for the connection
        if guest is not None:
            guests[name] = guest
        return guest

    guest = await use_guest("c1", None)
    first = connection("c1")
    created = await conversations.create(first, "Kept for a while")
    await anonymous.append(f"guest:{guest}/{created['id']}", turns(2))
    await anonymous.append(f"guest:{guest}", turns(2))  # the default conversation
    now[0] = 50
    assert await use_guest("c2", guest) == guest
    assert [c["id"] for c in await conversations.list(connection("c2"))] == [created["id"], "default"]

    now[0] = 500  # unseen for longer than the TTL: the next visitor's call sweeps it
    await use_guest("c3", None)
    assert await anonymous.conversations(f"guest:{guest}") == []
    assert await anonymous.load(f"guest:{guest}/{created['id']}") == []
    assert await anonymous.load(f"guest:{guest}") == []
    assert await use_guest("c4", guest) != guest
    assert await conversations.list(connection("c4")) == []
    await conversations.close()
