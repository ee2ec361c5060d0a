"""History in an SQLite file, so signed-in users find their conversation after a
reconnect or a server restart. aiosqlite runs the queries on its own thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import aiosqlite

from ..ai import ChatMessage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation, id);
"""


#: aiosqlite logs every query with its values at DEBUG: users' messages, verbatim.
AIOSQLITE_LOGGER = "aiosqlite"


class SqliteHistoryStore:
    def __init__(self, path: Path, keep: int, *, log_queries: bool = False) -> None:
        self._path = path
        self._keep = keep
        self._db: aiosqlite.Connection | None = None
        # a DEBUG log level must not put users' messages in the log unless asked to
        logging.getLogger(AIOSQLITE_LOGGER).setLevel(logging.NOTSET if log_queries else logging.INFO)
        # One connection for every writer: an append is insert + trim + commit, and another
        # writer's statements between them would commit half of it, or (seen when a drain
        # stored 50 replies at once) fail with sqlite3's "bad parameter or other API misuse".
        self._writing = asyncio.Lock()

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteHistoryStore.open() was not awaited")
        return self._db

    async def load(self, conversation: str) -> list[ChatMessage]:
        async with self.db.execute(
            "SELECT role, content FROM messages WHERE conversation = ? ORDER BY id", (conversation,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [cast(ChatMessage, {"role": role, "content": content}) for role, content in rows]

    async def append(self, conversation: str, messages: Sequence[ChatMessage]) -> None:
        async with self._writing:
            await self._append(conversation, messages)

    async def _append(self, conversation: str, messages: Sequence[ChatMessage]) -> None:
        now = time.time()
        await self.db.executemany(
            "INSERT INTO messages (conversation, role, content, created) VALUES (?, ?, ?, ?)",
            [(conversation, m["role"], m["content"], now) for m in messages],
        )
        await self.db.execute(
            "DELETE FROM messages WHERE conversation = ? AND id NOT IN "
            "(SELECT id FROM messages WHERE conversation = ? ORDER BY id DESC LIMIT ?)",
            (conversation, conversation, self._keep),
        )
        await self.db.commit()

    async def clear(self, conversation: str) -> None:
        async with self._writing:
            await self.db.execute("DELETE FROM messages WHERE conversation = ?", (conversation,))
            await self.db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
