"""ChatHub: the two client contracts the chat serves, on one hub.

Seed 1 (the wwwroot page): SendMessage / ClearHistory with ReceiveStatusUpdate,
ReceiveStreamStart, ReceiveStreamToken, ReceiveStreamEnd and ReceiveError.
Seed 2 (the Angular app): AskAi with typing / partial / completed (and error).
Both, and StreamMessage for `connection.stream(...)`, share one history.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from ..ai import AiError
from ..signalr import Hub, HubException
from .service import ChatService, Rejected


class ChatHub(Hub):
    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def send_message(self, message: str) -> None:
        caller = self.clients.caller
        try:
            text = self.chat.check(self.context, message)
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
            await self.chat.reply(self.context, text, emit)
        except (AiError, Rejected) as exc:
            if started:
                await caller.send("ReceiveStreamEnd")
            await caller.send("ReceiveError", exc.user_message)
            return
        if not started:
            await caller.send("ReceiveStreamStart")
        await caller.send("ReceiveStreamEnd")

    async def ask_ai(self, prompt: str) -> str:
        """Returns the message id that the typing/partial/completed events carry."""
        caller = self.clients.caller
        message_id = uuid.uuid4().hex
        try:
            text = self.chat.check(self.context, prompt)
        except Rejected as exc:
            await caller.send("error", message_id, exc.user_message)
            await caller.send("completed", message_id)
            return message_id
        await caller.send("typing", message_id, True)

        async def emit(token: str) -> None:
            await caller.send("partial", message_id, token)

        try:
            await self.chat.reply(self.context, text, emit)
        except (AiError, Rejected) as exc:
            await caller.send("typing", message_id, False)
            await caller.send("error", message_id, exc.user_message)
            await caller.send("completed", message_id)
            return message_id
        await caller.send("typing", message_id, False)
        await caller.send("completed", message_id)
        return message_id

    async def stream_message(self, message: str) -> AsyncIterator[str]:
        """Tokens as a SignalR stream; disposing the subscription stops the reply."""
        try:
            text = self.chat.check(self.context, message)
            async for token in self.chat.stream(self.context, text):
                yield token
        except (AiError, Rejected) as exc:
            raise HubException(exc.user_message) from None

    async def stop_generation(self) -> None:
        self.chat.stop(self.context.connection_id)

    async def clear_history(self) -> None:
        await self.chat.clear(self.context)
        await self.clients.caller.send("ReceiveStatusUpdate", "history_cleared")

    async def get_history(self) -> list[dict[str, str]]:
        """The caller's conversation, so a page can show it again after a reload."""
        return [{"role": m["role"], "content": m["content"]} for m in await self.chat.history(self.context)]

    async def get_chat_info(self) -> dict[str, object]:
        """What a front end shows before the first message: the length limit and the model."""
        return self.chat.info()

    async def on_disconnected(self, exception: BaseException | None) -> None:
        await self.chat.disconnected(self.context)
