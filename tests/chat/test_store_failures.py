"""Issue 22: the history store failing (an SQLite file that is full, simulated with SQLite's
own `max_page_count`; one that is not writable, with its `query_only`, since root writes any
file whatever its mode; a write refused halfway; Redis unreachable). The user gets the clear
text, the turn is not half-stored, other users are served, /readyz's check names the
problem, and the log has one line per failure, without a traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import DEFAULT, ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import HistoryStore, HistoryUnavailable, InMemoryHistoryStore
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies
from signalr_chat.chat.service import Backends, Caller, ChatService, Limits
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.chat.test_isolation import EchoModel
from tests.support.redis_server import RedisServer

ALICE, BOB = Caller("c-alice", "alice"), Caller("c-bob")  # bob is anonymous: another store


def service(store: HistoryStore) -> ConversationService:
    settings = Settings(rate_limit_messages=0, max_message_length=200_000)
    chat = ChatService(cast(Any, EchoModel()), Limits.from_settings(settings), settings.system_prompt)
    limits, replies = InMemoryRateLimits(RateLimiter(0, 60)), LocalReplies()
    return ConversationService(
        chat,
        signed_in=Backends(store, limits, replies),
        anonymous=Backends(InMemoryHistoryStore(50), limits, replies),
        guests=GuestSessions(600),
    )


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    store = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=50)
    await store.open()
    yield store
    await store.close()


async def ignore(token: str) -> None:
    return None


async def contents(conversations: ConversationService, caller: Caller, conversation: str = DEFAULT) -> list[str]:
    opened = await conversations.open(caller, conversation)
    return [str(m["content"]) for m in cast(list[dict[str, object]], opened["messages"])]


async def _full(db: Any) -> None:
    (pages,) = await (await db.execute("PRAGMA page_count")).fetchone()
    await db.execute(f"PRAGMA max_page_count = {pages}")  # no page more


async def _read_only(db: Any) -> None:
    await db.execute("PRAGMA query_only = ON")  # SQLite's own read-only mode: SQLITE_READONLY


REFUSALS = {
    # how the file refuses, what /readyz's problem says, how it takes writes again
    "full": (_full, "full", "PRAGMA max_page_count = 1000000"),
    "read-only": (_read_only, "readonly", "PRAGMA query_only = OFF"),
}


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_sqlite_file_that_refuses_writes_refuses_the_turn_whole_and_says_so(
    sqlite: SqliteHistoryStore, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    refuse, named, restore = REFUSALS[refusal]
    conversations = service(sqlite)
    await conversations.reply(ALICE, "kept", ignore)
    created = str((await conversations.create(ALICE, "second"))["id"])
    await refuse(sqlite.db)
    big = "x" * 100_000

    with pytest.raises(HistoryUnavailable) as refused:
        await conversations.reply(ALICE, big, ignore)
    assert refused.value.user_message.startswith("Your conversations are unavailable right now")
    assert await contents(conversations, ALICE) == ["kept", "re: kept"], "nothing of the turn is stored"
    problem = conversations.history_problem()
    assert problem is not None and named in problem, problem

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await conversations.start(ALICE, created, "send", big)
        items = [item async for item in conversations.follow(ALICE, created, 0)]
    assert items[-1]["end"] == "error" and items[-1]["error"] == HistoryUnavailable.user_message
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
    assert await contents(conversations, ALICE, created) == []

    assert await conversations.reply(BOB, "still served", ignore) == "re: still served"

    await sqlite.db.execute(restore)
    await conversations.reply(ALICE, "writable again", ignore)
    assert conversations.history_problem() is None
    assert await contents(conversations, ALICE) == ["kept", "re: kept", "writable again", "re: writable again"]
    await conversations.close()


async def test_a_write_refused_halfway_leaves_the_conversation_as_it_was(sqlite: SqliteHistoryStore) -> None:
    """The list entry is written after the messages: when that part fails, the messages are
    rolled back with it (a delete, a clear, an edit, a regenerate: before, never between)."""
    conversations = service(sqlite)
    created = str((await conversations.create(ALICE, "mine"))["id"])
    await conversations.start(ALICE, created, "send", "first")
    [_ async for _ in conversations.follow(ALICE, created, 0)]
    before = await contents(conversations, ALICE, created)
    listed = await conversations.list(ALICE)
    for refused in ("DELETE", "INSERT", "UPDATE"):  # the messages' part of each write succeeds, the list's fails
        await sqlite.db.execute(
            f"CREATE TRIGGER refuse_{refused} BEFORE {refused} ON conversations "
            "BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
    await sqlite.db.commit()

    async def edit() -> None:
        await conversations.start(ALICE, created, "edit", "changed", 0)
        await _drain(conversations.follow(ALICE, created, 0))

    async def regenerate() -> None:
        await conversations.start(ALICE, created, "regenerate")
        await _drain(conversations.follow(ALICE, created, 0))

    async def delete() -> None:
        await conversations.delete(ALICE, created)

    async def clear() -> None:
        await conversations.clear(ALICE, created)

    for attempt in (delete, clear, edit, regenerate):
        with pytest.raises(HistoryUnavailable):
            await attempt()
        assert await contents(conversations, ALICE, created) == before, attempt.__name__
        assert [c["title"] for c in await conversations.list(ALICE)] == [c["title"] for c in listed]
    await conversations.close()


async def _drain(items: AsyncIterator[dict[str, object]]) -> None:
    """Follows a reply to its end; a reply that could not be stored raises, as a call would."""
    async for item in items:
        if item.get("error") == HistoryUnavailable.user_message:
            raise HistoryUnavailable(item["error"])


async def test_redis_history_unreachable_is_a_clear_error_and_a_readiness_problem(
    redis_server: RedisServer,
) -> None:
    store = RedisHistoryStore(redis_server.url, keep=50, timeout=1.0)
    conversations = service(store)
    await conversations.reply(ALICE, "kept", ignore)
    redis_server.stop()
    with pytest.raises(HistoryUnavailable):
        await conversations.reply(ALICE, "lost", ignore)
    assert conversations.history_problem() is not None
    assert await conversations.reply(BOB, "still served", ignore) == "re: still served"
    redis_server.start()
    await conversations.reply(ALICE, "back", ignore)
    assert conversations.history_problem() is None
    await conversations.close()
    await store.close()
