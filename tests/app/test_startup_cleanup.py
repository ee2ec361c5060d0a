"""A startup that fails leaves nothing open: each resource is an aiohttp cleanup context, and
after a failed startup aiohttp exits exactly the contexts already entered, last first.

In process: the hosting server with a plain app (a context that fails, a port already taken),
and the chat app whose model cannot start after its SQLite store has opened. The chat as a
process with the same mistake exits with one line: tests/processes/test_chat_process.py.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from signalr_chat.ai.local_model import LocalChatModel
from signalr_chat.app.application import CHAT_SERVICE, create_app
from signalr_chat.app.settings import Settings
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from signalr_chat.hosting import ConfigurationError
from signalr_chat.hosting.server import serve


def recording(name: str, events: list[str], fail: bool = False) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(_app: web.Application) -> AsyncIterator[None]:
        events.append(f"open {name}")
        if fail:
            raise RuntimeError(f"{name} cannot open")
        yield
        events.append(f"close {name}")

    return context


async def test_a_failed_startup_closes_what_opened_before_it_in_reverse() -> None:
    events: list[str] = []
    app = web.Application()
    for name in ("first", "second"):
        app.cleanup_ctx.append(recording(name, events))
    app.cleanup_ctx.append(recording("third", events, fail=True))
    app.cleanup_ctx.append(recording("fourth", events))
    with pytest.raises(RuntimeError, match="third cannot open"):
        await serve(app, "127.0.0.1", 0)
    assert events == ["open first", "open second", "open third", "close second", "close first"]


async def test_a_port_already_taken_closes_everything_the_app_opened() -> None:
    events: list[str] = []
    app = web.Application()
    for name in ("first", "second"):
        app.cleanup_ctx.append(recording(name, events))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            await serve(app, "127.0.0.1", taken.getsockname()[1])
    assert events == ["open first", "open second", "close second", "close first"]


def signed_in_settings(tmp_path: Path) -> Settings:
    """Sign-in on, so signed-in users' history opens a SQLite file; a local model that is not there."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        ai_provider="local",
        local_model_path=tmp_path / "missing.gguf",
        auth_jwt_secret="a-secret-long-enough-for-hs256-000",
        history_store="sqlite",
        history_db=tmp_path / "history.sqlite3",
    )


async def test_a_model_that_cannot_start_closes_the_store_opened_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []

    def record(name: str, close: Any) -> Any:
        async def wrapper(self: Any) -> None:
            closed.append(name)
            await close(self)

        return wrapper

    monkeypatch.setattr(LocalChatModel, "aclose", record("model", LocalChatModel.aclose))
    monkeypatch.setattr(SqliteHistoryStore, "close", record("sqlite", SqliteHistoryStore.close))
    app = create_app(signed_in_settings(tmp_path))
    store = app[CHAT_SERVICE].signed_in.history
    assert isinstance(store, SqliteHistoryStore)

    with pytest.raises(ConfigurationError, match="local model not found"):
        await serve(app, "127.0.0.1", 0)

    assert (tmp_path / "history.sqlite3").is_file(), "the store had opened"
    with pytest.raises(RuntimeError, match="not awaited"):
        store.db  # noqa: B018 (closed again: no connection, no thread)
    assert closed == ["model", "sqlite"], "the model's own context first, then the store opened before it"
