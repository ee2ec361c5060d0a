"""Conversation history stores.

A store keeps the turns of each conversation (never the system prompt, which is
prepended per request so a new prompt applies to old conversations too) and trims
each conversation to its last `keep` messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ..ai import ChatMessage


class HistoryStore(Protocol):
    async def load(self, conversation: str) -> list[ChatMessage]:
        """The conversation's messages, oldest first."""
        ...

    async def append(self, conversation: str, messages: Sequence[ChatMessage]) -> None: ...

    async def clear(self, conversation: str) -> None: ...

    async def close(self) -> None: ...


class InMemoryHistoryStore:
    """For anonymous conversations (gone with their connection) and for tests."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._conversations: dict[str, deque[ChatMessage]] = {}

    def __len__(self) -> int:
        return len(self._conversations)

    async def load(self, conversation: str) -> list[ChatMessage]:
        return list(self._conversations.get(conversation, ()))

    async def append(self, conversation: str, messages: Sequence[ChatMessage]) -> None:
        turns = self._conversations.get(conversation)
        if turns is None:
            turns = self._conversations[conversation] = deque(maxlen=self._keep)
        turns.extend(messages)

    async def clear(self, conversation: str) -> None:
        self._conversations.pop(conversation, None)

    async def close(self) -> None:
        self._conversations.clear()
