"""Many conversations per user (or guest), and replies that belong to a conversation.

A conversation is stored under a key made of its owner and its id (`conversation_key`:
both escaped, so no user id, guest id or conversation id can spell another owner's key); the
owner's default conversation is stored under the owner alone, which is the seed's single
history, so SendMessage/AskAi and these methods see the same default conversation.

Every reply goes through one pipeline (`_generate`): wait for the conversation's turn,
plan what to ask, relay, store, end. The seed methods (SendMessage, AskAi, StreamMessage)
are thin adapters over it (`reply`): their reply runs in the invocation and belongs to its
connection. A conversation's reply (StartReply...) runs in a task of its own, numbered
chunk by chunk in a `ReplyRun` that any client of the conversation can follow and resume.
Generation must not run on for nobody: when the last connection watching the conversation
goes, the reply is stopped after the grace period unless one comes back.

Two ends besides completed, stopped and failed are decided here, once, for every method: a
reply cut at a length limit (`AiCutShort`) is stored with `cut: "length"` and ends completed
with that mark (continuing it takes the mark away once the continuation finishes normally);
a reply withdrawn by a late content filter signal (`AiContentWithdrawn`) is treated as an
error before any text: nothing of it is stored, its chunks are dropped, and its end says so.

The backends are chosen once, by the composition root: per kind of owner a `Backends`
(history, rate limits, reply sharing) and the guests. With HISTORY_STORE=redis the reply
sharing is `SharedReplies` (any instance shows, follows and stops a reply, one reply runs
per conversation across instances, a client following on another instance counts as
watching); else `LocalReplies`, for which nothing runs elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from ..ai import AiContentWithdrawn, AiCutShort, AiError, AiFailed, AiReplyTooLong, Attachment, ChatMessage, Cut
from ..ai.attachments import data_url, is_image
from .addresses import AddressLimits
from .attachments import (
    UNKNOWN_ATTACHMENT,
    AttachmentPolicy,
    PendingUploads,
    checked,
    described,
    file_of,
    no_images,
    read_limited,
    too_long_for_model,
    too_many,
)
from .export import BAD_FORMAT, FORMATS, export
from .guests import Guests
from .history import ConversationInfo, HistoryUnavailable, Listed, conversation_key, owns_key, search_pattern
from .replies import ReplyRun
from .service import Backends, Caller, ChatService, Rejected, Reply, rate_limited, too_many_guests

log = logging.getLogger(__name__)

DEFAULT = "default"
NEW_TITLE = "New chat"
TITLE_LENGTH = 60
MAX_TITLE_LENGTH = 200
#: A finished reply's chunks are kept this long, for clients that come back late.
KEPT_AFTER_END = 60.0
#: A cleared conversation can be restored for this long.
UNDO_SECONDS = 60.0
#: How long a stop (or a disconnect) waits for the replies it stopped to be stored.
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
MAX_QUERY_LENGTH = 200
MAX_PAGE_SIZE = 50
BAD_QUERY = f"A search must be text of 1 to {MAX_QUERY_LENGTH} characters."
BAD_PAGE = "The page must be a whole number from 1."
BAD_PAGE_SIZE = f"The page size must be a whole number from 1 to {MAX_PAGE_SIZE}."
#: Conversations searched per call of the store (each at most MAX_HISTORY_MESSAGES messages).
SEARCH_BATCH = 50
#: A snippet shows this many characters before the match, and about this many in all.
SNIPPET_BEFORE = 40
SNIPPET_LENGTH = 120


def derive_title(message: str) -> str:
    """The first line of the first message, shortened at a word."""
    line = " ".join(message.strip().split("\n", 1)[0].split())
    if len(line) <= TITLE_LENGTH:
        return line or NEW_TITLE
    cut = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return cut + "…"


def snippet(text: str, pattern: re.Pattern[str]) -> tuple[str, int, int]:
    """A short piece of `text` around the first match of `pattern` ("…" where it was cut,
    whitespace collapsed), and where the match is in it."""
    found = pattern.search(text)
    start, end = found.span() if found is not None else (0, 0)
    begin = max(0, start - SNIPPET_BEFORE)
    finish = min(len(text), max(end, begin + SNIPPET_LENGTH))

    def collapsed(part: str) -> str:
        return re.sub(r"\s+", " ", part)

    before = ("…" if begin > 0 else "") + collapsed(text[begin:start]).lstrip()
    hit = collapsed(text[start:end])
    after = collapsed(text[end:finish]).rstrip() + ("…" if finish < len(text) else "")
    return before + hit + after, len(before), len(before) + len(hit)


def _whole(value: object, low: int, high: int | None, refusal: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise Rejected(refusal)
    return value


def _shown(history: list[ChatMessage], labelled: bool = True) -> list[dict[str, object]]:
    """The messages for a client, each reply with its cut mark; with `labelled`, also with the
    model that wrote it (GetConversation). GetHistory keeps the seed-era shape, {role, content},
    plus the marks (`cut`, `interrupted`) that the front ends act on."""
    shown: list[dict[str, object]] = []
    for m in history:
        message: dict[str, object] = {"role": m["role"], "content": m["content"]}
        if "cut" in m:
            message["cut"] = m["cut"]
        if labelled and "model" in m:
            message["model"] = m["model"]
        if labelled and m.get("attachments"):  # metadata only: GetAttachment gives a file's content
            message["attachments"] = [described(a) for a in m["attachments"]]
        shown.append(message)
    return shown


def _written_by(model: str, reply: str, cut: Cut | None = None) -> ChatMessage:
    """A reply to store, labelled with the model that wrote it, and marked when it was cut short."""
    message: ChatMessage = {"role": "assistant", "content": reply}
    if model:
        message["model"] = model
    if cut is not None:
        message["cut"] = cut
    return message


def _continued_by(cut: ChatMessage, model: str, more: str, mark: Cut | None) -> ChatMessage:
    """A cut reply extended by ContinueReply: labelled with every model that wrote part of it."""
    before = cut.get("model", "")
    label = before if model in before.split(" + ") else f"{before} + {model}" if before else model
    return _written_by(label, cut["content"] + more, mark)


def _titled(message: ChatMessage) -> str:
    """What a conversation is named after: its first message, or the names of the files sent alone."""
    return message["content"] or ", ".join(a["name"] for a in message.get("attachments", ()))


def _asked(history: list[ChatMessage]) -> str | None:
    """The last message when it is the user's: its reply is being written, or was interrupted."""
    return history[-1]["content"] if history and history[-1]["role"] == "user" else None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to ask the model, and the history to store with its reply."""

    context: list[ChatMessage]
    ask: ChatMessage
    #: The history to store, from the reply's text and its cut mark.
    result: Callable[[str, Cut | None], list[ChatMessage]]
    #: The reply only adds a turn: appended rather than rewritten.
    appends: bool = False
    #: The reply extends the last one (ContinueReply of a cut reply).
    continues: bool = False
    #: The continued reply's mark: it stays unless the continuation finishes normally.
    kept: Cut | None = None


def _plan(
    kind: str, history: list[ChatMessage], text: str, index: int, model: str = "", files: Sequence[Attachment] = ()
) -> _Plan:
    """`model`: the one that will write the reply, for its label. `files`: a sent message's
    attachments (an edited message keeps its own)."""
    if kind == "send":
        user: ChatMessage = {"role": "user", "content": text}
        if files:
            user["attachments"] = list(files)
        return _Plan(history, user, lambda reply, cut: [user, _written_by(model, reply, cut)], appends=True)
    if kind == "edit":
        if not 0 <= index < len(history) or history[index]["role"] != "user":
            raise Rejected(NOT_A_USER_MESSAGE)
        before = history[:index]
        user = {"role": "user", "content": text}
        if history[index].get("attachments"):
            user["attachments"] = history[index]["attachments"]
        return _Plan(before, user, lambda reply, cut: [*before, user, _written_by(model, reply, cut)])
    if kind == "regenerate":
        if len(history) < 2 or history[-1]["role"] != "assistant" or history[-2]["role"] != "user":
            raise Rejected(NOTHING_TO_REGENERATE)
        before, user = history[:-2], history[-2]
        return _Plan(before, user, lambda reply, cut: [*before, user, _written_by(model, reply, cut)])
    # continue: the model sees its cut reply and is asked to go on; the new text extends it
    if not history:
        raise Rejected(NOTHING_TO_CONTINUE)
    if history[-1]["role"] == "user":
        # an interrupted turn (the server stopped before its reply was stored): answered now
        before, user = history[:-1], history[-1]
        return _Plan(before, user, lambda reply, cut: [*before, user, _written_by(model, reply, cut)])
    before, cut = history[:-1], history[-1]
    ask: ChatMessage = {"role": "user", "content": CONTINUE_PROMPT}
    return _Plan(
        history,
        ask,
        lambda reply, mark: [*before, _continued_by(cut, model, reply, mark)],
        continues=True,
        kept=cut.get("cut"),
    )


@dataclass(slots=True)
class _Conversation:
    """What this instance knows of one conversation, kept while anything here uses it."""

    backends: Backends
    #: One reply at a time: the next one waits for its turn here.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Replies in flight: streaming or waiting for their turn.
    replies: set[Reply] = field(default_factory=set)
    #: The latest reply clients can follow (StartReply...), kept KEPT_AFTER_END after it ended.
    latest: Reply | None = None
    #: The connections watching it, and the timer that stops a reply nobody watches.
    watchers: set[str] = field(default_factory=set)
    abandon: asyncio.TimerHandle | None = None
    #: What a clear emptied, for RestoreConversation, and the timer that forgets it.
    cleared: tuple[list[ChatMessage], ConversationInfo, asyncio.TimerHandle] | None = None
    #: Clears in progress.
    users: int = 0

    @property
    def idle(self) -> bool:
        return (
            not self.users
            and not self.replies
            and self.latest is None
            and not self.watchers
            and self.abandon is None
            and self.cleared is None
        )

    @property
    def running(self) -> Reply | None:
        """The followable reply, while it runs."""
        latest = self.latest
        return latest if latest is not None and latest.run is not None and latest.run.running else None


class ConversationService:
    """The chat's conversations and its one reply pipeline: every ChatHub method goes through it, so each
    reply is planned, relayed, stored and ended the same way, over backends chosen once."""

    def __init__(
        self,
        chat: ChatService,
        *,
        signed_in: Backends,
        anonymous: Backends,
        guests: Guests,
        addresses: AddressLimits | None = None,
        attachments: AttachmentPolicy | None = None,
    ) -> None:
        self.chat = chat
        #: The limits on files, and which models read images.
        self.attachments = attachments if attachments is not None else AttachmentPolicy()
        self.uploads = PendingUploads()
        self.signed_in = signed_in
        self.anonymous = anonymous
        self.guests = guests
        #: Anonymous callers counted per client address too (None: not counted).
        self.addresses = addresses
        self.grace = chat.limits.reply_grace
        self.kept_after_end = KEPT_AFTER_END
        self._conversations: dict[str, _Conversation] = {}
        #: The conversation each connection watches.
        self._watching: dict[str, str] = {}
        #: The seed replies of each connection (they end when it goes).
        self._seed_replies: dict[str, set[Reply]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- who and where ------------------------------------------------------------
    def owner(self, caller: Caller) -> str:
        if caller.guest is not None:
            self.guests.touch(caller.guest)
        return caller.owner

    def backends(self, caller: Caller) -> Backends:
        return self.signed_in if caller.signed_in else self.anonymous

    def _conversation(self, key: str, backends: Backends) -> _Conversation:
        conversation = self._conversations.get(key)
        if conversation is None:
            conversation = self._conversations[key] = _Conversation(backends)
        return conversation

    def _tidy(self, key: str) -> None:
        """Forgets the conversation once nothing here uses it."""
        conversation = self._conversations.get(key)
        if conversation is not None and conversation.idle:
            del self._conversations[key]

    def _running(self, key: str) -> Reply | None:
        conversation = self._conversations.get(key)
        return conversation.running if conversation is not None else None

    async def start_sharing(self) -> None:
        await self.signed_in.replies.start(self._stop_here)
        if self.anonymous.replies is not self.signed_in.replies:
            await self.anonymous.replies.start(self._stop_here)

    @staticmethod
    def _key(owner: str, conversation_id: str) -> str:
        return conversation_key(owner, conversation_id, DEFAULT)

    async def use_guest(self, caller: Caller, guest_id: object) -> str | None:
        """An anonymous connection becomes a guest (a new one unless `guest_id` is alive);
        the hub keeps the id for the connection's next calls."""
        if caller.signed_in:
            return None
        for gone in await self.guests.expired():
            await self._forget_owner(f"guest:{gone}")
        if await self.guests.renew(guest_id):
            assert isinstance(guest_id, str)
            return guest_id
        if self.addresses is not None:  # a new guest counts against the address it comes from
            wait = await self.addresses.new_guest(caller.address)
            if wait > 0:
                raise Rejected(too_many_guests(wait))
        return await self.guests.issue()

    async def _count_address(self, caller: Caller) -> None:
        """An anonymous message counts against its address too, whichever guest or connection
        sent it (after the caller's own limit allowed it)."""
        if self.addresses is not None and not caller.signed_in:
            wait = await self.addresses.message(caller.address)
            if wait > 0:
                raise Rejected(rate_limited(wait))

    async def _forget_owner(self, owner: str) -> None:
        backends = self.anonymous
        for info in await backends.history.conversations(owner):
            await self._drop(owner, backends, info.id)
        await backends.history.clear(self._key(owner, DEFAULT))

    def history_problem(self) -> str | None:
        """For /readyz: why a history store refuses writes (SQLite full or read-only), if one does."""
        for store in (self.signed_in.history, self.anonymous.history):
            problem = getattr(store, "problem", None)
            if problem is not None:
                return str(problem)
        return None

    def info(self) -> dict[str, object]:
        """GetChatInfo: the chat's limits and models, the limits on attachments, and which models
        read images (a front end refuses an image before uploading it for any other)."""
        return {
            **self.chat.info(),
            "attachments": self.attachments.info(),
            "visionModels": [m for m in self.chat.models if self._reads_images(m)],
        }

    def _reads_images(self, model: str) -> bool:
        return self.attachments.reads_images(model, self.chat.model.name.partition(":")[0])

    # -- attachments (attachments.py) ---------------------------------------------------
    async def upload(
        self, caller: Caller, conversation_id: object, file: object, chunks: AsyncIterator[object]
    ) -> dict[str, object]:
        """UploadAttachment: checks the conversation, the count, the type and (for an image) that
        the conversation's model reads images before reading a byte; then reads the chunks up to
        the size limit, checks the content and keeps the file for the message that sends it."""
        owner, _, info, _ = await self._located(caller, conversation_id)
        policy = self.attachments
        name, declared = file_of(file)
        if self.uploads.count(owner) >= policy.max_files:
            raise Rejected(too_many(policy.max_files))
        kind = policy.kind(name, declared)
        model = self.chat.model_for(info.model)
        if kind.startswith("image/") and not self._reads_images(model):
            raise Rejected(no_images(model))
        attachment = checked(name, kind, await read_limited(chunks, policy.max_bytes))
        try:  # a file that could never be sent: said now, not when the message is
            self.chat.prompt([], {"role": "user", "content": "", "attachments": [attachment]})
        except Rejected:
            raise Rejected(too_long_for_model(name)) from None
        if self.uploads.count(owner) >= policy.max_files:  # others arrived meanwhile
            raise Rejected(too_many(policy.max_files))
        self.uploads.add(owner, info.id, attachment)
        return described(attachment)

    async def attachment(self, caller: Caller, conversation_id: object, attachment_id: object) -> dict[str, object]:
        """GetAttachment: a stored attachment of the conversation with its content as a data URL
        (an image shown again after a reload); an unknown id, or another owner's, is refused alike."""
        _, backends, _, key = await self._located(caller, conversation_id)
        for message in await backends.history.load(key):
            for attachment in message.get("attachments", ()):
                if attachment["id"] == attachment_id:
                    return {**described(attachment), "url": data_url(attachment)}
        raise Rejected(UNKNOWN_ATTACHMENT)

    async def check(self, caller: Caller, message: object) -> str:
        """The message to send, or Rejected with the text to show (rate limit counted)."""
        checked = await self.chat.check(message, self.backends(caller).rate_limits, self.owner(caller))
        await self._count_address(caller)
        return checked

    # -- the seed's single history: the owner's default conversation ----------------------
    async def reply(self, caller: Caller, message: str, emit: Callable[[str], Awaitable[None]]) -> str:
        """SendMessage / AskAi: a reply to a checked `message` in the default conversation,
        relayed through `emit` in the caller's own task; the reply's text.

        Raises AiError (or Rejected) when nothing was generated; the turn is then not
        stored, so a retry does not repeat the question. A reply cut short by an error
        after some text is stored as far as it got, and the error is raised (AiReplyTooLong
        at MAX_REPLY_LENGTH, as the seed methods always said; AiContentWithdrawn when a late
        filter signal took it back, and then nothing of it is stored). A reply the model
        itself stopped at its token limit ends normally, as it always did for these methods
        (their events have no mark), and is stored marked cut.
        """
        task = asyncio.current_task()
        assert task is not None
        reply = Reply(task, caller.connection_id, None)
        connection = self._seed_replies.setdefault(caller.connection_id, set())
        connection.add(reply)
        try:
            text, error = await self._generate(
                reply, self.backends(caller), self.owner(caller), DEFAULT, None, "send", message, 0, emit
            )
        finally:
            reply.done.set()
            connection.discard(reply)
            if not connection:
                self._seed_replies.pop(caller.connection_id, None)
        model_limit = isinstance(error, AiCutShort) and not isinstance(error, AiReplyTooLong) and bool(text)
        if error is not None and not model_limit:
            raise error
        return text

    async def stream(self, caller: Caller, message: str) -> AsyncIterator[str]:
        """StreamMessage: the reply as an async iterator, for streaming hub methods.

        The reply runs in a task of its own feeding a queue, because the consumer here
        is the hub's stream loop: closing the iterator (the client disposed the
        subscription) cancels that task and with it the upstream request.
        """
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        async def emit(token: str) -> None:
            queue.put_nowait(token)

        async def produce() -> None:
            try:
                await self.reply(caller, message, emit)
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

    async def history(self, caller: Caller) -> list[dict[str, object]]:
        """GetHistory: the default conversation's messages; a last user message whose reply is
        not being written anywhere is marked `interrupted` (the server stopped mid-reply)."""
        key, backends = self._key(self.owner(caller), DEFAULT), self.backends(caller)
        history = await backends.history.load(key)
        messages = _shown(history, labelled=False)
        if (
            _asked(history) is not None
            and not self._busy_here(key)
            and not (await backends.replies.is_running([key]))[0]
        ):
            messages[-1]["interrupted"] = True
        return messages

    async def stop_default(self, caller: Caller) -> None:
        """StopGeneration, and ClearHistory before it clears: every reply of the caller's
        default conversation (a reply belongs to its conversation) stops, on every instance,
        and is stored before this returns."""
        key = self._key(self.owner(caller), DEFAULT)
        await self._stop_elsewhere(key, self.backends(caller), await self._stop_here(key))

    async def clear_default(self, caller: Caller) -> None:
        """ClearHistory: every reply stopped and stored, on every instance, then emptied."""
        await self.stop_default(caller)
        await self._empty(self._key(self.owner(caller), DEFAULT), self.backends(caller))

    # -- the list -----------------------------------------------------------------
    async def _find(self, owner: str, backends: Backends, conversation_id: object) -> ConversationInfo:
        if not isinstance(conversation_id, str):
            raise Rejected(BAD_ID)
        store = backends.history
        info = await self._entry(owner, backends, conversation_id)
        if info is not None:
            return info
        if conversation_id == DEFAULT:
            history = await store.load(self._key(owner, DEFAULT))
            first = next((m["content"] for m in history if m["role"] == "user"), None)
            return ConversationInfo(DEFAULT, derive_title(first) if first else NEW_TITLE, 0.0, 0.0)
        raise Rejected(NOT_FOUND)

    @staticmethod
    async def _entry(owner: str, backends: Backends, conversation_id: str) -> ConversationInfo | None:
        """The conversation's stored list entry as it is now (None when not listed)."""
        for info in await backends.history.conversations(owner):
            if info.id == conversation_id:
                return info
        return None

    def _described(self, info: ConversationInfo) -> dict[str, object]:
        """An entry for a client: its model is the one its replies use (the default when it chose
        none, or chose one the server no longer offers)."""
        return {**info.as_dict(), "model": self.chat.model_for(info.model)}

    async def _located(self, caller: Caller, conversation_id: object) -> tuple[str, Backends, ConversationInfo, str]:
        """The owner, their backends, the conversation's entry and its key; Rejected when unknown."""
        owner, backends = self.owner(caller), self.backends(caller)
        info = await self._find(owner, backends, conversation_id)
        return owner, backends, info, self._key(owner, info.id)

    async def _listed(self, owner: str, backends: Backends) -> list[ConversationInfo]:
        """The owner's conversations, newest first, and the seed's history when it holds
        messages but was never listed (it comes last: it has no time)."""
        store = backends.history
        listed = await store.conversations(owner)
        if all(info.id != DEFAULT for info in listed) and await store.load(self._key(owner, DEFAULT)):
            listed.append(await self._find(owner, backends, DEFAULT))
        return listed

    async def list(self, caller: Caller) -> list[dict[str, object]]:
        owner, backends = self.owner(caller), self.backends(caller)
        listed = await self._listed(owner, backends)
        keys = [self._key(owner, info.id) for info in listed]
        elsewhere = await backends.replies.is_running(keys)
        running = [self._running(key) is not None or there for key, there in zip(keys, elsewhere, strict=True)]
        return [{**self._described(info), "running": on} for info, on in zip(listed, running, strict=True)]

    async def create(self, caller: Caller, title: object) -> dict[str, object]:
        owner, store = self.owner(caller), self.backends(caller).history
        now = time.time()
        info = ConversationInfo(uuid.uuid4().hex[:16], self._title(title) if title is not None else NEW_TITLE, now, now)
        await store.save_conversation(owner, info)
        return self._described(info)

    async def rename(self, caller: Caller, conversation_id: object, title: object) -> dict[str, object]:
        owner, backends, info, _ = await self._located(caller, conversation_id)
        renamed = replace(info, title=self._title(title), created=info.created or time.time(), updated=time.time())
        await backends.history.save_conversation(owner, renamed)
        return self._described(renamed)

    async def set_instructions(self, caller: Caller, conversation_id: object, text: object) -> dict[str, object]:
        """SetInstructions: the conversation's custom instructions ("" clears them), for its
        next replies; the entry as stored."""
        owner, backends, info, _ = await self._located(caller, conversation_id)
        instructions = self.chat.check_instructions(text)
        return await self._keep_choice(owner, backends, replace(info, instructions=instructions))

    async def set_model(self, caller: Caller, conversation_id: object, model: object) -> dict[str, object]:
        """SetModel: the model (deployment) that writes the conversation's next replies."""
        owner, backends, info, _ = await self._located(caller, conversation_id)
        chosen = self.chat.check_model(model)
        return await self._keep_choice(owner, backends, replace(info, model=chosen))

    async def _keep_choice(self, owner: str, backends: Backends, info: ConversationInfo) -> dict[str, object]:
        """Stores a changed entry; its place in the list stays (a setting is not a message)."""
        now = time.time()
        chosen = replace(info, created=info.created or now, updated=info.updated or now)
        await backends.history.save_conversation(owner, chosen)
        return self._described(chosen)

    async def delete(self, caller: Caller, conversation_id: object) -> None:
        owner, backends, info, _ = await self._located(caller, conversation_id)
        await self._drop(owner, backends, info.id)
        self.uploads.forget(owner, info.id)

    async def clear(self, caller: Caller, conversation_id: object) -> None:
        """Stops its reply and empties it; it stays in the list, as a new chat. What it held
        is kept for UNDO_SECONDS, for RestoreConversation."""
        owner, backends, info, key = await self._located(caller, conversation_id)
        store = backends.history
        await self._stop_and_wait(key, backends)
        history = await store.load(key)
        now = time.time()
        emptied = replace(info, title=NEW_TITLE, created=info.created or now, updated=now)  # its choices stay
        await self._empty(key, backends, lambda: store.replace(key, [], (owner, emptied)))
        self._forget_cleared(key)
        if history:
            handle = asyncio.get_running_loop().call_later(UNDO_SECONDS, self._forget_cleared, key)
            self._conversation(key, backends).cleared = (history, info, handle)

    async def restore(self, caller: Caller, conversation_id: object) -> bool:
        """Undoes a clear of the last UNDO_SECONDS, unless the conversation was used since."""
        owner, backends, info, key = await self._located(caller, conversation_id)
        store = backends.history
        conversation = self._conversations.get(key)
        cleared = conversation.cleared if conversation is not None else None
        if cleared is None or await self._running_anywhere(key, backends) or await store.load(key):
            return False
        self._forget_cleared(key)
        history, before, _ = cleared
        await store.replace(key, history, (owner, replace(info, title=before.title, updated=time.time())))
        return True

    def _forget_cleared(self, key: str) -> None:
        conversation = self._conversations.get(key)
        if conversation is not None and conversation.cleared is not None:
            conversation.cleared[2].cancel()
            conversation.cleared = None
            self._tidy(key)

    async def _empty(self, key: str, backends: Backends, write: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stops every reply of the conversation here, then empties it once its turn comes
        (with `write`, one write that empties it and its entry too): nothing in flight can
        write into the fresh conversation."""
        conversation = self._conversation(key, backends)
        conversation.users += 1
        try:
            for reply in list(conversation.replies):
                reply.stop()
            async with conversation.lock:
                await (write() if write is not None else backends.history.clear(key))
        finally:
            conversation.users -= 1
            self._tidy(key)

    async def _stop_and_wait(self, key: str, backends: Backends) -> None:
        """Its reply stopped and stored, wherever it runs, so nothing lands after a clear."""
        running = self._running(key)
        if running is not None and self._stop(key) and running.task is not None:
            await asyncio.gather(running.task, return_exceptions=True)
        await backends.replies.stop(key)

    async def _drop(self, owner: str, backends: Backends, conversation_id: str) -> None:
        key = self._key(owner, conversation_id)
        await self._stop_and_wait(key, backends)
        # messages and entry in one write: a crash never leaves an entry without its messages
        await self._empty(key, backends, lambda: backends.history.drop(owner, conversation_id, key))

    # -- search, export, and deleting everything ---------------------------------------------
    async def search(self, caller: Caller, query: object, page: object, page_size: object) -> dict[str, object]:
        """SearchConversations: the caller's conversations whose title or messages hold `query`
        (case-insensitive), newest first, page `page` (from 1) of `page_size`; each with a
        snippet of its first matching message (or of its title, when only that matches).
        Only the caller's own keys are ever read: the list is theirs, the keys are made from it."""
        if not isinstance(query, str) or not 1 <= len(query.strip()) <= MAX_QUERY_LENGTH:
            raise Rejected(BAD_QUERY)
        text = query.strip()
        number = _whole(page, 1, None, BAD_PAGE)
        size = _whole(page_size, 1, MAX_PAGE_SIZE, BAD_PAGE_SIZE)
        owner, backends = self.owner(caller), self.backends(caller)
        pattern = search_pattern(text)
        skip = (number - 1) * size
        hits: list[dict[str, object]] = []
        candidates = await self._listed(owner, backends)
        # newest first, a batch at a time, until this page and one more hit are known
        for start in range(0, len(candidates), SEARCH_BATCH):
            batch = candidates[start : start + SEARCH_BATCH]
            found = await backends.history.search([self._key(owner, info.id) for info in batch], text)
            for info in batch:
                message = found.get(self._key(owner, info.id))
                if message is None and pattern.search(info.title) is None:
                    continue
                where, source = (message["role"], message["content"]) if message is not None else ("title", info.title)
                shown, begin, end = snippet(source, pattern)
                hits.append({**info.as_dict(), "in": where, "snippet": shown, "match": [begin, end]})
            if len(hits) > skip + size:
                break
        return {"page": number, "pageSize": size, "results": hits[skip : skip + size], "more": len(hits) > skip + size}

    async def export(self, caller: Caller, conversation_id: object, form: object) -> dict[str, str]:
        """ExportConversation: the stored conversation as a Markdown or JSON file (export.py)."""
        _, backends, info, key = await self._located(caller, conversation_id)
        if not isinstance(form, str) or form not in FORMATS:
            raise Rejected(BAD_FORMAT)
        return export(info, await backends.history.load(key), form, time.time())

    async def delete_all(self, caller: Caller) -> None:
        """DeleteAllMyData: every reply of the caller's conversations stopped (on every instance)
        and stored, then every conversation deleted in one store call (one transaction where the
        store allows), what this instance keeps of them (a clear's undo, an ended reply's chunks)
        forgotten, and a guest's id too. Each conversation's lock is held for the delete, so
        nothing in flight writes into the emptied store after it."""
        owner, backends = self.owner(caller), self.backends(caller)
        store = backends.history
        keys = {self._key(owner, DEFAULT), *(self._key(owner, info.id) for info in await store.conversations(owner))}
        keys.update(key for key in self._conversations if owns_key(owner, key))
        ordered = sorted(keys)
        for key in ordered:
            await self._stop_elsewhere(key, backends, await self._stop_here(key))
        held = [self._conversation(key, backends) for key in ordered]
        for conversation in held:
            conversation.users += 1
        try:
            async with contextlib.AsyncExitStack() as locks:
                for conversation in held:
                    for reply in list(conversation.replies):  # started meanwhile: never stored
                        reply.stop()
                    await locks.enter_async_context(conversation.lock)
                await store.drop_owner(owner)
            await backends.replies.forget(ordered)
        finally:
            for key, conversation in zip(ordered, held, strict=True):
                conversation.users -= 1
                if conversation.latest is not None and not conversation.latest.running:
                    conversation.latest = None
                self._forget_cleared(key)
                self._tidy(key)
        self.uploads.forget(owner)
        if caller.guest is not None:
            await self.guests.forget(caller.guest)

    @staticmethod
    def _title(title: object) -> str:
        if not isinstance(title, str) or not title.strip() or len(title.strip()) > MAX_TITLE_LENGTH:
            raise Rejected(BAD_TITLE)
        return " ".join(title.split())

    # -- one conversation ---------------------------------------------------------
    async def open(self, caller: Caller, conversation_id: object) -> dict[str, object]:
        """The conversation's messages and the reply running in it, consistent with each other:
        a reply being stored while the history was read is read again."""
        _, backends, info, key = await self._located(caller, conversation_id)
        store = backends.history
        self._watch(caller, key, backends)
        reply: dict[str, object] | None = None
        described: dict[str, object] | None = None
        if self._running(key) is None:
            # the latest reply may be another instance's: read its mirror around the history
            described, storing = await backends.replies.describe(key)
            while described is not None:
                history = await store.load(key)
                described_after, storing_after = await backends.replies.describe(key)
                if storing_after == storing:
                    break
                described, storing = described_after, storing_after
            if described is not None:
                reply = None if storing else described
        if described is None:
            while True:
                latest = self._conversations[key].latest
                run = latest.run if latest is not None else None
                before = run is not None and run.storing
                history = await store.load(key)
                if run is None or run.storing == before:
                    break
            reply = run.describe() if run is not None and not run.storing else None
        messages = _shown(history)
        if reply is not None and reply["running"]:
            if not reply["continues"] and _asked(history) == reply["userMessage"]:
                messages.pop()  # the running reply's question, stored when it was accepted: shown with the reply
        elif _asked(history) is not None and not self._busy_here(key):
            messages[-1]["interrupted"] = True
        return {**self._described(info), "messages": messages, "reply": reply}

    def _busy_here(self, key: str) -> bool:
        """A reply of the conversation streams or waits for its turn on this instance."""
        conversation = self._conversations.get(key)
        return conversation is not None and bool(conversation.replies)

    async def follow(self, caller: Caller, conversation_id: object, after: object) -> AsyncIterator[dict[str, object]]:
        """ResumeReply: the conversation's latest reply after chunk `after`, then live."""
        if isinstance(after, bool) or not isinstance(after, int):
            raise Rejected(BAD_SEQUENCE)
        _, backends, _, key = await self._located(caller, conversation_id)
        self._watch(caller, key, backends)
        if self._running(key) is None:
            followed = False
            async for item in backends.replies.follow(key, after, linger=self.grace):
                followed = True
                yield item
            if followed:
                return
        latest = self._conversations[key].latest
        if latest is None or latest.run is None:
            return
        async for item in latest.run.follow(after):
            yield item

    # -- starting a reply -----------------------------------------------------------
    async def start(
        self,
        caller: Caller,
        conversation_id: object,
        kind: str,
        text: object = None,
        index: object = 0,
        attachment_ids: object = None,
    ) -> dict[str, object]:
        """`attachment_ids` (StartReplyWithAttachments): the caller's uploads for this conversation,
        sent with the message (which may then be empty) and no longer waiting once it is accepted."""
        owner, backends, info, key = await self._located(caller, conversation_id)
        files: list[Attachment] = []
        if attachment_ids is not None:
            files = self.uploads.find(owner, info.id, attachment_ids)
            if len(files) > self.attachments.max_files:
                raise Rejected(too_many(self.attachments.max_files))
            model = self.chat.model_for(info.model)
            if any(is_image(f) for f in files) and not self._reads_images(model):
                raise Rejected(no_images(model))  # the model was changed since the upload
        if self._running(key) is not None:
            raise Rejected(BUSY)
        if kind == "send" and files and (text is None or (isinstance(text, str) and not text.strip())):
            message = ""  # files alone are a message
            await self.chat.count(backends.rate_limits, owner)
        elif kind in ("send", "edit"):
            message = await self.chat.check(text, backends.rate_limits, owner)
        else:
            message = ""
        if kind == "edit" and (isinstance(index, bool) or not isinstance(index, int)):
            raise Rejected(NOT_A_USER_MESSAGE)
        position = index if isinstance(index, int) else 0
        if kind in ("regenerate", "continue"):
            await self.chat.count(backends.rate_limits, owner)  # the rate limit counts these too
        await self._count_address(caller)
        plan = _plan(kind, await backends.history.load(key), message, position, files=files)  # rejected here
        if files:  # files too long together are refused while they still wait, not lost in the reply
            self.chat.prompt([], plan.ask, info.instructions, self._reads_images(self.chat.model_for(info.model)))
        shown = None if plan.continues else plan.ask["content"]
        run = ReplyRun(info.id, shown, continues=plan.continues, user_attachments=[described(f) for f in files])
        if self._running(key) is not None or not await backends.replies.claim(key, run):
            raise Rejected(BUSY)  # on this instance meanwhile, or on another
        reply = Reply(None, None, run)
        self._conversation(key, backends).latest = reply
        self._watch(caller, key, backends)
        self.uploads.take(owner, [f["id"] for f in files])
        task = reply.task = asyncio.create_task(
            self._run(reply, backends, owner, info, key, kind, message, position, files)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run.describe()

    async def _run(
        self,
        reply: Reply,
        backends: Backends,
        owner: str,
        info: ConversationInfo,
        key: str,
        kind: str,
        message: str,
        index: int,
        files: Sequence[Attachment] = (),
    ) -> None:
        """A conversation's reply, in its own task: the pipeline, then the end its followers see."""
        assert reply.run is not None
        run = reply.run
        usage: dict[str, int] = {}
        try:
            text, error = await self._generate(
                reply, backends, owner, info.id, info, kind, message, index, run.append, usage, files
            )
            run.usage = usage or None  # where the provider reported it
            if isinstance(error, AiCutShort) and text:
                run.finish("completed", cut="length")
            elif error is not None:
                run.finish("error", error.user_message, withdrawn=isinstance(error, AiContentWithdrawn))
            else:
                run.finish("stopped" if reply.stopped else "completed")
        except Rejected as exc:
            run.finish("error", exc.user_message)
        except HistoryUnavailable as exc:
            log.warning("reply not stored: %s", exc)
            run.finish("error", exc.user_message)
        except BaseException:
            run.finish("error", AiFailed().user_message)
            raise
        finally:
            reply.done.set()
            asyncio.get_running_loop().call_later(self.kept_after_end, self._expire, key, reply)

    # -- the pipeline: every reply, whichever method asked -------------------------------
    async def _generate(
        self,
        reply: Reply,
        backends: Backends,
        owner: str,
        conversation_id: str,
        info: ConversationInfo | None,
        kind: str,
        message: str,
        index: int,
        emit: Callable[[str], Awaitable[None]],
        usage: dict[str, int] | None = None,
        files: Sequence[Attachment] = (),
    ) -> tuple[str, AiError | None]:
        """Waits for the conversation's turn, relays the reply through `emit` and stores it as
        far as it got; its text, and the error that cut it (Rejected and HistoryUnavailable
        are raised). `info`: the list entry to update when it is stored (None for the seed's
        replies, which never touch the list). The reply is written by the conversation's
        chosen model, told its custom instructions, as they are when its turn comes."""
        key = self._key(owner, conversation_id)
        listed = None if info is None else (owner, info)
        conversation = self._conversation(key, backends)
        conversation.replies.add(reply)
        try:
            async with conversation.lock:
                chosen = await self._entry(owner, backends, conversation_id)
                model = self.chat.model_for(chosen.model if chosen is not None else "")
                history = await backends.history.load(key)
                plan = _plan(kind, history, message, index, model, files)  # the history may have moved on
                instructions = chosen.instructions if chosen is not None else ""
                prompt = self.chat.prompt(plan.context, plan.ask, instructions, self._reads_images(model))
                if plan.continues:
                    prompt = [*prompt[:-1], plan.ask]  # the cut reply stays just before the request
                parts: list[str] = []
                error: AiError | None = None
                accepted = False
                if plan.appends and not reply.stopped:
                    # the user's message is stored before the model is asked: a crash mid-reply
                    # keeps it (one write per turn; the reply is stored when it ends)
                    await backends.history.append(key, [plan.ask])
                    accepted = True
                try:
                    if not reply.stopped:  # stopped while waiting for its turn: never asked
                        await self.chat.relay(reply, prompt, parts, emit, usage, model)
                except AiError as exc:
                    error = exc
                except asyncio.CancelledError:
                    await self._save(reply, backends, key, listed, plan, parts, accepted, plan.kept)
                    raise
                except Exception as exc:
                    log.exception("reply failed")
                    error = AiFailed()
                    error.__cause__ = exc
                if isinstance(error, AiContentWithdrawn):
                    parts.clear()  # withdrawn: stored as an error before any text is, not at all
                cut: Cut | None = "length" if isinstance(error, AiCutShort) else None
                if cut is None and (error is not None or reply.stopped):
                    cut = plan.kept  # a continuation that did not finish leaves the reply cut
                await self._save(reply, backends, key, listed, plan, parts, accepted, cut)
                return "".join(parts), error
        finally:
            conversation.replies.discard(reply)
            self._tidy(key)

    async def _save(
        self,
        reply: Reply,
        backends: Backends,
        key: str,
        listed: tuple[str, ConversationInfo] | None,
        plan: _Plan,
        parts: Sequence[str],
        accepted: bool = False,
        cut: Cut | None = None,
    ) -> None:
        """Stores the reply as far as it got, with its list entry, in one write; nothing
        generated, nothing stored (the user's message stored at `accepted` is taken back, so a
        retry does not repeat the question, and an edit or regenerate that failed loses nothing)."""
        store = backends.history
        if not parts:
            if accepted:
                await store.replace(key, plan.context)
            return
        if reply.run is not None:
            reply.run.storing = True
            await backends.replies.storing(reply.run)
        text = "".join(parts)
        entry: Listed | None = None
        if listed is not None:
            owner, info = listed
            # as stored now: instructions or a model chosen while the reply ran are kept
            info = await self._entry(owner, backends, info.id) or info
            title = info.title
            if title == NEW_TITLE:
                first = next((_titled(m) for m in plan.result(text, cut) if m["role"] == "user"), None)
                if first is None:
                    first = next((_titled(m) for m in plan.context if m["role"] == "user"), None)
                title = derive_title(first) if first else NEW_TITLE
            now = time.time()
            entry = (owner, replace(info, title=title, created=info.created or now, updated=now))
        if plan.appends:
            turn = plan.result(text, cut)
            await store.append(key, turn[1:] if accepted else turn, entry)
        else:
            await store.replace(key, plan.result(text, cut), entry)

    # -- stopping ---------------------------------------------------------------------
    async def _running_anywhere(self, key: str, backends: Backends) -> bool:
        return self._running(key) is not None or (await backends.replies.is_running([key]))[0]

    async def stop(self, caller: Caller, conversation_id: object) -> bool:
        """StopReply: stops the conversation's reply at once, whichever client started it,
        on whichever instance it runs."""
        owner, backends = self.owner(caller), self.backends(caller)
        if isinstance(conversation_id, str) and self._running(self._key(owner, conversation_id)) is not None:
            key = self._key(owner, conversation_id)  # its reply runs here: it exists, no need to ask the store
        else:
            key = self._key(owner, (await self._find(owner, backends, conversation_id)).id)
        return await self._stop_elsewhere(key, backends, self._stop(key))

    async def _stop_elsewhere(self, key: str, backends: Backends, stopped_here: bool) -> bool:
        """The stop reaches the other instances too; whether a reply was running anywhere.
        Without Redis, a stop that stopped something here says so (the relay needs no Redis)."""
        try:
            return await backends.replies.stop(key) or stopped_here
        except HistoryUnavailable:
            if not stopped_here:
                raise  # it may run elsewhere: say that Stop could not reach it
            log.warning("the replies here were stopped; Redis did not answer, so no other instance was asked")
            return stopped_here

    async def _stop_here(self, key: str) -> bool:
        """Stops this instance's replies of the conversation and waits until they are stored."""
        conversation = self._conversations.get(key)
        if conversation is None:
            return False
        latest = conversation.running
        others = [reply for reply in conversation.replies if reply is not latest and not reply.stopped]
        stopped = [*others, latest] if self._stop(key) and latest is not None else others
        for reply in others:
            reply.stop()
        if stopped:
            waits = [asyncio.ensure_future(reply.done.wait()) for reply in stopped]
            _, pending = await asyncio.wait(waits, timeout=STOP_WAIT_SECONDS)
            for future in pending:
                future.cancel()
        return bool(stopped)

    def _stop(self, key: str) -> bool:
        running = self._running(key)
        if running is None:
            return False
        running.stop()
        return True

    def _expire(self, key: str, reply: Reply) -> None:
        conversation = self._conversations.get(key)
        if conversation is not None and conversation.latest is reply:
            conversation.latest = None
            self._tidy(key)

    def replies_in_flight(self) -> Sequence[Reply]:
        """The seed's replies streaming or waiting for their turn (a graceful stop waits for them)."""
        return [reply for replies in self._seed_replies.values() for reply in replies]

    def stop_all(self) -> int:
        """Stops the seed's replies (a graceful stop's limit is up); each is stored as far as it got."""
        replies = [reply for reply in self.replies_in_flight() if not reply.stopped]
        for reply in replies:
            reply.stop()
        return len(replies)

    # -- who is watching: a reply nobody is connected for is stopped after the grace period
    def _watch(self, caller: Caller, key: str, backends: Backends) -> None:
        connection = caller.connection_id
        previous = self._watching.get(connection)
        if previous == key:
            return
        if previous is not None:
            self._unwatch(connection, previous)
        self._watching[connection] = key
        conversation = self._conversation(key, backends)
        conversation.watchers.add(connection)
        if conversation.abandon is not None:
            conversation.abandon.cancel()
            conversation.abandon = None

    def _unwatch(self, connection: str, key: str) -> None:
        conversation = self._conversations.get(key)
        if conversation is None:
            return
        conversation.watchers.discard(connection)
        if not conversation.watchers and conversation.running is not None:
            if self.grace <= 0:
                self._abandoned(key)
            else:
                conversation.abandon = asyncio.get_running_loop().call_later(self.grace, self._abandoned, key)
        self._tidy(key)

    def _abandoned(self, key: str) -> None:
        conversation = self._conversations.get(key)
        if conversation is None:
            return
        conversation.abandon = None
        if not conversation.watchers:
            task = asyncio.create_task(self._abandon_unless_followed(conversation, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _abandon_unless_followed(self, conversation: _Conversation, key: str) -> None:
        """A client following the reply on another instance keeps it going; checked again
        every `recheck` seconds, so the reply stops at most that long after the grace period
        of the last one that left (a follower that leaves stays counted for the grace period)."""
        replies = conversation.backends.replies
        try:
            followed = await replies.followed_elsewhere(key)
        except HistoryUnavailable:
            followed = False  # no follower elsewhere can read a reply without Redis either
        if conversation.watchers or conversation.running is None:
            return
        if followed:
            recheck = max(1.0, min(self.grace, replies.lease_seconds / 3))
            conversation.abandon = asyncio.get_running_loop().call_later(recheck, self._abandoned, key)
        elif self._stop(key):
            log.info("reply stopped: nobody of its conversation came back within %s s", self.grace)
        self._tidy(key)

    async def disconnected(self, caller: Caller) -> None:
        """The connection's replies of the seed methods stop at once; what it watched is left
        (its reply stops after the grace period); an anonymous conversation is forgotten."""
        key = self._watching.pop(caller.connection_id, None)
        if key is not None:
            self._unwatch(caller.connection_id, key)
        replies = list(self._seed_replies.get(caller.connection_id, ()))
        for reply in replies:
            if reply.relaying:
                reply.stop()
            elif reply.task is not None:
                reply.task.cancel()  # still waiting for its turn
        if replies:
            await asyncio.wait([asyncio.ensure_future(r.done.wait()) for r in replies], timeout=STOP_WAIT_SECONDS)
        owner = caller.owner
        if owner.startswith("connection:"):  # a guest's conversation outlives the connection
            self.uploads.forget(owner)  # and so do a guest's uploads, until they expire
            backends = self.anonymous
            await backends.rate_limits.forget(owner)
            try:
                await backends.history.clear(self._key(owner, DEFAULT))
            except HistoryUnavailable as exc:  # a Redis store's keys expire by themselves
                log.warning("an anonymous conversation was not cleared at disconnect: %s", exc)

    async def close(self) -> None:
        """Stops every reply and timer; the backends are closed by whoever chose them."""
        for conversation in self._conversations.values():
            if conversation.abandon is not None:
                conversation.abandon.cancel()
            if conversation.cleared is not None:
                conversation.cleared[2].cancel()
            if conversation.running is not None:
                conversation.running.stop()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
