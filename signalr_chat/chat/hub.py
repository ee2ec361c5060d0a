"""ChatHub: the two client contracts the chat serves, on one hub.

Seed 1 (the wwwroot page): SendMessage / ClearHistory with ReceiveStatusUpdate,
ReceiveStreamStart, ReceiveStreamToken, ReceiveStreamEnd and ReceiveError.
Seed 2 (the Angular app): AskAi with typing / partial / completed (and error).
Both, and StreamMessage for `connection.stream(...)`, share one history: the default
conversation of the conversation methods below (docs/chat.md), which both front ends use.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from ..ai import AiContentWithdrawn, AiError, AiFailed
from ..signalr import Hub, HubException
from .attachments import release
from .conversations import ConversationService
from .history import HistoryUnavailable
from .service import GUEST_ITEM, Caller, Rejected

log = logging.getLogger(__name__)

#: SendMessage's signal that the text it streamed was taken back by a late content filter
#: signal (a `ReceiveStatusUpdate`, an event every seed 1 client already handles).
WITHDRAWN_STATUS = "reply_withdrawn"


def user_message(error: Exception) -> str:
    """The text a user sees for a failed turn; an unexpected error is logged, never shown."""
    if isinstance(error, (AiError, Rejected)):
        return error.user_message
    if isinstance(error, HistoryUnavailable):
        log.warning("history store unavailable: %s", error)
        return error.user_message
    log.error("reply failed", exc_info=error)
    return AiFailed.user_message


T = TypeVar("T")


async def _or_hub_error(work: Awaitable[T]) -> T:
    """A rejection, or a history store that did not answer, reaches the client as a
    HubException: its text is for the user."""
    try:
        return await work
    except (Rejected, HistoryUnavailable) as exc:
        raise HubException(user_message(exc)) from None


class ChatHub(Hub):
    """Thin adapters: each method turns its call into the service's terms and its result
    into the contract's events."""

    def __init__(self, conversations: ConversationService) -> None:
        self.conversations = conversations

    @property
    def caller(self) -> Caller:
        context = self.context
        guest = context.items.get(GUEST_ITEM)
        request = context.request
        return Caller(
            context.connection_id,
            context.user_identifier,
            guest if isinstance(guest, str) else None,
            request.remote if request is not None else None,
        )

    async def send_message(self, message: str) -> None:
        caller = self.clients.caller
        try:
            text = await self.conversations.check(self.caller, message)
        except Rejected as exc:
            await caller.send("ReceiveError", exc.user_message)
            return
        await caller.send("ReceiveStatusUpdate", "thinking")
        started = False

        async def emit(token: str) -> None:
            nonlocal started
            if not started:
                started = True
                await caller.send("ReceiveStreamStart")
            await caller.send("ReceiveStreamToken", token)

        try:
            await self.conversations.reply(self.caller, text, emit)
        except Exception as exc:  # whatever went wrong, the turn's events still close
            if started:
                await caller.send("ReceiveStreamEnd")
                if isinstance(exc, AiContentWithdrawn):  # the text shown is no longer the reply
                    await caller.send("ReceiveStatusUpdate", WITHDRAWN_STATUS)
            await caller.send("ReceiveError", user_message(exc))
            return
        if not started:
            await caller.send("ReceiveStreamStart")
        await caller.send("ReceiveStreamEnd")

    async def ask_ai(self, prompt: str) -> str:
        """Returns the message id that the typing/partial/completed events carry."""
        caller = self.clients.caller
        message_id = uuid.uuid4().hex
        try:
            text = await self.conversations.check(self.caller, prompt)
        except Rejected as exc:
            await caller.send("error", message_id, exc.user_message)
            await caller.send("completed", message_id)
            return message_id
        await caller.send("typing", message_id, True)

        async def emit(token: str) -> None:
            await caller.send("partial", message_id, token)

        try:
            await self.conversations.reply(self.caller, text, emit)
        except Exception as exc:  # whatever went wrong, the turn's events still close
            await caller.send("typing", message_id, False)
            await caller.send("error", message_id, user_message(exc))
            await caller.send("completed", message_id)
            return message_id
        await caller.send("typing", message_id, False)
        await caller.send("completed", message_id)
        return message_id

    async def stream_message(self, message: str) -> AsyncIterator[str]:
        """Tokens as a SignalR stream; disposing the subscription stops the reply."""
        try:
            text = await self.conversations.check(self.caller, message)
            async for token in self.conversations.stream(self.caller, text):
                yield token
        except Exception as exc:
            raise HubException(user_message(exc)) from None

    async def stop_generation(self) -> None:
        """Stops every reply of the caller's conversation: the user's other tabs too, on any instance."""
        await _or_hub_error(self.conversations.stop_default(self.caller))

    async def clear_history(self) -> None:
        await _or_hub_error(self.conversations.clear_default(self.caller))
        await self.clients.caller.send("ReceiveStatusUpdate", "history_cleared")

    async def get_history(self) -> list[dict[str, object]]:
        """The caller's conversation, so a page can show it again after a reload; a last user
        message whose reply the server never finished carries `interrupted: true`."""
        return await _or_hub_error(self.conversations.history(self.caller))

    async def get_chat_info(self) -> dict[str, object]:
        """What a front end shows before the first message: the length limit and the model."""
        return self.conversations.info()

    # -- conversations (docs/chat.md) ----------------------------------------------
    async def use_guest_session(self, guest_id: str | None) -> str | None:
        """An anonymous visitor's identity across reloads; a new one unless `guest_id` is alive."""
        guest = await _or_hub_error(self.conversations.use_guest(self.caller, guest_id))
        if guest is not None:
            self.context.items[GUEST_ITEM] = guest
        return guest

    async def list_conversations(self) -> list[dict[str, object]]:
        return await _or_hub_error(self.conversations.list(self.caller))

    async def create_conversation(self, title: str | None) -> dict[str, object]:
        return await _or_hub_error(self.conversations.create(self.caller, title))

    async def rename_conversation(self, conversation_id: str, title: str) -> dict[str, object]:
        return await _or_hub_error(self.conversations.rename(self.caller, conversation_id, title))

    async def set_instructions(self, conversation_id: str, instructions: str | None) -> dict[str, object]:
        """The conversation's custom instructions (null or "" clears them), sent to the model after
        the server's system prompt; returns the entry."""
        return await _or_hub_error(self.conversations.set_instructions(self.caller, conversation_id, instructions))

    async def set_model(self, conversation_id: str, model: str) -> dict[str, object]:
        """The model (one of GetChatInfo's `models`) that writes the conversation's next replies."""
        return await _or_hub_error(self.conversations.set_model(self.caller, conversation_id, model))

    async def delete_conversation(self, conversation_id: str) -> None:
        await _or_hub_error(self.conversations.delete(self.caller, conversation_id))

    async def clear_conversation(self, conversation_id: str) -> None:
        """Stops its reply and empties it (ClearHistory for any conversation)."""
        await _or_hub_error(self.conversations.clear(self.caller, conversation_id))

    async def restore_conversation(self, conversation_id: str) -> bool:
        """Undoes ClearConversation within a minute, unless the conversation was used since."""
        return await _or_hub_error(self.conversations.restore(self.caller, conversation_id))

    async def get_conversation(self, conversation_id: str) -> dict[str, object]:
        """Its messages and the reply running in it (follow that with ResumeReply)."""
        return await _or_hub_error(self.conversations.open(self.caller, conversation_id))

    async def start_reply(self, conversation_id: str, message: str) -> dict[str, object]:
        """Starts a reply to `message`; returns at once. Follow it with ResumeReply(id, 0)."""
        return await _or_hub_error(self.conversations.start(self.caller, conversation_id, "send", message))

    async def upload_attachment(
        self, conversation_id: str, file: dict[str, object], chunks: AsyncIterator[object]
    ) -> dict[str, object]:
        """A file `{name, type}` streamed in chunks (a client's Subject: base64 text, or bytes with
        MessagePack) for the conversation's next message; `{id, name, type, size}` once whole.
        Refused at the first chunk past the size limit: the rest is never read."""
        try:
            return await _or_hub_error(self.conversations.upload(self.caller, conversation_id, file, chunks))
        except BaseException:
            release(chunks)  # what the hub buffered for it must not hold up the connection
            raise

    async def start_reply_with_attachments(
        self, conversation_id: str, message: str | None, attachment_ids: list[str]
    ) -> dict[str, object]:
        """StartReply with files the caller uploaded for this conversation (UploadAttachment's ids);
        the message may be empty when files are sent. Follow it with ResumeReply(id, 0)."""
        return await _or_hub_error(
            self.conversations.start(self.caller, conversation_id, "send", message, attachment_ids=attachment_ids)
        )

    async def get_attachment(self, conversation_id: str, attachment_id: str) -> dict[str, object]:
        """A stored attachment, `{id, name, type, size, url}` with its content as a data URL."""
        return await _or_hub_error(self.conversations.attachment(self.caller, conversation_id, attachment_id))

    async def regenerate_reply(self, conversation_id: str) -> dict[str, object]:
        return await _or_hub_error(self.conversations.start(self.caller, conversation_id, "regenerate"))

    async def edit_message(self, conversation_id: str, index: int, message: str) -> dict[str, object]:
        """Replaces user message `index` (and everything after it) and answers the new text."""
        return await _or_hub_error(self.conversations.start(self.caller, conversation_id, "edit", message, index))

    async def continue_reply(self, conversation_id: str) -> dict[str, object]:
        return await _or_hub_error(self.conversations.start(self.caller, conversation_id, "continue"))

    async def stop_reply(self, conversation_id: str) -> bool:
        return await _or_hub_error(self.conversations.stop(self.caller, conversation_id))

    async def resume_reply(self, conversation_id: str, after_sequence: int) -> AsyncIterator[dict[str, object]]:
        """The conversation's reply: the chunks numbered above `after_sequence`, then live, then an end item."""
        try:
            async for item in self.conversations.follow(self.caller, conversation_id, after_sequence):
                yield item
        except (Rejected, HistoryUnavailable) as exc:
            raise HubException(user_message(exc)) from None

    async def search_conversations(self, query: str, page: int, page_size: int) -> dict[str, object]:
        """The caller's conversations whose title or messages hold `query`, a page at a time."""
        return await _or_hub_error(self.conversations.search(self.caller, query, page, page_size))

    async def export_conversation(self, conversation_id: str, form: str) -> dict[str, str]:
        """`{fileName, mediaType, text}`: the conversation as "markdown" or "json", to download."""
        return await _or_hub_error(self.conversations.export(self.caller, conversation_id, form))

    async def delete_all_my_data(self) -> None:
        """Every conversation of the caller deleted, their replies stopped first; a guest's id
        is forgotten too, so this connection is no guest any more (UseGuestSession makes a new one)."""
        await _or_hub_error(self.conversations.delete_all(self.caller))
        self.context.items.pop(GUEST_ITEM, None)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        await self.conversations.disconnected(self.caller)
