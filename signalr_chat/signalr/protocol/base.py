"""What every hub protocol provides to the connection layer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, ClassVar

from .messages import HubMessage, InvocationMessage

DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024


class TransferFormat(Enum):
    """Text or binary records: a Binary protocol (MessagePack) needs a transport that carries binary."""

    TEXT = "Text"
    BINARY = "Binary"


def too_large(max_message_size: int) -> str:
    return (
        f"The maximum message size of {max_message_size}B was exceeded. "
        "The message size can be configured in AddHubOptions."
    )


class MessageDecoder(ABC):
    """Incremental: bytes arrive in any split, complete messages come out."""

    @abstractmethod
    def feed(self, data: bytes) -> list[HubMessage]:
        """Consume `data`; return every message completed by it (unknown types are dropped)."""


class HubProtocol(ABC):
    """A hub protocol as the layers above use it, whichever the handshake chose: a decoder per connection,
    and complete records out, so a record can be encoded once and sent to many."""

    name: ClassVar[str]
    version: ClassVar[int]
    transfer_format: ClassVar[TransferFormat]

    @abstractmethod
    def decoder(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> MessageDecoder: ...

    @abstractmethod
    def encode(self, message: HubMessage) -> bytes:
        """One complete record, framing included, ready to concatenate with others."""

    def encode_invocation(self, target: str, arguments: list[Any] | tuple[Any, ...]) -> bytes:
        """The broadcast hot path: a fire-and-forget invocation, encoded once for many."""
        return self.encode(InvocationMessage(target, list(arguments)))

    @property
    @abstractmethod
    def ping(self) -> bytes: ...
