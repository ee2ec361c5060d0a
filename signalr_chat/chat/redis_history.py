"""History in Redis, so every instance of a scaled-out chat sees a user's conversations.

Keyed by conversation (whose key starts with its owner) and by owner for the list, so a
user finds the same conversations whichever instance serves them. Writes that are more
than one command run in MULTI/EXEC (append + trim, replace) or as one Lua script (an
upsert that keeps `created`), so two instances writing at once never interleave halfway.

Every call is bounded by `timeout`: a Redis that is down, or hung, gives the caller
`HistoryUnavailable` (a clear text for the user) within that time, never a hang.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from ..ai import ChatMessage
from ..signalr.redis import client_from_url
from .history import ConversationInfo, HistoryUnavailable

T = TypeVar("T")

#: Every key of the chat's history starts with the channel prefix and this.
NAMESPACE = "signalr_chat:"

# HSET the entry [created, updated, title], keeping the `created` already stored (as SQLite's
# ON CONFLICT update does). Text, not cjson: cjson would round the times to 14 digits.
# ARGV[4]: the list's time to live in ms, 0 for none.
_SAVE_CONVERSATION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local created = ARGV[2]
if old then created = string.match(old, '^%[([^,]+),') end
redis.call('HSET', KEYS[1], ARGV[1], '[' .. created .. ',' .. ARGV[3] .. ']')
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"""


async def bounded(work: Callable[[], Awaitable[T]], timeout: float) -> T:
    """The chat's Redis errors as one: Redis unreachable, too slow, or refusing (e.g. out of
    memory), within `timeout` whatever redis-py's own timeouts and retries do."""
    try:
        async with asyncio.timeout(timeout):
            return await work()
    except (TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        raise HistoryUnavailable(f"Redis did not answer: {exc!r}") from exc
    except redis_errors.ResponseError as exc:
        raise HistoryUnavailable(f"Redis refused: {exc}") from exc


def connect(url: str, timeout: float) -> Redis:
    """The backplane's bounded client (Sentinel URLs included), checked when idle for 30 s."""
    return client_from_url(url, timeout, health_check_interval=30)


class RedisUser:
    """A part of the chat that talks to Redis: on the process's one client (its pool, closed by
    whoever opened it) when given one, else on a client of its own from a URL, closed here."""

    def __init__(self, redis: str | Redis, timeout: float) -> None:
        self._owns_client = isinstance(redis, str)
        self._redis: Redis = connect(redis, timeout) if isinstance(redis, str) else redis
        self._timeout = timeout

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        return await bounded(work, self._timeout)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()


class RedisHistoryStore(RedisUser):
    def __init__(
        self, redis: str | Redis, keep: int, *, prefix: str = "", timeout: float = 5.0, ttl: float | None = None
    ) -> None:
        """`ttl`: each key expires this long after its last write (guests' conversations)."""
        super().__init__(redis, timeout)
        self._keep = keep
        self._ttl_ms = int(ttl * 1000) if ttl else 0
        self._prefix = prefix + NAMESPACE
        self._save = self._redis.register_script(_SAVE_CONVERSATION)

    def _messages(self, conversation: str) -> str:
        return f"{self._prefix}history:{conversation}"

    def _list(self, owner: str) -> str:
        return f"{self._prefix}conversations:{owner}"

    async def load(self, conversation: str) -> list[ChatMessage]:
        rows = await self._call(
            lambda: cast(Awaitable[list[bytes]], self._redis.lrange(self._messages(conversation), 0, -1))
        )
        return [_message(row) for row in rows]

    async def append(self, conversation: str, messages: Sequence[ChatMessage]) -> None:
        if not messages:
            return
        key = self._messages(conversation)

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *(_encode(m) for m in messages))
                pipe.ltrim(key, -self._keep, -1)
                if self._ttl_ms:
                    pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

        await self._call(run)

    async def clear(self, conversation: str) -> None:
        await self._call(lambda: self._redis.delete(self._messages(conversation)))

    async def replace(self, conversation: str, messages: Sequence[ChatMessage]) -> None:
        key = self._messages(conversation)
        kept = list(messages)[-self._keep :]

        async def run() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if kept:
                    pipe.rpush(key, *(_encode(m) for m in kept))
                    if self._ttl_ms:
                        pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

        await self._call(run)

    async def conversations(self, owner: str) -> list[ConversationInfo]:
        rows = await self._call(lambda: cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(self._list(owner))))
        listed = []
        for conversation_id, entry in rows.items():
            created, updated, title = json.loads(entry)
            listed.append(ConversationInfo(conversation_id.decode(), str(title), float(created), float(updated)))
        listed.sort(key=lambda c: c.updated, reverse=True)
        return listed

    async def save_conversation(self, owner: str, info: ConversationInfo) -> None:
        rest = json.dumps([info.updated, info.title], ensure_ascii=False)[1:-1]
        args: list[str | int] = [info.id, json.dumps(info.created), rest, self._ttl_ms]
        await self._call(lambda: cast(Awaitable[Any], self._save(keys=[self._list(owner)], args=args)))

    async def forget_conversation(self, owner: str, conversation_id: str) -> None:
        await self._call(lambda: self._redis.hdel(self._list(owner), conversation_id))


def _encode(message: ChatMessage) -> str:
    return json.dumps([message["role"], message["content"]], ensure_ascii=False)


def _message(row: bytes) -> ChatMessage:
    role, content = json.loads(row)
    return cast(ChatMessage, {"role": role, "content": content})
