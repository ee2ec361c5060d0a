"""Hub messages as plain data: what both hub protocols parse into and write from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class MessageType(IntEnum):
    """The `type` of every hub message, numbered as both protocols and ASP.NET Core number it."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


@dataclass(slots=True)
class InvocationMessage:
    """Type 1. No invocation id means the caller does not want an answer."""

    target: str
    arguments: list[Any]
    invocation_id: str | None = None
    stream_ids: list[str] | None = None
    headers: dict[str, str] | None = None
    type = MessageType.INVOCATION


@dataclass(slots=True)
class StreamInvocationMessage:
    """Type 4: the caller expects StreamItems then a Completion."""

    invocation_id: str
    target: str
    arguments: list[Any]
    stream_ids: list[str] | None = None
    headers: dict[str, str] | None = None
    type = MessageType.STREAM_INVOCATION


@dataclass(slots=True)
class StreamItemMessage:
    """Type 2: one item of a stream, server to caller, or client to an upload stream."""

    invocation_id: str
    item: Any
    headers: dict[str, str] | None = None
    type = MessageType.STREAM_ITEM


@dataclass(slots=True)
class CompletionMessage:
    """Type 3. `has_result` tells a void completion from a result that is None."""

    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: dict[str, str] | None = None
    type = MessageType.COMPLETION

    @classmethod
    def with_result(cls, invocation_id: str, result: Any) -> CompletionMessage:
        return cls(invocation_id, result=result, has_result=True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> CompletionMessage:
        return cls(invocation_id, error=error)


@dataclass(slots=True)
class CancelInvocationMessage:
    """Type 5: the client stops a stream it asked for: its token is cancelled and its task stopped."""

    invocation_id: str
    headers: dict[str, str] | None = None
    type = MessageType.CANCEL_INVOCATION


@dataclass(slots=True)
class PingMessage:
    """Type 6: keep-alive, both ways; it carries nothing, so each protocol encodes it once."""

    type = MessageType.PING


@dataclass(slots=True)
class CloseMessage:
    """Type 7: the connection ends, with the error if any; `allow_reconnect` lets the client's automatic
    reconnect run."""

    error: str | None = None
    allow_reconnect: bool = False
    type = MessageType.CLOSE


@dataclass(slots=True)
class AckMessage:
    """Type 8, stateful reconnect: every sequenced message up to `sequence_id` arrived; the sender forgets them."""

    sequence_id: int
    type = MessageType.ACK


@dataclass(slots=True)
class SequenceMessage:
    """Type 9, stateful reconnect: after a reconnect, the id of the next sequenced message the sender sends."""

    sequence_id: int
    type = MessageType.SEQUENCE


HubMessage = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)

PING = PingMessage()

#: Message types that stateful reconnect numbers, buffers and replays.
SEQUENCED_TYPES = frozenset(
    {
        MessageType.INVOCATION,
        MessageType.STREAM_ITEM,
        MessageType.COMPLETION,
        MessageType.STREAM_INVOCATION,
        MessageType.CANCEL_INVOCATION,
    }
)

__all__ = [
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HubMessage",
    "InvocationMessage",
    "MessageType",
    "PING",
    "PingMessage",
    "SEQUENCED_TYPES",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
]
