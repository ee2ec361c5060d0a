"""Many conversations per user (or guest), and replies that belong to a conversation.

A conversation is stored under a key made of its owner and its id; the owner's default
conversation is stored under the owner key itself, which is the seed's single history,
so SendMessage/AskAi and these methods see the same default conversation.

A reply runs in a task of its own (not in the invocation that asked for it), numbered
chunk by chunk in a `ReplyRun` that any client of the conversation can follow and
resume. Generation must not run on for nobody: when the last connection watching the
conversation goes, the reply is stopped after `reply_grace_seconds` unless one comes back.

With `shared` (HISTORY_STORE=redis), a signed-in user's replies are mirrored to Redis
(`shared_replies.py`): any instance shows, follows and stops them, one reply runs per
conversation across instances, and a client following on another instance counts as
watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..ai import AiError, AiFailed, ChatMessage
from ..settings import Settings
from ..signalr import HubCallerContext
from .guests import GuestSessions
from .history import ConversationInfo, HistoryStore, HistoryUnavailable
from .replies import Outcome, ReplyRun
from .service import GUEST_ITEM, TOO_LONG_FOR_MODEL, ChatService, Generation, Rejected
from .trimming import TooLongForModel, fit_to_budget

if TYPE_CHECKING:  # they import redis, an extra
    from .redis_guests import SharedGuestSessions
    from .shared_replies import SharedReplies

log = logging.getLogger(__name__)

DEFAULT = "default"
NEW_TITLE = "New chat"
TITLE_LENGTH = 60
MAX_TITLE_LENGTH = 200
#: A finished reply's chunks are kept this long, for clients that come back late.
KEPT_AFTER_END = 60.0
#: A cleared conversation can be restored for this long.
UNDO_SECONDS = 60.0
#: How long a stop waits for the replies it stopped to be stored.
STOP_WAIT_SECONDS = 5.0
CONTINUE_PROMPT = "Continue your previous reply exactly where it stopped, without repeating any of it."

NOT_FOUND = "Conversation not found."
BUSY = "A reply is still being written in this conversation. Stop it or wait for it to finish."
NOTHING_TO_REGENERATE = "There is no reply to regenerate."
NOTHING_TO_CONTINUE = "There is no reply to continue."
NOT_A_USER_MESSAGE = "Only your own messages can be edited."
BAD_TITLE = f"A title must be text of 1 to {MAX_TITLE_LENGTH} characters."
BAD_ID = "A conversation id must be text."
BAD_SEQUENCE = "The sequence must be a whole number."


def derive_title(message: str) -> str:
    """The first line of the first message, shortened at a word."""
    line = " ".join(message.strip().split("\n", 1)[0].split())
    if len(line) <= TITLE_LENGTH:
        return line or NEW_TITLE
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return cut + "…"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to ask the model, and the history to store with its reply."""

    context: list[ChatMessage]
    ask: ChatMessage
    result: Callable[[str], list[ChatMessage]]
    #: The reply only adds a turn: appended rather than rewritten.
    appends: bool = False


def _plan(kind: str, history: list[ChatMessage], text: str, index: int) -> _Plan:
    if kind == "send":
        user: ChatMessage = {"role": "user", "content": text}
        return _Plan(history, user, lambda reply: [user, {"role": "assistant", "content": reply}], appends=True)
    if kind == "edit":
        if not 0 <= index < len(history) or history[index]["role"] != "user":
            raise Rejected(NOT_A_USER_MESSAGE)
        before = history[:index]
        user = {"role": "user", "content": text}
        return _Plan(before, user, lambda reply: [*before, user, {"role": "assistant", "content": reply}])
    if kind == "regenerate":
        if len(history) < 2 or history[-1]["role"] != "assistant" or history[-2]["role"] != "user":
            raise Rejected(NOTHING_TO_REGENERATE)
        before, user = history[:-2], history[-2]
        return _Plan(before, user, lambda reply: [*before, user, {"role": "assistant", "content": reply}])
    # continue: the model sees its cut reply and is asked to go on; the new text extends it
    if not history or history[-1]["role"] != "assistant":
        raise Rejected(NOTHING_TO_CONTINUE)
    before, cut = history[:-1], history[-1]
    ask: ChatMessage = {"role": "user", "content": CONTINUE_PROMPT}
    return _Plan(history, ask, lambda reply: [*before, {"role": "assistant", "content": cut["content"] + reply}])


