"""Language models behind the chat: one interface, three providers.

`ChatModel.stream` yields text deltas as the model produces them and raises an
`AiError` whose `user_message` is safe to show; the real cause is logged here.
"""

from .errors import (
    AiAuthFailed,
    AiBusy,
    AiContentFiltered,
    AiError,
    AiFailed,
    AiInterrupted,
    AiReplyTooLong,
    AiTimedOut,
    ConfigurationError,
)
from .model import ChatMessage, ChatModel
from .providers import create_model

__all__ = [
    "AiAuthFailed",
    "AiBusy",
    "AiContentFiltered",
    "AiError",
    "AiFailed",
    "AiInterrupted",
    "AiReplyTooLong",
    "AiTimedOut",
    "ChatMessage",
    "ChatModel",
    "ConfigurationError",
    "create_model",
]
