"""The chat's rules, apart from any hub: who a caller is, the limits, the checks on a
message, the prompt, and the relay of one reply.

Relaying a reply costs no extra task or queue per token: the upstream stream is read
in the relaying task itself, and `Reply.stop` cancels that task only while it is
inside the relay loop, where the cancellation is caught and turned into a normal end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

from ..ai import AiFailed, AiReplyTooLong, AiTimedOut, ChatMessage, ChatModel
from ..ai.attachments import is_image
from .history import HistoryStore
from .rate_limit import RateLimits
from .replies import ReplyRun, ReplySharing
from .trimming import TooLongForModel, bare, fit_to_budget

log = logging.getLogger(__name__)

#: Where the hub keeps a connection's guest id (HubCallerContext.items), after UseGuestSession.
GUEST_ITEM = "chat.guest"

EMPTY_MESSAGE = "Message cannot be empty."
NOT_TEXT = "Message must be text."
TOO_LONG_FOR_MODEL = "Message is too long for the model's context window. Please shorten it."
TOO_LONG_WITH_INSTRUCTIONS = (
    "Message and this conversation's instructions are too long for the model's context window. Please shorten them."
)
TOO_LONG_WITH_FILES = (
    "Message and its files are too long for the model's context window. Attach fewer or shorter files."
)
INSTRUCTIONS_NOT_TEXT = "Instructions must be text."
MODEL_NOT_TEXT = "A model must be named by text."


def instructions_too_long(limit: int) -> str:
    if limit == 0:
        return "Custom instructions are turned off on this server."
    return f"Instructions are too long. The limit is {limit:,} characters."


def unknown_model(models: Sequence[str]) -> str:
    return f"Unknown model. Choose one of: {', '.join(models)}."


def too_long(limit: int) -> str:
    return f"Message is too long. The limit is {limit:,} characters."


def rate_limited(wait: float) -> str:
    seconds = max(1, round(wait))
    return f"You are sending messages too quickly. Please wait {seconds} second{'s' if seconds != 1 else ''}."


def too_many_guests(wait: float) -> str:
    minutes = max(1, round(wait / 60))
    return (
        "Too many new guest sessions from your network. "
        f"Please wait {minutes} minute{'s' if minutes != 1 else ''}, or sign in."
    )


def _without_images(message: ChatMessage) -> ChatMessage:
    """The message with its images named in its text instead of attached."""
    attachments = message.get("attachments")
    if not attachments or not any(is_image(a) for a in attachments):
        return message
    names = ", ".join(a["name"] for a in attachments if is_image(a))
    kept: ChatMessage = {**message, "content": f"{message['content']}\n\n[Images not shown to this model: {names}]"}
    files = [a for a in attachments if not is_image(a)]
    if files:
        kept["attachments"] = files
    else:
        del kept["attachments"]
    return kept


class Rejected(Exception):
    """A message the chat will not send to the model; the text is for the user."""

    @property
    def user_message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks, as the chat sees them: the hub makes one from its context per call."""

    connection_id: str
    #: The signed-in user's id; None when anonymous.
    user: str | None = None
    #: An anonymous visitor's guest id (UseGuestSession); None for a connection that is no guest.
    guest: str | None = None
    #: The client's address as the hosting reports it (behind TRUSTED_PROXIES, the forwarded
    #: one); None when unknown. Anonymous callers are counted per address too (addresses.py).
    address: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.user is not None

    @property
    def owner(self) -> str:
        """Whose conversations: signed-in users have theirs across connections, and so do
        guests; other anonymous visitors, one per connection. The key of the owner's default
        conversation, the seed's single history."""
        if self.user is not None:
            return f"user:{self.user}"
        return f"guest:{self.guest}" if self.guest is not None else f"connection:{self.connection_id}"


