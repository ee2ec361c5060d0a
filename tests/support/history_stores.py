"""In-process chat tests: a history store of each kind (memory, an SQLite file, a real Redis),
and the conversation service on it against the fake Azure OpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from signalr_chat.ai import create_model
from signalr_chat.app.settings import Settings
from signalr_chat.chat.attachments import AttachmentPolicy
from signalr_chat.chat.conversations import ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import HistoryStore, InMemoryHistoryStore
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies
from signalr_chat.chat.service import Backends, ChatService, Limits
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from tests.support.fake_ai import DEFAULT_API_KEY, create_fake_app, start_fake
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


@asynccontextmanager
async def conversations_on_fake(
    store: HistoryStore, *, provider: str = "azure", owns_store: bool = True, **settings: Any
) -> AsyncIterator[tuple[ConversationService, web.Application]]:
    """A ConversationService whose signed-in users keep their history in `store`, on the real
    `openai` SDK against the fake Azure OpenAI (`provider="openai"`: its OpenAI-compatible
    `/v1`); `settings` on top, no rate limit, anonymous history in memory. Closes the service
    and the fake after, and the store unless the caller keeps it (`owns_store=False`)."""
    fake = create_fake_app(token_delay=0)
    runner, port = await start_fake(fake)
    upstream: dict[str, Any] = (
        {"openai_base_url": f"http://127.0.0.1:{port}/v1", "openai_api_key": DEFAULT_API_KEY}
        if provider == "openai"
        else {"azure_openai_endpoint": f"http://127.0.0.1:{port}", "azure_openai_api_key": DEFAULT_API_KEY}
    )
    chosen = Settings(
        _env_file=None,  # type: ignore[call-arg]
        ai_provider=provider,
        rate_limit_messages=0,
        history_store="memory",
        **upstream,
        **settings,
    )
    model = create_model(chosen)
    chat = ChatService(model, Limits.from_settings(chosen), chosen.system_prompt)
    limits = InMemoryRateLimits(RateLimiter(0, 60))
    conversations = ConversationService(
        chat,
        signed_in=Backends(store, limits, LocalReplies()),
        anonymous=Backends(InMemoryHistoryStore(50), limits, LocalReplies()),
        guests=GuestSessions(chosen.guest_ttl_seconds),
        attachments=AttachmentPolicy.from_settings(chosen),
    )
    try:
        yield conversations, fake
    finally:
        await conversations.close()
        if owns_store:
            await store.close()
        await model.aclose()
        await runner.cleanup()
