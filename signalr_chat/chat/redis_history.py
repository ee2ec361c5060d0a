"""History in Redis, so every instance of a scaled-out chat sees a user's conversations.

Keyed by conversation (whose key starts with its owner) and by owner for the list, so a
user finds the same conversations whichever instance serves them. A write that is more
than one command (append + trim, replace, a write of messages with its list entry, a delete)
runs as one Lua script, so two instances writing at once never interleave halfway and a
writer that dies mid-write leaves the conversation before or after it, never between.

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
from .history import ConversationInfo, HistoryUnavailable, Listed, conversation_key, holds, owner_key_range

T = TypeVar("T")

#: Conversations read per round trip by a search (each at most `keep` messages).
SEARCH_BATCH = 100
#: Keys deleted per DEL in DeleteAllMyData's transaction.
DELETE_BATCH = 500

#: Every key of the chat's history starts with the channel prefix and this.
NAMESPACE = "signalr_chat:"

# HSET the entry [created, updated, title, instructions, model], keeping the `created` already
# stored (as SQLite's ON CONFLICT update does). Text, not cjson: cjson would round the times to
# 14 digits. Entries written before instructions and models were kept have three fields: they
# read as no instructions and the default model.
# ARGV[4]: the list's time to live in ms, 0 for none.
_SAVE_CONVERSATION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local created = ARGV[2]
if old then created = string.match(old, '^%[([^,]+),') end
redis.call('HSET', KEYS[1], ARGV[1], '[' .. created .. ',' .. ARGV[3] .. ']')
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"""