class ConversationService:
    def __init__(
        self,
        chat: ChatService,
        settings: Settings,
        shared: SharedReplies | None = None,
        shared_guests: SharedGuestSessions | None = None,
    ) -> None:
        self.chat = chat
        #: Guests every instance knows, their conversations in a Redis anonymous store.
        self.shared_guests = shared_guests
        #: Replies of the user store's conversations, shared with the other instances.
        self.shared = shared
        self.guests = GuestSessions(settings.guest_ttl_seconds)
        self.grace = settings.reply_grace_seconds
        self.kept_after_end = KEPT_AFTER_END
        self._runs: dict[str, ReplyRun] = {}
        #: Keys whose latest run is mirrored to `shared`.
        self._mirrored: set[str] = set()
        self._generations: dict[str, Generation] = {}
        self._stop_requested: set[str] = set()
        self._watching: dict[str, str] = {}
        self._watchers: dict[str, set[str]] = {}
        self._abandon: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._cleared: dict[str, tuple[list[ChatMessage], ConversationInfo, asyncio.TimerHandle]] = {}

    # -- who and where ------------------------------------------------------------
    def owner(self, context: HubCallerContext) -> str:
        user = context.user_identifier
        if user is not None:
            return f"user:{user}"
        guest = context.items.get(GUEST_ITEM)
        if isinstance(guest, str):
            self.guests.touch(guest)
            return f"guest:{guest}"
        return f"connection:{context.connection_id}"

    def _store(self, context: HubCallerContext) -> HistoryStore:
        return self.chat.user_store if context.user_identifier is not None else self.chat.anonymous_store

    def _sharing(self, store: HistoryStore) -> SharedReplies | None:
        """The shared replies, for conversations every instance sees: signed-in users', and
        guests' when guests are shared too."""
        if store is self.chat.user_store or self.shared_guests is not None:
            return self.shared
        return None

    async def start_sharing(self) -> None:
        if self.shared is not None:
            await self.shared.start(self._stop_here)

    @staticmethod
    def _key(owner: str, conversation_id: str) -> str:
        return owner if conversation_id == DEFAULT else f"{owner}/{conversation_id}"

    async def use_guest(self, context: HubCallerContext, guest_id: object) -> str | None:
        """Binds an anonymous connection to a guest (a new one unless `guest_id` is alive)."""
        if context.user_identifier is not None:
            return None
        if self.shared_guests is not None:
            guest = await self.shared_guests.use(guest_id)  # Redis forgets expired ones by itself
        else:
            for gone in self.guests.expired():
                await self._forget_owner(f"guest:{gone}")
            guest = self.guests.use(guest_id)
        context.items[GUEST_ITEM] = guest
        return guest

    async def _forget_owner(self, owner: str) -> None:
        store = self.chat.anonymous_store
        for info in await store.conversations(owner):
            await self._drop(owner, store, info.id)
        await store.clear(owner)

    # -- the list -----------------------------------------------------------------
    async def _find(self, owner: str, store: HistoryStore, conversation_id: object) -> ConversationInfo:
        if not isinstance(conversation_id, str):
            raise Rejected(BAD_ID)
        for info in await store.conversations(owner):
            if info.id == conversation_id:
                return info
        if conversation_id == DEFAULT:
            history = await store.load(owner)
            first = next((m["content"] for m in history if m["role"] == "user"), None)
            return ConversationInfo(DEFAULT, derive_title(first) if first else NEW_TITLE, 0.0, 0.0)
        raise Rejected(NOT_FOUND)

    async def list(self, context: HubCallerContext) -> list[dict[str, object]]:
        owner, store = self.owner(context), self._store(context)
        listed = await store.conversations(owner)
        if all(info.id != DEFAULT for info in listed) and await store.load(owner):
            listed.append(await self._find(owner, store, DEFAULT))  # the seed's history, never listed yet
        keys = [self._key(owner, info.id) for info in listed]
        running = [self._running(key) for key in keys]
        shared = self._sharing(store)
        if shared is not None:
            running = [
                here or elsewhere for here, elsewhere in zip(running, await shared.is_running(keys), strict=True)
            ]
        return [{**info.as_dict(), "running": on} for info, on in zip(listed, running, strict=True)]

    async def create(self, context: HubCallerContext, title: object) -> dict[str, object]:
        owner, store = self.owner(context), self._store(context)
        now = time.time()
        info = ConversationInfo(uuid.uuid4().hex[:16], self._title(title) if title is not None else NEW_TITLE, now, now)
        await store.save_conversation(owner, info)
        return info.as_dict()

    async def rename(self, context: HubCallerContext, conversation_id: object, title: object) -> dict[str, object]:
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        renamed = ConversationInfo(info.id, self._title(title), info.created or time.time(), time.time())
        await store.save_conversation(owner, renamed)
        return renamed.as_dict()

    async def delete(self, context: HubCallerContext, conversation_id: object) -> None:
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        await self._drop(owner, store, info.id)

    async def clear(self, context: HubCallerContext, conversation_id: object) -> None:
        """Stops its reply and empties it; it stays in the list, as a new chat. What it held
        is kept for UNDO_SECONDS, for RestoreConversation."""
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        key = self._key(owner, info.id)
        await self._stop_and_wait(key, store)
        history = await store.load(key)
        await self.chat.clear_key(key, store)
        now = time.time()
        await store.save_conversation(owner, ConversationInfo(info.id, NEW_TITLE, info.created or now, now))
        self._forget_cleared(key)
        if history:
            handle = asyncio.get_running_loop().call_later(UNDO_SECONDS, self._forget_cleared, key)
            self._cleared[key] = (history, info, handle)

    async def restore(self, context: HubCallerContext, conversation_id: object) -> bool:
        """Undoes a clear of the last UNDO_SECONDS, unless the conversation was used since."""
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        key = self._key(owner, info.id)
        cleared = self._cleared.get(key)
        if cleared is None or await self._running_anywhere(key, store) or await store.load(key):
            return False
        self._forget_cleared(key)
        history, before, _ = cleared
        await store.replace(key, history)
        await store.save_conversation(owner, ConversationInfo(info.id, before.title, info.created, time.time()))
        return True

    def _forget_cleared(self, key: str) -> None:
        cleared = self._cleared.pop(key, None)
        if cleared is not None:
            cleared[2].cancel()

    async def _stop_and_wait(self, key: str, store: HistoryStore) -> None:
        """Its reply stopped and stored, wherever it runs, so nothing lands after a clear."""
        run = self._runs.get(key)
        if run is not None and run.running:
            self._stop(key)
            if run.task is not None:
                await asyncio.gather(run.task, return_exceptions=True)
        shared = self._sharing(store)
        if shared is not None:
            await shared.stop(key)

    async def _drop(self, owner: str, store: HistoryStore, conversation_id: str) -> None:
        key = self._key(owner, conversation_id)
        await self._stop_and_wait(key, store)
        await self.chat.clear_key(key, store)
        await store.forget_conversation(owner, conversation_id)

    @staticmethod
    def _title(title: object) -> str:
        if not isinstance(title, str) or not title.strip() or len(title.strip()) > MAX_TITLE_LENGTH:
            raise Rejected(BAD_TITLE)
        return " ".join(title.split())

    # -- one conversation ---------------------------------------------------------
    async def open(self, context: HubCallerContext, conversation_id: object) -> dict[str, object]:
        """The conversation's messages and the reply running in it, consistent with each other:
        a reply being stored while the history was read is read again."""
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        key = self._key(owner, info.id)
        self._watch(context, key)
        shared = self._sharing(store)
        reply: dict[str, object] | None = None
        local = self._runs.get(key)
        if shared is not None and (local is None or not local.running):
            # the latest reply may be another instance's: read its mirror around the history
            while True:
                described, storing = await shared.describe(key)
                history = await store.load(key)
                if described is None or (await shared.describe(key))[1] == storing:
                    break
            reply = described if described is not None and not storing else None
        else:
            while True:
                run = self._runs.get(key)
                before = run is not None and run.storing
                history = await store.load(key)
                if run is None or run.storing == before:
                    break
            reply = run.describe() if run is not None and not run.storing else None
        return {
            **info.as_dict(),
            "messages": [{"role": m["role"], "content": m["content"]} for m in history],
            "reply": reply,
        }

    async def follow(
        self, context: HubCallerContext, conversation_id: object, after: object
    ) -> AsyncIterator[dict[str, object]]:
        """ResumeReply: the conversation's latest reply after chunk `after`, then live."""
        if isinstance(after, bool) or not isinstance(after, int):
            raise Rejected(BAD_SEQUENCE)
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        key = self._key(owner, info.id)
        self._watch(context, key)
        run = self._runs.get(key)
        shared = self._sharing(store)
        if shared is not None and (run is None or not run.running):
            async for item in shared.follow(key, after, linger=self.grace):
                yield item
            return
        if run is None:
            return
        async for item in run.follow(after):
            yield item

    # -- starting a reply -----------------------------------------------------------
    async def start(
        self, context: HubCallerContext, conversation_id: object, kind: str, text: object = None, index: object = 0
    ) -> dict[str, object]:
        owner, store = self.owner(context), self._store(context)
        info = await self._find(owner, store, conversation_id)
        key = self._key(owner, info.id)
        if self._running(key):
            raise Rejected(BUSY)
        message = await self.chat.check(context, text) if kind in ("send", "edit") else ""
        if kind == "edit" and (isinstance(index, bool) or not isinstance(index, int)):
            raise Rejected(NOT_A_USER_MESSAGE)
        position = index if isinstance(index, int) else 0
        if kind in ("regenerate", "continue"):
            await self.chat.check(context, "x")  # the rate limit counts these too
        history = await store.load(key)
        plan = _plan(kind, history, message, position)  # rejected here, before any task
        shown = None if kind == "continue" else plan.ask["content"]
        run = ReplyRun(info.id, shown, continues=kind == "continue")
        shared = self._sharing(store)
        if shared is not None:
            if self._running(key) or not await shared.claim(key, run):
                raise Rejected(BUSY)  # on this instance meanwhile, or on another
            self._mirrored.add(key)
        self._runs[key] = run
        self._stop_requested.discard(key)
        self._watch(context, key)
        run.task = asyncio.create_task(self._generate(run, owner, store, info, key, kind, message, position))
        self._tasks.add(run.task)
        run.task.add_done_callback(self._tasks.discard)
        return run.describe()

    async def _generate(
        self,
        run: ReplyRun,
        owner: str,
        store: HistoryStore,
        info: ConversationInfo,
        key: str,
        kind: str,
        message: str,
        index: int,
    ) -> None:
        try:
            outcome = await self._generate_in_turn(run, owner, store, info, key, kind, message, index)
            run.finish(*outcome)
        except Rejected as exc:
            run.finish("error", exc.user_message)
        except HistoryUnavailable as exc:
            log.warning("reply not stored: %s", exc)
            run.finish("error", exc.user_message)
        except BaseException:
            run.finish("error", AiFailed().user_message)
            raise
        finally:
            self._generations.pop(key, None)
            loop = asyncio.get_running_loop()
            loop.call_later(self.kept_after_end, self._expire, key, run)

    async def _generate_in_turn(
        self,
        run: ReplyRun,
        owner: str,
        store: HistoryStore,
        info: ConversationInfo,
        key: str,
        kind: str,
        message: str,
        index: int,
    ) -> tuple[Outcome, str | None]:
        chat = self.chat
        with chat.using(key) as conversation:
            async with conversation.lock:
                plan = _plan(kind, await store.load(key), message, index)  # the history may have moved on
                budget = chat.model.context_tokens - chat.model.max_output_tokens
                try:
                    prompt = fit_to_budget(chat.system, plan.context, plan.ask, budget, chat.model.count_tokens)
                except TooLongForModel:
                    raise Rejected(TOO_LONG_FOR_MODEL) from None
                if kind == "continue":
                    prompt = [*prompt[:-1], plan.ask]  # the cut reply stays just before the request
                generation = Generation("")
                self._generations[key] = generation
                conversation.generations.add(generation)
                if key in self._stop_requested:
                    generation.stop()
                parts: list[str] = []
                error: AiError | None = None
                usage: dict[str, int] = {}
                try:
                    if not generation.stopped:
                        await chat.relay(generation, prompt, parts, run.append, usage)
                except AiError as exc:
                    error = exc
                except asyncio.CancelledError:
                    await self._save(run, owner, store, info, key, plan, parts)
                    raise
                except Exception as exc:
                    log.exception("reply failed")
                    error = AiFailed()
                    error.__cause__ = exc
                finally:
                    conversation.generations.discard(generation)
                await self._save(run, owner, store, info, key, plan, parts)
                run.usage = usage or None  # where the provider reported it
                if error is not None:
                    return ("error", error.user_message)
                return ("stopped" if generation.stopped else "completed", None)

    async def _save(
        self,
        run: ReplyRun,
        owner: str,
        store: HistoryStore,
        info: ConversationInfo,
        key: str,
        plan: _Plan,
        parts: Sequence[str],
    ) -> None:
        """Stores the reply as far as it got; nothing generated, nothing stored (a retry does
        not repeat the question, and an edit or regenerate that failed loses nothing)."""
        if not parts:
            return
        run.storing = True
        shared = self._sharing(store)
        if shared is not None:
            await shared.storing(run)
        reply = "".join(parts)
        if plan.appends:
            await store.append(key, plan.result(reply))
        else:
            await store.replace(key, plan.result(reply))
        title = info.title
        if title == NEW_TITLE:
            first = next((m["content"] for m in plan.result(reply) if m["role"] == "user"), None)
            if first is None:
                first = next((m["content"] for m in plan.context if m["role"] == "user"), None)
            title = derive_title(first) if first else NEW_TITLE
        now = time.time()
        await store.save_conversation(owner, ConversationInfo(info.id, title, info.created or now, now))

    # -- stopping ---------------------------------------------------------------------
    def _running(self, key: str) -> bool:
        run = self._runs.get(key)
        return run is not None and run.running

    async def _running_anywhere(self, key: str, store: HistoryStore) -> bool:
        shared = self._sharing(store)
        return self._running(key) or (shared is not None and (await shared.is_running([key]))[0])

    async def stop(self, context: HubCallerContext, conversation_id: object) -> bool:
        """StopReply: stops the conversation's reply at once, whichever client started it,
        on whichever instance it runs."""
        owner, store = self.owner(context), self._store(context)
        if isinstance(conversation_id, str) and self._running(self._key(owner, conversation_id)):
            key = self._key(owner, conversation_id)  # its reply runs here: it exists, no need to ask the store
        else:
            key = self._key(owner, (await self._find(owner, store, conversation_id)).id)
        stopped = self._stop(key)
        shared = self._sharing(store)
        if shared is not None:
            try:
                stopped = await shared.stop(key) or stopped
            except HistoryUnavailable:
                if not stopped:
                    raise  # it may run elsewhere: say that Stop could not reach it
                log.warning("StopReply stopped the reply here; Redis did not answer, so no other instance was asked")
        return stopped

    async def stop_default(self, context: HubCallerContext) -> None:
        """StopGeneration, and ClearHistory before it clears: every reply of the caller's
        default conversation (a reply belongs to its conversation) stops, on every instance,
        and is stored before this returns."""
        key = self.chat.conversation_key(context)
        stopped = await self._stop_here(key)
        shared = self._sharing(self._store(context))
        if shared is not None:
            try:
                await shared.stop(key)
            except HistoryUnavailable:
                if not stopped:
                    raise
                log.warning("the replies here were stopped; Redis did not answer, so no other instance was asked")

    async def _stop_here(self, key: str) -> bool:
        """Stops this instance's replies of the conversation and waits until they are stored."""
        run = self._runs.get(key)
        own = self._generations.get(key)
        stopped = self._stop(key)
        generations = self.chat.stop_conversation(key)
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(g.done.wait()) for g in generations if g is not own
        ]
        if stopped and run is not None and run.task is not None:
            waits.append(asyncio.ensure_future(asyncio.gather(run.task, return_exceptions=True)))
        if waits:
            _, pending = await asyncio.wait(waits, timeout=STOP_WAIT_SECONDS)
            for future in pending:
                future.cancel()
        return stopped or bool(generations)

    def _stop(self, key: str) -> bool:
        if not self._running(key):
            return False
        self._stop_requested.add(key)
        generation = self._generations.get(key)
        if generation is not None:
            generation.stop()
        return True

    def _expire(self, key: str, run: ReplyRun) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]
            self._stop_requested.discard(key)
            self._mirrored.discard(key)

    # -- who is watching: a reply nobody is connected for is stopped after the grace period
    def _watch(self, context: HubCallerContext, key: str) -> None:
        connection = context.connection_id
        previous = self._watching.get(connection)
        if previous == key:
            return
        if previous is not None:
            self._unwatch(connection, previous)
        self._watching[connection] = key
        self._watchers.setdefault(key, set()).add(connection)
        handle = self._abandon.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _unwatch(self, connection: str, key: str) -> None:
        watchers = self._watchers.get(key)
        if watchers is None:
            return
        watchers.discard(connection)
        if watchers:
            return
        del self._watchers[key]
        if not self._running(key):
            return
        if self.grace <= 0:
            self._abandoned(key)
        else:
            self._abandon[key] = asyncio.get_running_loop().call_later(self.grace, self._abandoned, key)

    def _abandoned(self, key: str) -> None:
        self._abandon.pop(key, None)
        if key in self._watchers:
            return
        if key in self._mirrored and self.shared is not None:
            task = asyncio.create_task(self._abandon_unless_followed(self.shared, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif self._stop(key):
            log.info("reply stopped: nobody of its conversation came back within %s s", self.grace)

    async def _abandon_unless_followed(self, shared: SharedReplies, key: str) -> None:
        """A client following the reply on another instance keeps it going; checked again
        every `recheck` seconds, so the reply stops at most that long after the grace period
        of the last one that left (a follower that leaves stays counted for the grace period)."""
        try:
            followed = await shared.followed_elsewhere(key)
        except HistoryUnavailable:
            followed = False  # no follower elsewhere can read a reply without Redis either
        if key in self._watchers or not self._running(key):
            return
        if followed:
            recheck = max(1.0, min(self.grace, shared.lease_seconds / 3))
            self._abandon[key] = asyncio.get_running_loop().call_later(recheck, self._abandoned, key)
        elif self._stop(key):
            log.info("reply stopped: nobody of its conversation came back within %s s", self.grace)

    def disconnected(self, context: HubCallerContext) -> None:
        key = self._watching.pop(context.connection_id, None)
        if key is not None:
            self._unwatch(context.connection_id, key)

    async def close(self) -> None:
        for handle in self._abandon.values():
            handle.cancel()
        for key in list(self._cleared):
            self._forget_cleared(key)
        for key in list(self._runs):
            self._stop(key)
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()
        if self.shared_guests is not None:
            await self.shared_guests.close()
