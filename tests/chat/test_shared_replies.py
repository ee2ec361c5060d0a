"""Replies shared by two instances through a real Redis, in process: two chat services
(each with its own Redis clients, as two processes have) and a model the test feeds token
by token, so every step is waited on, never slept for. The same flows through two server
processes and the stock JS client are in test_chat_scale_out.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

import pytest

from signalr_chat.ai import AiContentFiltered, AiContentWithdrawn, AiCutShort, ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.conversations import BUSY, ConversationService
from signalr_chat.chat.guests import GuestSessions
from signalr_chat.chat.history import HistoryUnavailable, InMemoryHistoryStore
from signalr_chat.chat.rate_limit import InMemoryRateLimits, RateLimiter
from signalr_chat.chat.redis_history import RedisHistoryStore
from signalr_chat.chat.replies import LocalReplies
from signalr_chat.chat.service import Backends, Caller, ChatService, Limits, Rejected
from signalr_chat.chat.shared_replies import OWNER_GONE, SharedReplies
from tests.support.redis_server import RedisServer

NEVER = 30.0
POLICY = AiContentFiltered.user_message


class GatedModel:
    """Streams what the test puts in `tokens` (None ends the reply); says when it was closed."""

    name = "fake:gated"
    models = ("gated",)
    context_tokens = 4096
    max_output_tokens = 256

    def __init__(self) -> None:
        #: A token, an exception to raise (how the reply ends), or None (it ends normally).
        self.tokens: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.streaming = asyncio.Event()
        self.closed = asyncio.Event()

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    async def stream(
        self, messages: Sequence[ChatMessage], usage: dict[str, int] | None = None, model: str | None = None
    ) -> AsyncGenerator[str]:
        self.streaming.set()
        try:
            while (token := await self.tokens.get()) is not None:
                if isinstance(token, BaseException):
                    raise token
                yield token
        finally:
            self.closed.set()


class Instance:
    def __init__(self, url: str, model: GatedModel, grace: float) -> None:
        settings = Settings(reply_grace_seconds=grace, rate_limit_messages=0)
        self.store = RedisHistoryStore(url, keep=20, timeout=1.0)
        chat = ChatService(cast(Any, model), Limits.from_settings(settings), settings.system_prompt)
        self.shared = SharedReplies(url, timeout=1.0)
        limits = InMemoryRateLimits(RateLimiter(0, 60))
        self.conversations = ConversationService(
            chat,
            signed_in=Backends(self.store, limits, self.shared),
            anonymous=Backends(InMemoryHistoryStore(20), limits, LocalReplies()),
            guests=GuestSessions(settings.guest_ttl_seconds),
        )
        self._connections = 0

    def connect(self, user: str = "ann") -> Caller:
        self._connections += 1
        return Caller(f"{id(self)}-{self._connections}", user)

    async def close(self) -> None:
        await self.conversations.close()
        await self.shared.close()
        await self.store.close()


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[Instance, Instance, GatedModel]]:
    model = GatedModel()
    a, b = Instance(redis_server.url, model, grace=0.3), Instance(redis_server.url, model, grace=0.3)
    await a.conversations.start_sharing()
    await b.conversations.start_sharing()
    yield a, b, model
    model.tokens.put_nowait(None)
    await a.close()
    await b.close()


async def items_until(follow: AsyncIterator[dict[str, object]], count: int) -> list[dict[str, object]]:
    got = []
    async with asyncio.timeout(NEVER):
        async for item in follow:
            got.append(item)
            if len(got) == count:
                break
    return got


async def test_a_reply_started_on_a_is_opened_and_followed_on_b(two: tuple[Instance, Instance, GatedModel]) -> None:
    a, b, model = two
    on_a = a.connect()
    started = await a.conversations.start(on_a, "default", "send", "hello there")
    for token in ("one ", "two "):
        model.tokens.put_nowait(token)
    live = a.conversations.follow(on_a, "default", 0)
    await items_until(live, 2)  # A has relayed both

    on_b = b.connect()
    opened = await b.conversations.open(on_b, "default")
    assert opened["messages"] == []
    reply = cast(dict[str, object], opened["reply"])
    assert reply["replyId"] == started["replyId"] and reply["running"] is True
    assert reply["userMessage"] == "hello there"

    following = b.conversations.follow(on_b, "default", 1)  # the client had chunk 1 already
    first = await items_until(following, 1)
    assert first == [{"sequence": 2, "text": "two "}]
    model.tokens.put_nowait("three")
    model.tokens.put_nowait(None)
    rest = [item async for item in following]
    assert rest[0] == {"sequence": 3, "text": "three"}
    assert rest[-1]["end"] == "completed" and rest[-1]["sequence"] == 3
    assert rest[-1]["replyId"] == started["replyId"]

    expected = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "one two three", "model": "gated"},  # labelled with its model
    ]
    assert (await b.conversations.open(on_b, "default"))["messages"] == expected
    assert (await a.conversations.open(on_a, "default"))["messages"] == expected
    assert (await b.conversations.open(on_b, "default"))["reply"] is None


async def test_one_reply_per_conversation_across_instances(two: tuple[Instance, Instance, GatedModel]) -> None:
    a, b, _ = two
    on_a, on_b = a.connect(), b.connect()
    created = await a.conversations.create(on_a, "Busy one")
    quiet = await b.conversations.create(on_b, "Quiet one")
    await a.conversations.start(on_a, created["id"], "send", "first")
    with pytest.raises(Rejected, match=BUSY):
        await b.conversations.start(on_b, created["id"], "send", "second")
    listed = {c["id"]: c["running"] for c in await b.conversations.list(on_b)}
    assert listed == {created["id"]: True, quiet["id"]: False}
    # nothing of a running reply stays in Redis for ever, should its owner die
    keys = await a.shared._redis.keys("*reply*")
    assert keys and all([await a.shared._redis.pttl(key) > 0 for key in keys]), keys


async def test_stop_on_b_stops_the_reply_on_a_which_is_stored(two: tuple[Instance, Instance, GatedModel]) -> None:
    a, b, model = two
    on_a = a.connect()
    await a.conversations.start(on_a, "default", "send", "stop me")
    model.tokens.put_nowait("partial")
    await items_until(a.conversations.follow(on_a, "default", 0), 1)

    on_b = b.connect()
    assert await b.conversations.stop(on_b, "default") is True
    await asyncio.wait_for(model.closed.wait(), NEVER)  # the upstream request was closed
    ended = [item async for item in b.conversations.follow(on_b, "default", 1)]
    assert ended == [{"sequence": 1, "end": "stopped", "replyId": ended[0]["replyId"]}]
    assert (await b.conversations.open(on_b, "default"))["messages"][-1] == {
        "role": "assistant",
        "content": "partial",
        "model": "gated",
    }
    assert await b.conversations.stop(on_b, "default") is False


async def test_stop_generation_and_clear_history_on_b_reach_a_seed_reply_on_a(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    a, b, model = two
    on_a, on_b = a.connect(), b.connect()
    relayed: asyncio.Queue[str] = asyncio.Queue()

    async def emit(token: str) -> None:
        relayed.put_nowait(token)

    sending = asyncio.create_task(a.conversations.reply(on_a, "seed message", emit))
    model.tokens.put_nowait("streamed")
    assert await asyncio.wait_for(relayed.get(), NEVER) == "streamed"
    await b.conversations.stop_default(on_b)  # StopGeneration from the user's tab on B
    assert await asyncio.wait_for(sending, NEVER) == "streamed"
    assert await b.conversations.history(on_b) == [
        {"role": "user", "content": "seed message"},
        {"role": "assistant", "content": "streamed"},
    ]

    sending = asyncio.create_task(a.conversations.reply(on_a, "another", emit))
    model.tokens.put_nowait("more")
    assert await asyncio.wait_for(relayed.get(), NEVER) == "more"
    await b.conversations.clear_default(on_b)  # ClearHistory from B: stop, stored, then cleared
    await asyncio.wait_for(sending, NEVER)
    assert await a.conversations.history(on_a) == [], "nothing in flight wrote into the cleared conversation"


async def test_a_follower_on_b_keeps_the_reply_going_then_its_grace_period_ends_it(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    a, b, model = two
    on_a = a.connect()
    await a.conversations.start(on_a, "default", "send", "long one")
    model.tokens.put_nowait("x")
    on_b = b.connect()
    following = b.conversations.follow(on_b, "default", 0)
    assert await items_until(following, 1) == [{"sequence": 1, "text": "x"}]

    await a.conversations.disconnected(on_a)  # the only watcher on A leaves; the client is on B now
    # well past A's grace period, the reply still runs: B's follower counts
    waited = asyncio.create_task(model.closed.wait())
    done, _ = await asyncio.wait([waited], timeout=1.5)
    assert not done, "stopped as abandoned while a client followed it on another instance"
    model.tokens.put_nowait("y")
    assert await items_until(following, 1) == [{"sequence": 2, "text": "y"}]

    await following.aclose()  # the client on B leaves too: after the grace period, stopped
    await asyncio.wait_for(waited, NEVER)


@pytest.mark.parametrize("how", ["process died", "stopped renewing its lease"])
async def test_when_the_owner_dies_b_says_so_and_takes_the_conversation_over(
    redis_server: RedisServer, how: str
) -> None:
    """A process that dies is known at once (Redis drops its subscription); an owner that is
    there but stuck is known when its lease lapses."""
    model = GatedModel()
    a, b = Instance(redis_server.url, model, grace=10), Instance(redis_server.url, model, grace=10)
    # a dead process must be known long before its lease would lapse
    a.shared.lease_seconds = 120.0 if how == "process died" else 1.0
    await a.conversations.start_sharing()
    await b.conversations.start_sharing()
    try:
        on_a, on_b = a.connect(), b.connect()
        await a.conversations.start(on_a, "default", "send", "doomed")
        model.tokens.put_nowait("half")
        following = b.conversations.follow(on_b, "default", 0)
        assert await items_until(following, 1) == [{"sequence": 1, "text": "half"}]
        assert (await b.conversations.open(on_b, "default"))["reply"] is not None
        for task in list(a.shared._mirror_tasks):  # nothing renews or ends A's reply any more
            task.cancel()
        if how == "process died":
            assert a.shared._listener is not None
            a.shared._listener.cancel()  # its socket to Redis closes, as the kernel closes a killed process's
            await asyncio.gather(a.shared._listener, return_exceptions=True)
        async with asyncio.timeout(NEVER):
            rest = [item async for item in following]
        assert rest == [{"sequence": 1, "end": "error", "replyId": rest[0]["replyId"], "error": OWNER_GONE}]
        assert (await b.conversations.open(on_b, "default"))["reply"] is None, "the turn is gone with its owner"
        await b.conversations.start(on_b, "default", "send", "again")  # not refused as busy
    finally:
        model.tokens.put_nowait(None)
        model.tokens.put_nowait(None)
        await a.close()
        await b.close()


async def test_with_redis_down_stop_still_stops_the_reply_here(
    two: tuple[Instance, Instance, GatedModel], redis_server: RedisServer
) -> None:
    """The owner's relay never needs Redis, and neither does stopping it from its own instance;
    from another instance, Stop fails with the clear error rather than claiming nothing runs."""
    a, b, model = two
    on_a, on_b = a.connect(), b.connect()
    await a.conversations.start(on_a, "default", "send", "stop me while Redis is away")
    model.tokens.put_nowait("partial")
    await items_until(a.conversations.follow(on_a, "default", 0), 1)
    redis_server.kill()
    with pytest.raises(HistoryUnavailable):
        await asyncio.wait_for(b.conversations.stop(on_b, "default"), NEVER)
    assert await asyncio.wait_for(a.conversations.stop(on_a, "default"), NEVER) is True
    await asyncio.wait_for(model.closed.wait(), NEVER)


async def test_clear_and_delete_on_b_stop_a_reply_on_a_before_they_empty_it(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    a, b, model = two
    on_a, on_b = a.connect(), b.connect()
    for operation in ("clear", "delete"):
        created = await a.conversations.create(on_a, f"To {operation}")
        key = f"user:ann/{created['id']}"
        await a.conversations.start(on_a, created["id"], "send", "a long question")
        model.tokens.put_nowait("some text")
        await items_until(a.conversations.follow(on_a, created["id"], 0), 1)
        if operation == "clear":
            await b.conversations.clear(on_b, created["id"])
        else:
            await b.conversations.delete(on_b, created["id"])
        # A stopped and stored its reply before B emptied the conversation: nothing after
        assert await a.store.load(key) == []
        listed = {c["id"] for c in await a.conversations.list(on_a)}
        assert (created["id"] in listed) is (operation == "clear")


async def test_a_reply_withdrawn_on_a_is_taken_back_from_b_and_never_replayed(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    a, b, model = two
    on_a, on_b = a.connect(), b.connect()
    started = await a.conversations.start(on_a, "default", "send", "tell me")
    model.tokens.put_nowait("bad ")
    model.tokens.put_nowait("words")
    await items_until(a.conversations.follow(on_a, "default", 0), 2)
    following = b.conversations.follow(on_b, "default", 0)
    assert await items_until(following, 2) == [{"sequence": 1, "text": "bad "}, {"sequence": 2, "text": "words"}]

    model.tokens.put_nowait(AiContentWithdrawn())
    end = {"end": "error", "error": POLICY, "withdrawn": True, "replyId": started["replyId"]}
    assert [item async for item in following] == [{"sequence": 2, **end}]
    # a client that comes now, on either instance, gets the end alone: nothing of it is replayed
    assert [item async for item in b.conversations.follow(b.connect(), "default", 0)] == [{"sequence": 0, **end}]
    assert (await b.conversations.open(on_b, "default"))["messages"] == []
    assert (await a.conversations.open(on_a, "default"))["messages"] == []


async def test_a_reply_cut_on_a_ends_cut_on_b_and_is_stored_marked(two: tuple[Instance, Instance, GatedModel]) -> None:
    a, b, model = two
    on_a, on_b = a.connect(), b.connect()
    await a.conversations.start(on_a, "default", "send", "a long one")
    model.tokens.put_nowait("half")
    await items_until(a.conversations.follow(on_a, "default", 0), 1)
    following = b.conversations.follow(on_b, "default", 0)
    model.tokens.put_nowait(AiCutShort())
    items = [item async for item in following]
    assert items[0] == {"sequence": 1, "text": "half"}
    assert (items[-1]["end"], items[-1]["cut"]) == ("completed", "length")
    messages = (await b.conversations.open(on_b, "default"))["messages"]
    assert messages == [
        {"role": "user", "content": "a long one"},
        {"role": "assistant", "content": "half", "cut": "length", "model": "gated"},
    ]


async def ends_in(redis: Any) -> list[Any]:
    """Every reply end written to a stream in Redis."""
    streams = [key async for key in redis.scan_iter(_type="STREAM")]
    return [entry for key in streams for _, entry in await redis.xrange(key) if b"end" in entry]


class GatedRelease:
    """Holds a.shared's lease release (the end of a reply's mirror) until `open` is set."""

    def __init__(self, shared: SharedReplies) -> None:
        self.reached = asyncio.Event()
        self.open = asyncio.Event()
        release = shared._release

        async def gated(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self.open.wait()
            return await release(*args, **kwargs)

        shared._release = gated  # type: ignore[method-assign]


async def test_the_next_message_on_the_same_instance_waits_for_the_ended_reply_to_let_go(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    """A client sends its next message as soon as it sees the end; the reply's lease may still be
    on its way out (its mirror writing the end to Redis): the start waits for that, never BUSY."""
    a, _, model = two
    gate = GatedRelease(a.shared)
    refused = asyncio.Event()
    alive = a.shared._alive

    async def watched(held: Any) -> Any:
        refused.set()  # the lease was found held
        return await alive(held)

    a.shared._alive = watched  # type: ignore[method-assign]
    on_a = a.connect()
    await a.conversations.start(on_a, "default", "send", "first")
    model.tokens.put_nowait("answer")
    model.tokens.put_nowait(None)
    items = [item async for item in a.conversations.follow(on_a, "default", 0)]
    assert items[-1]["end"] == "completed"
    async with asyncio.timeout(NEVER):
        await gate.reached.wait()  # the mirror is writing the end, the lease still held
        second = asyncio.create_task(a.conversations.start(on_a, "default", "send", "second"))
        await refused.wait()
        gate.open.set()
        started = await second
    assert started["replyId"] != items[-1]["replyId"]
    model.tokens.put_nowait(None)


async def test_when_a_reply_s_end_can_be_read_in_redis_its_lease_is_already_released(
    two: tuple[Instance, Instance, GatedModel],
) -> None:
    """The end and the release are one transaction: an instance that reads the end may start
    the conversation's next reply at once."""
    a, _, model = two
    gate = GatedRelease(a.shared)
    on_a = a.connect()
    await a.conversations.start(on_a, "default", "send", "first")
    model.tokens.put_nowait(None)
    redis = a.shared._redis
    async with asyncio.timeout(NEVER):
        await gate.reached.wait()
        leases = await redis.keys("*lease*")
        ends = await ends_in(redis)
        assert not (ends and leases), (ends, leases)
        gate.open.set()
        while await redis.keys("*lease*"):
            await asyncio.sleep(0.01)
    ends = await ends_in(redis)
    assert len(ends) == 1
