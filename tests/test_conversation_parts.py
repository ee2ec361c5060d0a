"""The parts of conversations, in process: the stores' conversation lists, guest ids, titles,
and a reply's numbered chunks followed from any point."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signalr_chat.ai import ChatMessage
from signalr_chat.chat.conversations import derive_title
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import ConversationInfo, HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.replies import ReplyRun
from signalr_chat.chat.sqlite_history import SqliteHistoryStore


def turns(n: int) -> list[ChatMessage]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    if request.param == "memory":
        memory = InMemoryHistoryStore(keep=4)
        yield memory
        await memory.close()
        return
    sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=4)
    await sqlite.open()
    yield sqlite
    await sqlite.close()


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


async def test_replace_rewrites_and_trims(store: HistoryStore) -> None:
    await store.append("k", turns(4))
    await store.replace("k", turns(2))
    assert await store.load("k") == turns(2)
    await store.replace("k", turns(6))
    assert await store.load("k") == turns(6)[-4:]


def test_guest_ids_are_issued_kept_and_expire() -> None:
    now = [0.0]
    guests = GuestSessions(ttl=100, clock=lambda: now[0])
    guest = guests.use(None)
    assert len(guest) == 32
    assert guests.use(guest) == guest
    assert guests.use("x" * 32) != "x" * 32, "an id the server never issued is not taken"
    assert guests.use(12345) not in (guest, 12345)
    now[0] = 90
    guests.touch(guest)
    now[0] = 150  # 60 s after the touch: alive
    assert guests.use(guest) == guest
    now[0] = 300
    assert guest in guests.expired()
    assert guests.use(guest) != guest


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
