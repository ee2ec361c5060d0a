"""Replies in flight, shared through Redis by the instances of a scaled-out chat.

A reply runs on the instance that started it, in its `ReplyRun`, and is followed there in
memory as before. This module lets the user's next connection land on any other instance:

- a lease, `reply-lease:{key}` = "{instance} {replyId}", taken with SET NX when a reply
  starts: one reply per conversation across instances, and when the owner dies the lease
  lapses, so the others know its reply ended;
- a Redis stream, `reply:{key}`: a start entry, the chunks in batches (numbered as in the
  `ReplyRun`), a `storing` mark written before the reply is stored, and an end entry; kept
  `kept_after_end` seconds after the end. Another instance replays it with XREAD from the
  start and follows with XREAD BLOCK from the last entry it read: one ordered log, so no
  gap and no duplicate, as in memory. A withdrawn reply's end (a late content filter signal)
  deletes its chunk entries in the same transaction, so nothing of it is replayed;
- `reply-followers:{key}`, a sorted set of the followers elsewhere, each with an expiry
  they keep pushing forward: the owner does not stop a reply as abandoned while a client
  follows it on another instance;
- the channel `reply-stop`: a stop (StopReply, StopGeneration, a clear or a delete) from
  any instance. Every instance stops its replies of that conversation, waits until they
  are stored, and acks on the asker's own channel; the asker waits for as many acks as
  PUBLISH reached instances, bounded by the timeout.

The relay never waits for Redis: a mirror task per reply writes what accumulated since
its last write (one XADD per batch, not per token). The chat's keys and channels are its
own (never SignalR framing); they start with the channel prefix, like the backplane's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.typing import EncodableT, FieldT

from .history import HistoryUnavailable
from .redis_history import NAMESPACE, RedisUser
from .replies import ReplyRun, StopHandler

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The text of a reply whose instance stopped answering before it ended.
OWNER_GONE = "The server writing this reply stopped. Please try again."

# Deletes the lease only if it is still the one this reply took.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Takes a dead owner's lease, only if it is still the one found dead.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return false
"""

#: How long the stop listener waits for a message before it waits again.
LISTEN_SECONDS = 30.0
#: A stream entry: its id and its fields.
_Entry = tuple[str, dict[bytes, bytes]]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Mirror:
    """One reply's writes to its stream, in order, whoever asks for a flush."""

    def __init__(self, key: str, run: ReplyRun, lease_value: str) -> None:
        self.key = key
        self.run = run
        self.lease_value = lease_value
        self.sent = 0
        #: The stream ids of the chunk entries written: a withdrawal deletes them.
        self.chunk_ids: list[str] = []
        self.storing_sent = False
        self.ended = False
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None


