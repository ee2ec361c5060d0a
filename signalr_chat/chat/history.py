"""Conversation history stores.

A store keeps the turns of each conversation (never the system prompt, which is
prepended per request so a new prompt applies to old conversations too) and trims
each conversation to its last `keep` messages. An assistant message keeps the label of
the model that wrote it (`ChatMessage["model"]`); a conversation's list entry keeps its
custom instructions and its chosen model.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ..ai import ChatMessage


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A conversation in its owner's list; the messages are stored apart, under its key."""

    id: str
    title: str
    created: float
    updated: float
    #: The user's custom instructions for this conversation (SetInstructions): sent after the
    #: server's system prompt. "" for none.
    instructions: str = ""
    #: The model (deployment) the user picked for it (SetModel); "" for the default.
    model: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "updated": self.updated,
            "instructions": self.instructions,
            "model": self.model,
        }


def _escaped(part: str) -> str:
    """`part` with no "/" left in it, reversibly: "%" and "/" become "%25" and "%2F"."""
    return part.replace("%", "%25").replace("/", "%2F")


def conversation_key(owner: str, conversation_id: str, default: str = "default") -> str:
    """Where a conversation's messages are stored: one key per (owner, conversation), whatever
    characters either holds. The owner's default conversation is stored under the owner alone
    (the seed's single history), any other under owner, "/", id; both parts escaped, so no "/"
    is left in either and no owner (a user's `sub` is anyone's choice) can spell another
    owner's conversation. Owners and ids without "%" or "/" (every guest id, every id the
    server issues) keep the key they had before keys were escaped."""
    owner_part = _escaped(owner)
    return owner_part if conversation_id == default else f"{owner_part}/{_escaped(conversation_id)}"


def owns_key(owner: str, key: str) -> bool:
    """Whether `key` (as `conversation_key` makes them) is one of `owner`'s conversations: the
    escaped owner alone (the default conversation) or the escaped owner, "/", anything. No other
    owner's key passes, since an escaped owner holds no "/"."""
    owner_part = _escaped(owner)
    return key == owner_part or key.startswith(owner_part + "/")


def owner_key_range(owner: str) -> tuple[str, str, str]:
    """The default conversation's key and the bounds (from, inclusive; to, exclusive) of every
    other key of `owner`:
    in byte order, every key that starts with "owner/" lies between "owner/" and "owner0" ("0"
    follows "/"), so a store with its keys in order (SQLite's index) finds them by a range."""
    owner_part = _escaped(owner)
    return owner_part, owner_part + "/", owner_part + "0"


@functools.lru_cache(maxsize=64)
def search_pattern(query: str) -> re.Pattern[str]:
    """What a search looks for, the same way in every store: `query` as plain text (no pattern
    characters), case-insensitive over Unicode (Python's simple case folding, which keeps each
    character's place, so a snippet can be cut around the match)."""
    return re.compile(re.escape(query), re.IGNORECASE)


def holds(text: str, query: str) -> bool:
    return search_pattern(query).search(text) is not None


class HistoryUnavailable(Exception):
    """The store did not answer in time (e.g. Redis down): the call fails, and says so."""

    user_message = (
        "Your conversations are unavailable right now (the history store did not answer). Please try again shortly."
    )


#: An owner and the list entry to upsert in the same transaction as a write of messages.
Listed = tuple[str, ConversationInfo]


class HistoryStore(Protocol):
    """Every write is one transaction: a crash leaves the conversation (messages and list
    entry together) as it was before the write or as it is after it, never between."""

    async def load(self, conversation: str) -> list[ChatMessage]:
        """The conversation's messages, oldest first."""
        ...

    async def append(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        """Adds `messages` (trimmed to the last `keep`) and, with `listed`, upserts that entry."""
        ...

    async def clear(self, conversation: str) -> None: ...

    async def replace(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        """The conversation becomes exactly `messages` (edit, regenerate, continue, clear,
        restore); with `listed`, that entry is upserted too."""
        ...

    async def drop(self, owner: str, conversation_id: str, conversation: str) -> None:
        """Deletes a conversation: its messages (under the key `conversation`) and its entry."""
        ...

    async def conversations(self, owner: str) -> list[ConversationInfo]:
        """The owner's conversations, most recently updated first."""
        ...

    async def save_conversation(self, owner: str, info: ConversationInfo) -> None: ...

    async def forget_conversation(self, owner: str, conversation_id: str) -> None:
        """Drops the list entry only; the caller clears the messages."""
        ...

    async def search(self, conversations: Sequence[str], query: str) -> dict[str, ChatMessage]:
        """For each conversation (by key) whose messages hold `query` (as `holds` says), its
        first such message, oldest first; conversations with none are left out. The caller
        passes only the caller's own keys, as for `load`."""
        ...

    async def drop_owner(self, owner: str) -> None:
        """Deletes everything stored for `owner` in one transaction where the store allows: the
        list, and every conversation under the owner's keys (`owns_key`), listed or not, the
        default conversation included."""
        ...

    async def close(self) -> None: ...


class InMemoryHistoryStore:
    """For anonymous conversations (gone with their connection) and for tests."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._conversations: dict[str, deque[ChatMessage]] = {}
        self._lists: dict[str, dict[str, ConversationInfo]] = {}

    def __len__(self) -> int:
        return len(self._conversations)

    async def load(self, conversation: str) -> list[ChatMessage]:
        return list(self._conversations.get(conversation, ()))

    async def append(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        turns = self._conversations.get(conversation)
        if turns is None:
            turns = self._conversations[conversation] = deque(maxlen=self._keep)
        turns.extend(messages)
        if listed is not None:
            await self.save_conversation(*listed)

    async def clear(self, conversation: str) -> None:
        self._conversations.pop(conversation, None)

    async def replace(self, conversation: str, messages: Sequence[ChatMessage], listed: Listed | None = None) -> None:
        if messages:
            self._conversations[conversation] = deque(messages, maxlen=self._keep)
        else:
            self._conversations.pop(conversation, None)
        if listed is not None:
            await self.save_conversation(*listed)

    async def drop(self, owner: str, conversation_id: str, conversation: str) -> None:
        self._conversations.pop(conversation, None)
        await self.forget_conversation(owner, conversation_id)

    async def conversations(self, owner: str) -> list[ConversationInfo]:
        return sorted(self._lists.get(owner, {}).values(), key=lambda c: c.updated, reverse=True)

    async def save_conversation(self, owner: str, info: ConversationInfo) -> None:
        """Upserts; an entry keeps the `created` it was first saved with, as in every store."""
        listed = self._lists.setdefault(owner, {})
        old = listed.get(info.id)
        listed[info.id] = replace(info, created=old.created) if old is not None else info

    async def forget_conversation(self, owner: str, conversation_id: str) -> None:
        listed = self._lists.get(owner)
        if listed is not None:
            listed.pop(conversation_id, None)
            if not listed:
                del self._lists[owner]

    async def search(self, conversations: Sequence[str], query: str) -> dict[str, ChatMessage]:
        found: dict[str, ChatMessage] = {}
        for key in conversations:
            first = next((m for m in self._conversations.get(key, ()) if holds(m["content"], query)), None)
            if first is not None:
                found[key] = first
        return found

    async def drop_owner(self, owner: str) -> None:
        for key in [key for key in self._conversations if owns_key(owner, key)]:
            del self._conversations[key]
        self._lists.pop(owner, None)

    async def close(self) -> None:
        self._conversations.clear()
        self._lists.clear()
