"""A history store of each kind for in-process chat tests: memory, an SQLite file, a real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalr_chat.chat.history import HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.support.redis_server import RedisServer

KINDS = ["memory", "sqlite", "redis"]


async def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path, keep: int = 50) -> HistoryStore:
    """Opened and empty; `redis` asks for the `redis_server` fixture only when it is chosen."""
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisHistoryStore(server.url, keep=keep)
    if kind == "sqlite":
        sqlite = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=keep)
        await sqlite.open()
        return sqlite
    return InMemoryHistoryStore(keep)