class SharedReplies(RedisUser):
    """`ReplySharing` through Redis: every instance shows, follows and stops every reply."""

    def __init__(
        self, redis: str | Redis, *, prefix: str = "", timeout: float = 5.0, kept_after_end: float = 60.0
    ) -> None:
        super().__init__(redis, timeout)
        self.instance = uuid.uuid4().hex[:12]
        self.timeout = timeout
        self.kept_after_end = kept_after_end
        #: A crashed owner's reply is known dead after this; the owner refreshes it thrice as often.
        self.lease_seconds = max(3 * timeout, 3.0)
        self._prefix = prefix + NAMESPACE
        self._release = self._redis.register_script(_RELEASE)
        self._take_over = self._redis.register_script(_TAKE_OVER)
        self._stop_channel = f"{self._prefix}reply-stop"
        self._ack_channel = self._ack_channel_of(self.instance)
        self._acks: dict[str, asyncio.Queue[bool]] = {}
        self._mirrors: dict[str, _Mirror] = {}
        self._mirror_tasks: set[asyncio.Task[None]] = set()
        self._on_stop: StopHandler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    # -- keys ----------------------------------------------------------------------------
    def _lease(self, key: str) -> str:
        return f"{self._prefix}reply-lease:{key}"

    def _stream(self, key: str) -> str:
        return f"{self._prefix}reply:{key}"

    def _followers(self, key: str) -> str:
        return f"{self._prefix}reply-followers:{key}"

    # -- lifetime ------------------------------------------------------------------------
    async def start(self, on_stop: StopHandler) -> None:
        """Listens for stops from every instance; `on_stop(key)` stops this instance's replies."""
        self._on_stop = on_stop
        self._listener = asyncio.create_task(self._listen())
        # not fatal when Redis is down at startup: the listener keeps trying
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._subscribed.wait()

    async def close(self) -> None:
        """Lets the mirrors write the ends of the replies just stopped, then closes."""
        if self._mirror_tasks:
            await asyncio.wait(self._mirror_tasks, timeout=self.timeout)
        tasks = [*self._tasks, *self._mirror_tasks, *([self._listener] if self._listener is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().close()

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the owner's side --------------------------------------------------------------
    async def claim(self, key: str, run: ReplyRun) -> bool:
        """Takes the conversation's lease for `run` and opens its stream; False when a reply
        of the conversation runs on another instance."""
        value = f"{self.instance} {run.id}"
        start = json.dumps(run.describe())

        lease, lease_ms = self._lease(key), int(self.lease_seconds * 1000)

        async def work() -> bool:
            if not await self._redis.set(lease, value, nx=True, px=lease_ms):
                held = await self._redis.get(lease)
                if held is None or (await self._alive([held]))[0]:
                    return False
                # its owner died mid-reply: take over, unless someone else just did
                if not await self._take_over(keys=[lease], args=[held, value, lease_ms]):
                    return False
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._stream(key))
                pipe.xadd(self._stream(key), {"last": 0, "start": start})
                pipe.pexpire(self._stream(key), self._stream_ms())
                await pipe.execute()
            return True

        if not await self._call(work):
            ended = next((m for m in self._mirrors.values() if m.key == key and m.run.outcome is not None), None)
            if ended is None or ended.task is None:
                return False
            # this instance's last reply of the conversation has ended, and its mirror is still
            # writing the end and releasing the lease (a client sends the next message as soon
            # as it sees the end): once that is done, the conversation is free
            await asyncio.wait((ended.task,), timeout=self.lease_seconds)
            if not await self._call(work):
                return False
        mirror = self._mirrors[run.id] = _Mirror(key, run, value)  # before the first chunk: storing() finds it
        task = mirror.task = asyncio.create_task(self._mirror(mirror))
        self._mirror_tasks.add(task)
        task.add_done_callback(self._mirror_tasks.discard)
        return True

    def _stream_ms(self) -> int:
        """A running reply's stream outlives its lease by the time an ended one is kept, so
        the stream of an owner that died goes too."""
        return int((self.lease_seconds + self.kept_after_end) * 1000)

    async def _mirror(self, mirror: _Mirror) -> None:
        """Writes the run's new chunks as they come, keeps its lease, and closes the stream."""
        run = mirror.run
        refresh = self.lease_seconds / 3
        try:
            while not mirror.ended:
                changed = run.changed
                try:
                    await self._flush(mirror, refresh_lease=True)
                except HistoryUnavailable as exc:
                    log.warning("reply %s not mirrored to Redis: %s", run.id, exc)
                    if run.ended_at is not None and time.monotonic() - run.ended_at > self.kept_after_end:
                        return  # Redis stayed away: its followers have given up by now
                if not mirror.ended:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(refresh):
                            await changed.wait()
        finally:
            self._mirrors.pop(run.id, None)

    async def storing(self, run: ReplyRun) -> None:
        """Marks the run as being stored, before the store write: another instance that reads
        the history then sees the reply in it or running, never both (as `ReplyRun.storing`)."""
        mirror = self._mirrors.get(run.id)
        if mirror is not None:
            try:
                await self._flush(mirror, refresh_lease=False)
            except HistoryUnavailable as exc:
                log.warning("reply %s: storing mark not mirrored: %s", run.id, exc)

    async def _flush(self, mirror: _Mirror, *, refresh_lease: bool) -> None:
        async with mirror.lock:
            if mirror.ended:
                return
            run = mirror.run
            count = len(run.chunks)
            entries: list[dict[FieldT, EncodableT]] = []
            chunks = count > mirror.sent
            if chunks:
                entries.append({"last": count, "chunks": json.dumps(run.chunks[mirror.sent : count])})
            if run.storing and not mirror.storing_sent:
                entries.append({"last": count, "storing": 1})
            end = run.outcome is not None
            if end:
                entries.append({"last": count, "end": json.dumps({"end": run.outcome, **run.ending()})})
            withdrawn = end and run.withdrawn and mirror.chunk_ids
            if not entries and not refresh_lease:
                return
            stream, lease = self._stream(mirror.key), self._lease(mirror.key)

            async def work() -> list[Any]:
                # a withdrawal is one transaction: a reader sees its chunks, or its end without
                # them; so is the end, with the lease's release: whoever reads the end may start
                # the conversation's next reply at once, on any instance
                async with self._redis.pipeline(transaction=bool(withdrawn) or end) as pipe:
                    for entry in entries:
                        pipe.xadd(stream, entry)
                    if withdrawn:
                        pipe.xdel(stream, *mirror.chunk_ids)
                    if end:
                        pipe.pexpire(stream, int(self.kept_after_end * 1000))
                        await self._release(keys=[lease], args=[mirror.lease_value], client=pipe)
                    elif refresh_lease:
                        pipe.pexpire(lease, int(self.lease_seconds * 1000))
                        pipe.pexpire(stream, self._stream_ms())
                    results: list[Any] = await pipe.execute()
                return results

            results = await self._call(work)
            if chunks:
                mirror.chunk_ids.append(_text(results[0]))
            mirror.sent = count
            mirror.storing_sent = mirror.storing_sent or run.storing
            mirror.ended = end

    # -- another instance's side ---------------------------------------------------------
    async def describe(self, key: str) -> tuple[dict[str, object] | None, bool]:
        """The conversation's latest reply as `ReplyRun.describe` gives it, and whether it is
        being (or was) stored; (None, False) when there is none."""

        async def work() -> tuple[list[Any], list[Any], bool]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xrange(self._stream(key), count=1)
                pipe.xrevrange(self._stream(key), count=1)
                pipe.get(self._lease(key))
                first, last, held = await pipe.execute()
            return first, last, (await self._alive([held]))[0]

        first, last, alive = await self._call(work)
        if not first:
            return None, False
        fields = last[0][1]
        ended = b"end" in fields
        if not ended and not alive:
            return None, False  # its owner died mid-reply: the turn is gone with it
        described: dict[str, object] = json.loads(first[0][1][b"start"])
        described["sequence"] = int(fields[b"last"])
        described["running"] = not ended
        return described, ended or b"storing" in fields

    async def is_running(self, keys: Sequence[str]) -> list[bool]:
        """Whether each conversation has a reply running on some instance."""
        if not keys:
            return []

        async def work() -> list[bool]:
            return await self._alive(await self._redis.mget([self._lease(key) for key in keys]))

        return await self._call(work)

    async def _alive(self, leases: Sequence[bytes | str | None]) -> list[bool]:
        """Whether each lease is held by a live instance. A lease lapses when its owner stops
        renewing it; a process that died (SIGKILL, a crash) is known at once, as Redis drops
        its subscription to its ack channel when its socket closes."""
        owners = {lease: self._ack_channel_of(_text(lease).split(" ", 1)[0]) for lease in leases if lease is not None}
        if not owners:
            return [False] * len(leases)
        subscribed = dict(await self._redis.pubsub_numsub(*set(owners.values())))
        return [lease is not None and int(subscribed.get(owners[lease].encode(), 0)) > 0 for lease in leases]

    def _ack_channel_of(self, instance: str) -> str:
        return f"{self._prefix}reply-stopped:{instance}"

    async def follow(self, key: str, after: int, *, linger: float) -> AsyncIterator[dict[str, object]]:
        """`ReplyRun.follow` for a reply another instance runs: the stream's chunks above
        `after`, then live, then the end item. Counted as a follower while it follows and for
        `linger` seconds after (the grace period a client has to come back)."""
        stream, follower = self._stream(key), f"{self.instance}:{uuid.uuid4().hex[:8]}"
        block_ms = int(min(1.0, self.timeout / 2) * 1000)
        entries = await self._read(stream, "0-0")
        if not entries:
            return  # no reply running or kept: as in memory, the stream completes at once
        sent, reply_id, position = max(0, after), "", "0-0"
        await self._follow_lease(key, follower)
        renewed = time.monotonic()
        try:
            while True:
                for _, fields in entries:
                    if b"start" in fields:
                        started = str(json.loads(fields[b"start"])["replyId"])
                        if reply_id and started != reply_id:
                            return  # a newer reply replaced this one (its end was lost with its owner)
                        reply_id = started
                    if b"chunks" in fields:
                        chunks: list[str] = json.loads(fields[b"chunks"])
                        first = int(fields[b"last"]) - len(chunks) + 1
                        for number, text in enumerate(chunks, first):
                            if number > sent:
                                sent = number
                                yield {"sequence": number, "text": text}
                    if b"end" in fields:
                        yield {"sequence": sent, **json.loads(fields[b"end"]), "replyId": reply_id}
                        return
                if entries:
                    position = entries[-1][0]
                if time.monotonic() - renewed >= self.lease_seconds / 3:
                    await self._follow_lease(key, follower)
                    renewed = time.monotonic()
                if not entries and not (await self.is_running([key]))[0]:
                    # quiet, and the owner's lease lapsed: it died mid-reply, unless the end came meanwhile
                    entries = await self._read(stream, position)
                    if not entries:
                        yield {"sequence": sent, "end": "error", "replyId": reply_id, "error": OWNER_GONE}
                        return
                    continue
                entries = await self._read(stream, position, block_ms)
        finally:
            with contextlib.suppress(HistoryUnavailable):
                await self._follow_lease(key, follower, linger)

    async def _read(self, stream: str, position: str, block_ms: int | None = None) -> list[_Entry]:
        """The stream's entries after `position`; waits up to `block_ms` for one if asked to."""
        read: Any = await self._call(lambda: self._redis.xread({stream: position}, count=200, block=block_ms))
        if not read:
            return []
        return [(_text(entry_id), fields) for entry_id, fields in read[0][1]]

    async def _follow_lease(self, key: str, follower: str, seconds: float | None = None) -> None:
        """The follower counts until `seconds` (by default the lease) from now: instances'
        clocks must agree to well within the lease, as NTP keeps them."""
        seconds = self.lease_seconds if seconds is None else seconds
        expires = time.time() + seconds
        followers = self._followers(key)

        async def work() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(followers, {follower: expires})
                pipe.pexpire(followers, int(max(seconds, self.lease_seconds) * 1000))
                await pipe.execute()

        await self._call(work)

    async def followed_elsewhere(self, key: str) -> bool:
        """Whether a client follows the conversation's reply on some instance."""
        followers = self._followers(key)

        async def work() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(followers, "-inf", time.time())
                pipe.zcard(followers)
                _, count = await pipe.execute()
            return int(count)

        return await self._call(work) > 0

    # -- stopping, from any instance -------------------------------------------------------
    async def stop(self, key: str) -> bool:
        """Stops the conversation's replies on every instance and waits until they are stored;
        whether any was running."""
        request = uuid.uuid4().hex
        acks: asyncio.Queue[bool] = asyncio.Queue()
        self._acks[request] = acks
        message = json.dumps({"key": key, "id": request, "ackTo": self._ack_channel})
        stopped = False
        try:
            receivers = await self._call(lambda: self._redis.publish(self._stop_channel, message))
            async with asyncio.timeout(self.timeout):
                for _ in range(int(receivers)):
                    stopped = await acks.get() or stopped
        except TimeoutError:
            log.warning("a stop of a reply was not acknowledged by every instance within %s s", self.timeout)
        finally:
            del self._acks[request]
        return stopped

    async def forget(self, keys: Sequence[str]) -> None:
        """Deletes the streams (and follower sets) of the conversations' replies, once this
        instance's mirrors of them wrote their ends, so no end recreates a stream after."""
        wanted = set(keys)
        mirroring = [m.task for m in self._mirrors.values() if m.key in wanted and m.task is not None]
        if mirroring:
            await asyncio.wait(mirroring, timeout=self.timeout)
        names = [name for key in sorted(wanted) for name in (self._stream(key), self._followers(key))]

        async def delete() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for start in range(0, len(names), 500):
                    pipe.delete(*names[start : start + 500])
                await pipe.execute()

        if names:
            await self._call(delete)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                pubsub: PubSub = self._redis.pubsub(ignore_subscribe_messages=True)
                async with pubsub:
                    await pubsub.subscribe(self._stop_channel, self._ack_channel)
                    self._subscribed.set()
                    backoff = 0.1
                    while True:
                        # waits past the pool's read timeout while no stop comes: a quiet channel is no outage
                        message = await pubsub.get_message(timeout=LISTEN_SECONDS)
                        if message is not None and message["type"] == "message":
                            self._received(_text(message["channel"]), message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reply stops: Redis subscription lost (%s); retrying in %.1f s", exc, backoff)
            self._subscribed.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _received(self, channel: str, data: bytes) -> None:
        payload = json.loads(data)
        if channel == self._ack_channel:
            waiting = self._acks.get(str(payload["id"]))
            if waiting is not None:
                waiting.put_nowait(bool(payload["stopped"]))
        elif self._on_stop is not None:
            self._spawn(self._stop_here(self._on_stop, payload))

    async def _stop_here(self, on_stop: StopHandler, payload: dict[str, Any]) -> None:
        try:
            stopped = await on_stop(str(payload["key"]))
        except Exception:
            log.exception("stopping a reply for another instance failed")
            stopped = False
        ack = json.dumps({"id": payload["id"], "stopped": stopped})
        try:
            await self._call(lambda: self._redis.publish(str(payload["ackTo"]), ack))
        except HistoryUnavailable as exc:
            log.warning("a stop of a reply could not be acknowledged: %s", exc)