# One write of a conversation, atomically (a script runs whole or not at all; a crash of the
# writer cannot land between its commands): KEYS[1] the messages, KEYS[2] the owner's list.
# ARGV: mode (append, replace, drop), keep, ttl in ms (0: none), the list change (none,
# save, forget), the conversation id, created, the rest of the entry; then the messages.
_WRITE = """
local mode, keep, ttl, change = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if mode ~= 'append' then redis.call('DEL', KEYS[1]) end
if #ARGV > 7 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 8))
  redis.call('LTRIM', KEYS[1], -keep, -1)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
if change == 'save' then
  local old = redis.call('HGET', KEYS[2], ARGV[5])
  local created = ARGV[6]
  if old then created = string.match(old, '^%[([^,]+),') end
  redis.call('HSET', KEYS[2], ARGV[5], '[' .. created .. ',' .. ARGV[7] .. ']')
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
elseif change == 'forget' then
  redis.call('HDEL', KEYS[2], ARGV[5])
end
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
    """The HistoryStore every instance shares (HISTORY_STORE=redis): each write one script, each call bounded
    by `timeout`; guests' keys expire `ttl` after their last write."""

    def __init__(
        self, redis: str | Redis, keep: int, *, prefix: str = "", timeout: float = 5.0, ttl: float | None = None
    ) -> None:
        """`ttl`: each key expires this long after its last write (guests' conversations)."""
        super().__init__(redis, timeout)
        self._keep = keep
        self._ttl_ms = int(ttl * 1000) if ttl else 0
        self._prefix = prefix + NAMESPACE
        self._save = self._redis.register_script(_SAVE_CONVERSATION)
        self._write_script = self._redis.register_script(_WRITE)
        #: Why the last call failed, until one succeeds (for /readyz).
        self.problem: str | None = None

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await super()._call(work)
        except HistoryUnavailable as exc:
            self.problem = f"the Redis history did not answer: {exc}"
            raise
        self.problem = None
        return result

    def _messages(self, conversation: str) -> str:
        return f"{self._prefix}history:{conversation}"

    def _list(self, owner: str) -> str:
        return f"{self._prefix}conversations:{owner}"

    async def load(self, conversation: str) -> list[ChatMessage]:
        rows = await self._call(
            lambda: cast(Awaitable[list[bytes]], self._redis.lrange(self._messages(conversation), 0, -1))
        )
        return [_message(row) for row in rows]

    async def _write(
        self,
        mode: str,
        conversation: str,
        messages: Sequence[ChatMessage],
        owner: str = "",
        change: str = "none",
        entry: tuple[str, str, str] = ("", "", ""),
    ) -> None:
        keys = [self._messages(conversation), self._list(owner)]
        args: list[str | int] = [mode, self._keep, self._ttl_ms, change, *entry]
        args += [_encode(m) for m in list(messages)[-self._keep :]]
        await self._call(lambda: cast(Awaitable[Any], self._write_script(keys=keys, args=args)))

    async def append(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        if not messages and listed is None:
            return
        await self._write("append", conversation, messages, *_entry(listed))

    async def clear(self, conversation: str) -> None:
        await self._call(lambda: self._redis.delete(self._messages(conversation)))

    async def replace(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        await self._write("replace", conversation, messages, *_entry(listed))

    async def drop(self, owner: str, conversation_id: str, conversation: str) -> None:
        await self._write("drop", conversation, [], owner, "forget", (conversation_id, "", ""))

    async def conversations(self, owner: str) -> list[ConversationInfo]:
        rows = await self._call(lambda: cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(self._list(owner))))
        listed = []
        for conversation_id, entry in rows.items():
            created, updated, title, *chosen = json.loads(entry)
            instructions, model = [*chosen, "", ""][:2]
            listed.append(
                ConversationInfo(
                    conversation_id.decode(), str(title), float(created), float(updated), str(instructions), str(model)
                )
            )
        listed.sort(key=lambda c: c.updated, reverse=True)
        return listed

    async def save_conversation(self, owner: str, info: ConversationInfo) -> None:
        args: list[str | int] = [info.id, json.dumps(info.created), _rest(info), self._ttl_ms]
        await self._call(lambda: cast(Awaitable[Any], self._save(keys=[self._list(owner)], args=args)))

    async def forget_conversation(self, owner: str, conversation_id: str) -> None:
        await self._call(lambda: self._redis.hdel(self._list(owner), conversation_id))

    async def search(self, conversations: Sequence[str], query: str) -> dict[str, ChatMessage]:
        """Reads the given conversations (each trimmed to `keep` messages), a batch per round
        trip, and tests them here: Redis has no text search without a module."""
        found: dict[str, ChatMessage] = {}
        keys = list(conversations)
        for start in range(0, len(keys), SEARCH_BATCH):
            batch = keys[start : start + SEARCH_BATCH]

            async def read(batch: list[str] = batch) -> list[list[bytes]]:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.lrange(self._messages(key), 0, -1)
                    return cast(list[list[bytes]], await pipe.execute())

            for key, rows in zip(batch, await self._call(read), strict=True):
                first = next((m for m in map(_message, rows) if holds(m["content"], query)), None)
                if first is not None:
                    found[key] = first
        return found

    async def drop_owner(self, owner: str) -> None:
        """The owner's keys: the list, the conversations it names, the default one, and any
        other under the owner's prefix (a SCAN, so none is left that the list forgot), deleted
        in one MULTI/EXEC. The SCAN walks the whole keyspace: this is for a rare request."""
        default, first, _ = owner_key_range(owner)
        pattern = self._messages(_glob_escaped(first)) + "*"

        async def collect() -> set[str]:
            ids = await cast(Awaitable[list[bytes]], self._redis.hkeys(self._list(owner)))
            keys = {self._list(owner), self._messages(default)}
            keys.update(self._messages(conversation_key(owner, i.decode())) for i in ids)
            async for found in self._redis.scan_iter(match=pattern, count=1000):
                keys.add(found.decode() if isinstance(found, bytes) else str(found))
            return keys

        keys = sorted(await self._call(collect))

        async def delete() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for start in range(0, len(keys), DELETE_BATCH):
                    pipe.delete(*keys[start : start + DELETE_BATCH])
                await pipe.execute()

        await self._call(delete)


def _glob_escaped(text: str) -> str:
    """`text` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _entry(listed: Listed | None) -> tuple[str, str, tuple[str, str, str]]:
    """The owner, the list change and the entry's fields for `_WRITE`."""
    if listed is None:
        return "", "none", ("", "", "")
    owner, info = listed
    return owner, "save", (info.id, json.dumps(info.created), _rest(info))


def _rest(info: ConversationInfo) -> str:
    """`updated, "title", "instructions", "model"`: the entry after its `created`, as stored."""
    return json.dumps([info.updated, info.title, info.instructions, info.model], ensure_ascii=False)[1:-1]


def _encode(message: ChatMessage) -> str:
    """[role, content], then the model that wrote it (or null), the cut mark (or null) and the
    attachments, as far as there are any (older rows have two to four items)."""
    model, cut, files = message.get("model"), message.get("cut"), message.get("attachments")
    fields: list[object] = [message["role"], message["content"]]
    if model is not None or cut is not None or files:
        fields.append(model)
    if cut is not None or files:
        fields.append(cut)
    if files:
        fields.append(files)
    return json.dumps(fields, ensure_ascii=False)


def _message(row: bytes) -> ChatMessage:
    role, content, *extra = json.loads(row)
    message = cast(ChatMessage, {"role": role, "content": content})
    if extra and extra[0] is not None:
        message["model"] = str(extra[0])
    if len(extra) > 1 and extra[1] == "length":  # the one mark there is
        message["cut"] = "length"
    if len(extra) > 2 and extra[2]:
        message["attachments"] = extra[2]
    return message
