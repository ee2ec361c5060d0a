"""Fit a conversation into the model's context window."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..ai import ChatMessage
from ..ai.attachments import message_tokens

#: Role markers and separators a chat template adds around each message, in tokens.
MESSAGE_OVERHEAD = 5
#: The assistant header the model continues from.
REPLY_PRIMING = 3


class TooLongForModel(ValueError):
    """The system prompt (with the conversation's instructions) and the new message alone exceed the budget."""


def bare(message: ChatMessage) -> ChatMessage:
    """The message as a model takes it: a stored reply's model label is for the front ends only;
    a user message's attachments go with it (earlier turns' files stay in what the model sees)."""
    kept: ChatMessage = {"role": message["role"], "content": message["content"]}
    if message.get("attachments"):
        kept["attachments"] = message["attachments"]
    return kept


def fit_to_budget(
    system: ChatMessage,
    history: Sequence[ChatMessage],
    message: ChatMessage,
    budget: int,
    count: Callable[[str], int],
    instructions: ChatMessage | None = None,
) -> list[ChatMessage]:
    """[system, instructions, *newest history that fits, message], oldest turns dropped first.

    The conversation's custom instructions, when it has some, come right after the server's
    system prompt and are paid for first, like it: the history gets what is left. The kept
    history starts at a user turn, so the model never sees a reply to a question that was
    cut away.
    """
    head = [system] if instructions is None else [system, instructions]
    sizes = [message_tokens(m, count) + MESSAGE_OVERHEAD for m in history]
    total = REPLY_PRIMING + sum(count(m["content"]) + MESSAGE_OVERHEAD for m in head)
    total += message_tokens(message, count) + MESSAGE_OVERHEAD
    if total > budget:
        raise TooLongForModel
    start = len(history)
    while start > 0 and total + sizes[start - 1] <= budget:
        start -= 1
        total += sizes[start]
    while start < len(history) and history[start]["role"] != "user":
        start += 1
    return [*head, *(bare(m) for m in history[start:]), message]
