"""Fit a conversation into the model's context window."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..ai import ChatMessage

#: Role markers and separators a chat template adds around each message, in tokens.
MESSAGE_OVERHEAD = 5
#: The assistant header the model continues from.
REPLY_PRIMING = 3


class TooLongForModel(ValueError):
    """The system prompt and the new message alone exceed the budget."""


def fit_to_budget(
    system: ChatMessage,
    history: Sequence[ChatMessage],
    message: ChatMessage,
    budget: int,
    count: Callable[[str], int],
) -> list[ChatMessage]:
    """[system, *newest history that fits, message], oldest turns dropped first.

    The kept history starts at a user turn, so the model never sees a reply to a
    question that was cut away.
    """
    sizes = [count(m["content"]) + MESSAGE_OVERHEAD for m in history]
    total = REPLY_PRIMING + count(system["content"]) + count(message["content"]) + 2 * MESSAGE_OVERHEAD
    if total > budget:
        raise TooLongForModel
    start = len(history)
    while start > 0 and total + sizes[start - 1] <= budget:
        start -= 1
        total += sizes[start]
    while start < len(history) and history[start]["role"] != "user":
        start += 1
    return [system, *history[start:], message]
