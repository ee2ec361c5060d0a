"""Callers of the chat's ConversationService as the hub makes them, for in-process tests:
signed-in users and guests, each on a connection of its own, and a turn followed to its end."""

from __future__ import annotations

import itertools

from signalr_chat.chat.conversations import ConversationService
from signalr_chat.chat.service import Caller


class Callers:
    def __init__(self, conversations: ConversationService) -> None:
        self.conversations = conversations
        self.connections = itertools.count()

    def user(self, sub: str) -> Caller:
        return Caller(f"c{next(self.connections)}", sub)

    async def guest(self) -> Caller:
        caller = Caller(f"c{next(self.connections)}")
        guest = await self.conversations.use_guest(caller, None)
        return Caller(caller.connection_id, None, guest)

    async def talk(self, caller: Caller, conversation: str, message: str) -> None:
        await self.conversations.start(caller, conversation, "send", message)
        async for _ in self.conversations.follow(caller, conversation, 0):
            pass
