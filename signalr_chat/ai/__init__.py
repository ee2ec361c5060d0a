"""Language models behind the chat: one interface, three providers.

`ChatModel.stream` yields text deltas as the model produces them and raises an
`AiError` whose `user_message` is safe to show; the real cause is logged here.
"""

# what create_model raises when the settings leave a provider incomplete: it lives in hosting,
# which imports no SDK, so the app's other startup errors do not import the ones here
from ..hosting.errors import ConfigurationError
from .errors import (
    AiAuthFailed,
    AiBusy,
    AiContentFiltered,
    AiContentWithdrawn,
    AiCutShort,
    AiError,
    AiFailed,
    AiInterrupted,
    AiReplyTooLong,
    AiTimedOut,
)
from .model import Attachment, ChatMessage, ChatModel, Cut
from .providers import create_model

__all__ = [
    "AiAuthFailed",
    "AiBusy",
    "AiContentFiltered",
    "AiContentWithdrawn",
    "AiCutShort",
    "AiError",
    "AiFailed",
    "AiInterrupted",
    "AiReplyTooLong",
    "AiTimedOut",
    "Attachment",
    "ChatMessage",
    "ChatModel",
    "ConfigurationError",
    "Cut",
    "create_model",
]
