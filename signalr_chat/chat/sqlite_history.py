"""History in an SQLite file, so signed-in users find their conversation after a
reconnect or a server restart. aiosqlite runs the queries on its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast

import aiosqlite

from ..ai import ChatMessage
from .history import ConversationInfo, HistoryUnavailable, Listed, holds, owner_key_range

log = logging.getLogger(__name__)

#: Version 0, as the first files were written; _MIGRATIONS brings it up to date.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation, id);
CREATE TABLE IF NOT EXISTS conversations (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (owner, id)
);
"""

#: Each step takes a file from the schema version before it (PRAGMA user_version, 0 for the
#: files written before versions were kept) to the next, in the transaction that sets the version:
#: a file of any earlier version opens, and keeps its conversations.
_MIGRATIONS = (
    # 1: custom instructions and the chosen model per conversation; the model that wrote each
    # reply, and the mark of a reply cut short at a length limit
    """
    ALTER TABLE conversations ADD COLUMN instructions TEXT NOT NULL DEFAULT '';
    ALTER TABLE conversations ADD COLUMN model TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN model TEXT;
    ALTER TABLE messages ADD COLUMN cut TEXT;
    """,
    # 2: a user message's attachments (metadata and base64 content), as a JSON list
    """
    ALTER TABLE messages ADD COLUMN attachments TEXT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


#: How many conversation keys one search query names (SQLite allows 32,766 parameters).
SEARCH_BATCH = 500

#: How long opening a file keeps trying while other processes hold its locks (seconds).
OPEN_TIMEOUT = 30.0

#: aiosqlite logs every query with its values at DEBUG: users' messages, verbatim.
AIOSQLITE_LOGGER = "aiosqlite"


class SqliteHistoryStore:
    """Signed-in users' HistoryStore by default: one writer, each write one transaction, the last `keep`
    messages per conversation; `problem` tells /readyz why writes fail."""

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
        #: Why the last write failed, until one succeeds (None: writes succeed).
        self.problem: str | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        # WAL: readers never wait for the writer, and a commit is one append to the log.
        # synchronous=NORMAL: a commit is not fsynced; a crash of the process (kill -9, OOM)
        # loses nothing committed, since the log is in the OS's cache; a power cut or an OS
        # crash may lose the last commits since the last checkpoint, never the file's
        # consistency (docs/operations.md). FULL would fsync every turn, on the one writer.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        # a search matches as the other stores do (LIKE would fold ASCII letters only)
        await self._db.create_function("chat_holds", 2, holds, deterministic=True)
        # Processes that open one file at once (instances starting together) can deadlock on
        # SQLite's locks while one switches the file to WAL or migrates it: SQLite then answers
        # "database is locked" at once, without waiting. Each step is safe to repeat, so the
        # whole preparation is tried again, briefly, until it goes through.
        delay, deadline = 0.01, time.monotonic() + OPEN_TIMEOUT
        while True:
            try:
                await self._prepare()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                with contextlib.suppress(sqlite3.Error):
                    await self._db.rollback()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _prepare(self) -> None:
        """WAL, the version 0 schema, then the migrations: each a no-op when already done."""
        db = self.db
        await db.execute("PRAGMA journal_mode=WAL")
        await db.executescript(_SCHEMA)
        await db.commit()
        await self._migrate()

    async def _migrate(self) -> None:
        """Brings a file written by an older version up to SCHEMA_VERSION, a step per transaction.
        The version is read inside each step's transaction: a second process opening the file at
        the same moment waits for the first one's step, then finds it done."""
        db = self.db
        while True:
            # executescript would commit first: each statement runs here, inside one transaction
            await db.execute("BEGIN IMMEDIATE")
            try:
                async with db.execute("PRAGMA user_version") as cursor:
                    row = await cursor.fetchone()
                version = int(row[0]) if row is not None else 0
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{self._path} was written by a newer version (schema {version} > {SCHEMA_VERSION})"
                    )
                if version == SCHEMA_VERSION:
                    await db.commit()
                    return
                for statement in filter(str.strip, _MIGRATIONS[version].split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {version + 1}")
                await db.commit()
            except BaseException:
                await db.rollback()
                raise
            log.info("history file %s: schema %d -> %d", self._path, version, version + 1)

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SqliteHistoryStore.open() was not awaited")
        return self._db

    async def load(self, conversation: str) -> list[ChatMessage]:
        try:
            async with self.db.execute(
                "SELECT role, content, model, cut, attachments FROM messages WHERE conversation = ? ORDER BY id",
                (conversation,),
            ) as cursor:
                rows = await cursor.fetchall()
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"SQLite refused: {exc}") from None
        return [_message(*row) for row in rows]

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One writer at a time, in one transaction: committed whole, or rolled back whole
        (a full disk, a read-only file), so no later commit can carry half of it. SQLite's
        refusal reaches the caller as HistoryUnavailable, and /readyz reports it until a
        write succeeds again."""
        async with self._writing:
            db = self.db
            try:
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await db.rollback()
                if isinstance(exc, sqlite3.Error):
                    self.problem = f"the history file {self._path} refuses writes: {exc}"
                    raise HistoryUnavailable(f"SQLite refused: {exc}") from None
                raise
            self.problem = None

    async def append(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        async with self._transaction() as db:
            await self._insert(db, conversation, messages)
            await db.execute(
                "DELETE FROM messages WHERE conversation = ? AND id NOT IN "
                "(SELECT id FROM messages WHERE conversation = ? ORDER BY id DESC LIMIT ?)",
                (conversation, conversation, self._keep),
            )
            if listed is not None:
                await self._upsert(db, *listed)

    @staticmethod
    async def _insert(db: aiosqlite.Connection, conversation: str, messages: Sequence[ChatMessage]) -> None:
        now = time.time()
        await db.executemany(
            "INSERT INTO messages (conversation, role, content, created, model, cut, attachments) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(conversation, m["role"], m["content"], now, m.get("model"), m.get("cut"), _files(m)) for m in messages],
        )

    async def clear(self, conversation: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM messages WHERE conversation = ?", (conversation,))

    async def replace(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM messages WHERE conversation = ?", (conversation,))
            await self._insert(db, conversation, messages[-self._keep :])
            if listed is not None:
                await self._upsert(db, *listed)

    async def drop(self, owner: str, conversation_id: str, conversation: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM messages WHERE conversation = ?", (conversation,))
            await db.execute("DELETE FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id))

    async def conversations(self, owner: str) -> list[ConversationInfo]:
        async with self.db.execute(
            "SELECT id, title, created, updated, instructions, model FROM conversations WHERE owner = ? "
            "ORDER BY updated DESC",
            (owner,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            ConversationInfo(str(i), str(title), float(c), float(u), str(instructions), str(model))
            for i, title, c, u, instructions, model in rows
        ]

    async def save_conversation(self, owner: str, info: ConversationInfo) -> None:
        async with self._transaction() as db:
            await self._upsert(db, owner, info)

    @staticmethod
    async def _upsert(db: aiosqlite.Connection, owner: str, info: ConversationInfo) -> None:
        await db.execute(
            "INSERT INTO conversations (owner, id, title, created, updated, instructions, model) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (owner, id) DO UPDATE SET title = excluded.title, updated = excluded.updated, "
            "instructions = excluded.instructions, model = excluded.model",
            (owner, info.id, info.title, info.created, info.updated, info.instructions, info.model),
        )

    async def forget_conversation(self, owner: str, conversation_id: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM conversations WHERE owner = ? AND id = ?", (owner, conversation_id))

    async def search(self, conversations: Sequence[str], query: str) -> dict[str, ChatMessage]:
        """A scan of the given conversations' messages (found by the conversation index), each
        tested by `holds`: no full-text index, so its cost grows with the owner's messages."""
        found: dict[str, ChatMessage] = {}
        keys = list(conversations)
        for start in range(0, len(keys), SEARCH_BATCH):
            batch = keys[start : start + SEARCH_BATCH]
            marks = ", ".join("?" * len(batch))
            try:
                async with self.db.execute(
                    f"SELECT conversation, role, content FROM messages WHERE conversation IN ({marks}) "
                    "AND chat_holds(content, ?) ORDER BY id",
                    (*batch, query),
                ) as cursor:
                    rows = await cursor.fetchall()
            except sqlite3.Error as exc:
                raise HistoryUnavailable(f"SQLite refused: {exc}") from None
            for conversation, role, content in rows:
                found.setdefault(str(conversation), cast(ChatMessage, {"role": role, "content": content}))
        return found

    async def drop_owner(self, owner: str) -> None:
        """One transaction: the owner's list, and their messages by a range of the conversation
        index (every key of the owner, listed or not)."""
        default, first, after = owner_key_range(owner)
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM messages WHERE conversation = ? OR (conversation >= ? AND conversation < ?)",
                (default, first, after),
            )
            await db.execute("DELETE FROM conversations WHERE owner = ?", (owner,))

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


def _files(message: ChatMessage) -> str | None:
    attachments = message.get("attachments")
    return json.dumps(attachments, ensure_ascii=False) if attachments else None


def _message(role: str, content: str, model: str | None, cut: str | None, attachments: str | None) -> ChatMessage:
    message = cast(ChatMessage, {"role": role, "content": content})
    if attachments:
        message["attachments"] = json.loads(attachments)
    if model is not None:
        message["model"] = model
    if cut == "length":  # the one mark there is
        message["cut"] = "length"
    return message