class LimitSettings(Protocol):
    """What `Limits` reads of the chat's settings (the app's `Settings` has them all)."""

    max_message_length: int
    max_instructions_length: int
    max_reply_length: int
    reply_first_token_timeout_seconds: float
    reply_timeout_seconds: float
    reply_grace_seconds: float


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds on a message and on a reply."""

    max_message_length: int
    max_reply_length: int
    first_token_timeout: float
    reply_timeout: float
    #: How long a reply nobody watches runs on (a reload comes back within it).
    reply_grace: float
    #: The longest custom instructions of a conversation (0: none may be set).
    max_instructions_length: int = 4000

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> Limits:
        return cls(
            settings.max_message_length,
            settings.max_reply_length,
            settings.reply_first_token_timeout_seconds,
            settings.reply_timeout_seconds,
            settings.reply_grace_seconds,
            settings.max_instructions_length,
        )


@dataclass(frozen=True, slots=True)
class Backends:
    """Where one kind of owner's conversations live (signed-in users', or anonymous ones'):
    chosen once, by the composition root (app/application.py)."""

    history: HistoryStore
    rate_limits: RateLimits
    replies: ReplySharing


class Reply:
    """One reply in flight: the task relaying it, and how it is stopped (StopGeneration,
    StopReply, a clear, nobody left, a drain) or timed out.

    A seed reply (SendMessage, AskAi, StreamMessage) belongs to the connection that asked
    (`connection_id`) and runs in its invocation; a conversation's reply (StartReply) runs
    in a task of its own and is followed through its numbered chunks (`run`).
    """

    __slots__ = ("connection_id", "done", "interrupts", "relaying", "run", "stopped", "task", "timed_out")

    def __init__(self, task: asyncio.Task[object] | None, connection_id: str | None, run: ReplyRun | None) -> None:
        self.task = task
        self.connection_id = connection_id
        self.run = run
        self.relaying = False
        self.stopped = False
        self.timed_out = False
        #: Cancellations of `task` made here; the relay loop takes them back.
        self.interrupts = 0
        #: Set once the reply is stored and ended.
        self.done = asyncio.Event()

    @property
    def running(self) -> bool:
        return not self.done.is_set()

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
        assert self.task is not None  # relaying: its task runs
        self.interrupts += 1
        self.task.cancel()


class ChatService:
    """The rules every reply follows, whichever hub method asked for it."""

    def __init__(self, model: ChatModel, limits: Limits, system_prompt: str) -> None:
        self.model = model
        self.limits = limits
        self.system: ChatMessage = {"role": "system", "content": system_prompt}
        provider, _, name = model.name.partition(":")
        #: The models a conversation may pick, the default first (one, unless AI_MODELS lists more).
        self.models: tuple[str, ...] = tuple(model.models) or (name or provider,)

    def info(self) -> dict[str, object]:
        """The limits a composer counts against, and which models answer (the built-in one is
        a small offline demo whose answers are often wrong: front ends say so)."""
        provider = self.model.name.partition(":")[0]
        return {
            "maxMessageLength": self.limits.max_message_length,
            "maxInstructionsLength": self.limits.max_instructions_length,
            "provider": provider,
            "model": self.models[0],
            "models": list(self.models),
            "offlineDemo": provider == "local",
        }

    def model_for(self, chosen: str) -> str:
        """The model a conversation's reply uses: its choice, or the default when it chose none or
        chose one the server no longer offers (AI_MODELS changed since)."""
        return chosen if chosen in self.models else self.models[0]

    def check_model(self, model: object) -> str:
        """A model a conversation may pick (SetModel), or Rejected naming the ones it may."""
        if not isinstance(model, str):
            raise Rejected(MODEL_NOT_TEXT)
        if model not in self.models:
            raise Rejected(unknown_model(self.models))
        return model

    def check_instructions(self, text: object) -> str:
        """Custom instructions to store (SetInstructions): "" (or None, or blanks) clears them."""
        if text is None:
            return ""
        if not isinstance(text, str):
            raise Rejected(INSTRUCTIONS_NOT_TEXT)
        text = text.strip()
        if len(text) > self.limits.max_instructions_length:
            raise Rejected(instructions_too_long(self.limits.max_instructions_length))
        return text

    # -- checks before any work ---------------------------------------------
    async def check(self, message: object, rate_limits: RateLimits, key: str) -> str:
        """The message to send, counted against `key`'s rate limit; or Rejected with the text to show."""
        if message is None or (isinstance(message, str) and not message.strip()):
            raise Rejected(EMPTY_MESSAGE)
        if not isinstance(message, str):
            raise Rejected(NOT_TEXT)
        if len(message) > self.limits.max_message_length:
            raise Rejected(too_long(self.limits.max_message_length))
        await self.count(rate_limits, key)
        return message

    @staticmethod
    async def count(rate_limits: RateLimits, key: str) -> None:
        """One message against `key`'s rate limit (a regenerate or continue counts too)."""
        wait = await rate_limits.hit(key)
        if wait > 0:
            raise Rejected(rate_limited(wait))

    def prompt(
        self, history: list[ChatMessage], ask: ChatMessage, instructions: str = "", images: bool = True
    ) -> list[ChatMessage]:
        """What the model is shown: the system prompt, the conversation's instructions as a second
        system message, the newest history that fits the rest of the budget, `ask`. Attachments
        go with their messages (counted in the budget: trimming.py); with `images` False (a model
        that reads none, chosen after an image was sent), an earlier image is named, not sent."""
        budget = self.model.context_tokens - self.model.max_output_tokens
        custom: ChatMessage | None = {"role": "system", "content": instructions} if instructions else None
        if not images:
            history = [_without_images(m) for m in history]
            ask = _without_images(ask)
        try:
            fitted = fit_to_budget(self.system, history, ask, budget, self.model.count_tokens, custom)
        except TooLongForModel:
            if ask.get("attachments"):
                raise Rejected(TOO_LONG_WITH_FILES) from None
            raise Rejected(TOO_LONG_WITH_INSTRUCTIONS if custom else TOO_LONG_FOR_MODEL) from None
        # a stored mark (`cut`) and label (`model`) are ours: a provider is sent role, content and files only
        return [m if "cut" not in m and "model" not in m else bare(m) for m in fitted]

    # -- the relay: the per-token path --------------------------------------------
    async def relay(
        self,
        reply: Reply,
        prompt: list[ChatMessage],
        parts: list[str],
        emit: Callable[[str], Awaitable[None]],
        usage: dict[str, int] | None = None,
        model: str | None = None,
    ) -> None:
        """Relay the tokens of `model` (one of `models`; None: the default), within the reply's
        length limit and deadlines.

        The deadlines are two timers per reply, not a timeout per token: one for the first
        token, one for the whole reply. Either cancels the relay as stop() does, and the
        cancellation is turned into AiTimedOut here.
        """
        limits = self.limits
        limit = limits.max_reply_length
        loop = asyncio.get_running_loop()
        first_token = loop.call_later(limits.first_token_timeout, reply.time_out)
        whole_reply = loop.call_later(limits.reply_timeout, reply.time_out)
        length = 0
        reply.relaying = True
        try:
            async with aclosing(self.model.stream(prompt, usage, model)) as tokens:
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
            task = reply.task
            assert task is not None
            if reply.interrupts == 0 or task.cancelling() > reply.interrupts:
                raise
            for _ in range(reply.interrupts):
                task.uncancel()
            if not reply.stopped:
                log.warning(
                    "reply timed out: %s",
                    "no text within the first-token deadline" if not parts else "still streaming at the deadline",
                )
                raise AiTimedOut from None
        finally:
            reply.relaying = False
            first_token.cancel()
            whole_reply.cancel()
