"""The chat's rules, apart from any hub: validation, rate limits, history, and one
reply at a time per conversation that a user can stop.

Relaying a reply costs no extra task or queue per token: the upstream stream is read
in the caller's own task, and `Generation.stop` cancels that task only while it is
inside the relay loop, where the cancellation is caught and turned into a normal end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ai import AiError, AiFailed, AiReplyTooLong, AiTimedOut, ChatMessage, ChatModel
from ..settings import Settings
from ..signalr import HubCallerContext
from .history import HistoryStore, HistoryUnavailable
from .rate_limit import RateLimiter

if TYPE_CHECKING:  # it imports redis, an extra
    from .redis_rate_limit import SharedRateLimiter
from .trimming import TooLongForModel, fit_to_budget

log = logging.getLogger(__name__)

#: Where UseGuestSession keeps a connection's guest id (HubCallerContext.items).
GUEST_ITEM = "chat.guest"

EMPTY_MESSAGE = "Message cannot be empty."
NOT_TEXT = "Message must be text."
TOO_LONG_FOR_MODEL = "Message is too long for the model's context window. Please shorten it."


def too_long(limit: int) -> str:
    return f"Message is too long. The limit is {limit:,} characters."


def rate_limited(wait: float) -> str:
    seconds = max(1, round(wait))
    return f"You are sending messages too quickly. Please wait {seconds} second{'s' if seconds != 1 else ''}."


class Rejected(Exception):
    """A message the chat will not send to the model; the text is for the user."""

    @property
    def user_message(self) -> str:
        return str(self.args[0])


class Generation:
    """One reply in flight, stoppable from another invocation (StopGeneration) or by its deadlines."""

    __slots__ = ("connection_id", "done", "interrupts", "relaying", "stopped", "task", "timed_out")

    def __init__(self, connection_id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.connection_id = connection_id
        self.relaying = False
        self.stopped = False
        self.timed_out = False
        #: Cancellations of `task` made here; the relay loop takes them back.
        self.interrupts = 0
        self.done = asyncio.Event()

    def stop(self) -> None:
        """End the reply early but normally.

        A reply inside the relay loop is cancelled there; one still waiting for its
        turn sees the flag when its turn comes and ends without asking the model.
        """
        if self.stopped:
            return
        self.stopped = True
        if self.relaying:
            self._interrupt()

    def time_out(self) -> None:
        """A deadline passed: end the relay with an error (only the relay has deadlines)."""
        if self.stopped or self.timed_out or not self.relaying:
            return
        self.timed_out = True
        self._interrupt()

    def _interrupt(self) -> None:
        self.interrupts += 1
        self.task.cancel()


@dataclass(slots=True)
class _Conversation:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    generations: set[Generation] = field(default_factory=set)
    #: replies and clears using the conversation; it is forgotten at zero
    users: int = 0


class ChatService:
    def __init__(
        self,
        model: ChatModel,
        settings: Settings,
        *,
        anonymous_store: HistoryStore,
        user_store: HistoryStore,
        shared_limiter: SharedRateLimiter | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.anonymous_store = anonymous_store
        self.user_store = user_store
        self.limiter = RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_seconds)
        #: Signed-in users' limit, counted across instances (HISTORY_STORE=redis).
        self.shared_limiter = shared_limiter
        self.system: ChatMessage = {"role": "system", "content": settings.system_prompt}
        self._conversations: dict[str, _Conversation] = {}
        self._generations: dict[str, set[Generation]] = {}

    # -- who owns a conversation --------------------------------------------
    @staticmethod
    def conversation_key(context: HubCallerContext) -> str:
        """Signed-in users have one conversation across connections, and so do guests
        (UseGuestSession); other anonymous visitors, one per connection."""
        user = context.user_identifier
        if user is not None:
            return f"user:{user}"
        guest = context.items.get(GUEST_ITEM)
        return f"guest:{guest}" if isinstance(guest, str) else f"connection:{context.connection_id}"

    def _store(self, context: HubCallerContext) -> HistoryStore:
        return self.user_store if context.user_identifier is not None else self.anonymous_store

    @contextmanager
    def _using(self, key: str) -> Iterator[_Conversation]:
        """The conversation's state, kept while a reply or a clear uses it and forgotten after."""
        conversation = self._conversations.setdefault(key, _Conversation())
        conversation.users += 1
        try:
            yield conversation
        finally:
            conversation.users -= 1
            if conversation.users == 0:
                self._conversations.pop(key, None)

    def info(self) -> dict[str, object]:
        """The limit a composer counts against, and which model answers (the built-in one is
        a small offline demo whose answers are often wrong: front ends say so)."""
        provider, _, model = self.model.name.partition(":")
        return {
            "maxMessageLength": self.settings.max_message_length,
            "provider": provider,
            "model": model or provider,
            "offlineDemo": provider == "local",
        }

    # -- checks before any work ---------------------------------------------
    async def check(self, context: HubCallerContext, message: object) -> str:
        """The message to send, or Rejected with the text to show."""
        if message is None or (isinstance(message, str) and not message.strip()):
            raise Rejected(EMPTY_MESSAGE)
        if not isinstance(message, str):
            raise Rejected(NOT_TEXT)
        if len(message) > self.settings.max_message_length:
            raise Rejected(too_long(self.settings.max_message_length))
        key = self.conversation_key(context)
        if self.shared_limiter is not None and context.user_identifier is not None:
            wait = await self.shared_limiter.hit(key)
        else:
            wait = self.limiter.hit(key)
        if wait > 0:
            raise Rejected(rate_limited(wait))
        return message

    # -- one reply ---------------------------------------------------------------
    async def reply(
        self,
        context: HubCallerContext,
        message: str,
        emit: Callable[[str], Awaitable[None]],
    ) -> str:
        """Stream a reply to `message` through `emit`, store the turn, return the reply.

        Raises AiError (or Rejected) when nothing was generated; the turn is then not
        stored, so a retry does not repeat the question. A reply cut short by an error
        after some text is stored as far as it got, and the error is raised.
        """
        key = self.conversation_key(context)
        store = self._store(context)
        generation = Generation(context.connection_id)
        active = self._generations.setdefault(context.connection_id, set())
        active.add(generation)
        with self._using(key) as conversation:
            conversation.generations.add(generation)
            try:
                return await self._reply_in_turn(conversation, generation, store, key, message, emit)
            finally:
                generation.done.set()
                conversation.generations.discard(generation)
                active.discard(generation)
                if not active:
                    self._generations.pop(context.connection_id, None)

    async def _reply_in_turn(
        self,
        conversation: _Conversation,
        generation: Generation,
        store: HistoryStore,
        key: str,
        message: str,
        emit: Callable[[str], Awaitable[None]],
    ) -> str:
        """Wait for the conversation's turn, then relay and store the reply."""
        async with conversation.lock:
            user_turn: ChatMessage = {"role": "user", "content": message}
            history = await store.load(key)
            budget = self.model.context_tokens - self.model.max_output_tokens
            try:
                prompt = fit_to_budget(self.system, history, user_turn, budget, self.model.count_tokens)
            except TooLongForModel:
                raise Rejected(TOO_LONG_FOR_MODEL) from None
            if generation.stopped:  # stopped while waiting for its turn: never asked
                return ""
            parts: list[str] = []
            error: AiError | None = None
            try:
                await self._relay(generation, prompt, parts, emit)
            except AiError as exc:
                error = exc
            except asyncio.CancelledError:
                if parts:
                    await self._store_turn(store, key, user_turn, parts)
                raise
            except Exception as exc:
                log.exception("reply failed")
                error = AiFailed()
                error.__cause__ = exc
            if parts:
                await self._store_turn(store, key, user_turn, parts)
            if error is not None:
                raise error
            return "".join(parts)

    async def _relay(
        self,
        generation: Generation,
        prompt: list[ChatMessage],
        parts: list[str],
        emit: Callable[[str], Awaitable[None]],
        usage: dict[str, int] | None = None,
    ) -> None:
        """Relay the model's tokens, within the reply's length limit and deadlines.

        The deadlines are two timers per reply, not a timeout per token: one for the first
        token, one for the whole reply. Either cancels the relay as stop() does, and the
        cancellation is turned into AiTimedOut here.
        """
        settings = self.settings
        limit = settings.max_reply_length
        loop = asyncio.get_running_loop()
        first_token = loop.call_later(settings.reply_first_token_timeout_seconds, generation.time_out)
        whole_reply = loop.call_later(settings.reply_timeout_seconds, generation.time_out)
        length = 0
        generation.relaying = True
        try:
            async with aclosing(self.model.stream(prompt, usage)) as tokens:
                async for token in tokens:
                    if type(token) is not str:
                        log.warning("the model yielded a %s, not text", type(token).__name__)
                        raise AiFailed
                    first_token.cancel()
                    length += len(token)
                    if length > limit:  # leaving the block stops the model: nothing more is asked for
                        token = token[: len(token) - (length - limit)]
                        if token:
                            parts.append(token)
                            await emit(token)
                        log.warning("reply cut at %d characters (MAX_REPLY_LENGTH)", limit)
                        raise AiReplyTooLong
                    parts.append(token)
                    await emit(token)
        except asyncio.CancelledError:
            # stop() and the deadlines are the only cancellations to swallow
            task = generation.task
            if generation.interrupts == 0 or task.cancelling() > generation.interrupts:
                raise
            for _ in range(generation.interrupts):
                task.uncancel()
            if not generation.stopped:
                log.warning(
                    "reply timed out: %s",
                    "no text within the first-token deadline" if not parts else "still streaming at the deadline",
                )
                raise AiTimedOut from None
        finally:
            generation.relaying = False
            first_token.cancel()
            whole_reply.cancel()

    async def _store_turn(self, store: HistoryStore, key: str, user_turn: ChatMessage, parts: list[str]) -> None:
        await store.append(key, [user_turn, {"role": "assistant", "content": "".join(parts)}])

    async def stream(self, context: HubCallerContext, message: str) -> AsyncIterator[str]:
        """The reply as an async iterator, for streaming hub methods.

        The reply runs in a task of its own feeding a queue, because the consumer here
        is the hub's stream loop: closing the iterator (the client disposed the
        subscription) cancels that task and with it the upstream request.
        """
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        async def emit(token: str) -> None:
            queue.put_nowait(token)

        async def produce() -> None:
            try:
                await self.reply(context, message, emit)
                queue.put_nowait(None)
            except BaseException as exc:
                queue.put_nowait(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

        producer = asyncio.create_task(produce())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    # -- controls ------------------------------------------------------------
    def stop_conversation(self, key: str) -> list[Generation]:
        """Stop every reply of the conversation, whichever connection asked (StopGeneration:
        a reply belongs to its conversation); the ones stopped now."""
        conversation = self._conversations.get(key)
        generations = [g for g in conversation.generations if not g.stopped] if conversation is not None else []
        for generation in generations:
            generation.stop()
        return generations

    def replies_in_flight(self) -> list[Generation]:
        """Every reply streaming or waiting for its turn (a graceful stop waits for them)."""
        return [g for active in self._generations.values() for g in active]

    def stop_all(self) -> int:
        """Stop every reply (a graceful stop's limit is up); each is stored as far as it got."""
        generations = [g for active in self._generations.values() for g in active if not g.stopped]
        for generation in generations:
            generation.stop()
        return len(generations)

    async def clear(self, context: HubCallerContext) -> None:
        """Stop every reply of the conversation (a user's other tabs too), then reset it
        to the system prompt: nothing in flight can write into the fresh conversation."""
        key = self.conversation_key(context)
        with self._using(key) as conversation:
            for generation in list(conversation.generations):
                generation.stop()
            async with conversation.lock:
                await self._store(context).clear(key)

    async def clear_key(self, key: str, store: HistoryStore) -> None:
        """`clear` for a conversation named by its key (the conversation service's)."""
        with self._using(key) as conversation:
            for generation in list(conversation.generations):
                generation.stop()
            async with conversation.lock:
                await store.clear(key)

    #: For the conversation service, which runs replies in tasks of their own.
    using = _using
    relay = _relay

    async def history(self, context: HubCallerContext) -> list[ChatMessage]:
        return await self._store(context).load(self.conversation_key(context))

    async def disconnected(self, context: HubCallerContext) -> None:
        """Abort the connection's replies at once; forget an anonymous conversation."""
        generations = list(self._generations.get(context.connection_id, ()))
        for generation in generations:
            if generation.relaying:
                generation.stop()
            else:
                generation.task.cancel()  # still waiting for its turn
        if generations:
            await asyncio.wait([asyncio.ensure_future(g.done.wait()) for g in generations], timeout=5)
        key = self.conversation_key(context)
        if key.startswith("connection:"):  # a guest's conversation outlives the connection
            self.limiter.forget(key)
            try:
                await self.anonymous_store.clear(key)
            except HistoryUnavailable as exc:  # a Redis store's keys expire by themselves
                log.warning("an anonymous conversation was not cleared at disconnect: %s", exc)
