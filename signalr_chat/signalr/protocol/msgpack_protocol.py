"""The MessagePack hub protocol: each message is an array behind a VarInt length prefix."""

from __future__ import annotations

from typing import Any

import msgpack

from .base import DEFAULT_MAX_MESSAGE_SIZE, HubProtocol, MessageDecoder, TransferFormat, too_large
from .errors import ProtocolError
from .messages import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from .values import msgpack_default

ERROR_RESULT, VOID_RESULT, NON_VOID_RESULT = 1, 2, 3
_MAX_VARINT_BYTES = 5
_EMPTY_MAP: dict[str, str] = {}


# One packer reused for every message: building a Packer allocates its buffer each time.
_packer = msgpack.Packer(default=msgpack_default, use_bin_type=True, autoreset=True)


def packb(value: Any) -> bytes:
    try:
        return _packer.pack(value)  # type: ignore[no-any-return]
    except Exception:
        _packer.reset()
        raise


def varint(length: int) -> bytes:
    out = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(payload: bytes) -> bytes:
    return varint(len(payload)) + payload


def _unpack(payload: bytes) -> Any:
    # Whatever the unpacker raises is about the bytes: a map keyed by an array is a
    # TypeError (unhashable key), a timestamp past year 9999 an OverflowError, deep
    # nesting a ValueError. All of it is malformed input, and only ProtocolError may leave.
    try:
        return msgpack.unpackb(payload, raw=False, timestamp=3, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"Deserializing object of the `Object` type failed. {exc}") from None


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"Reading '{what}' as String failed.")
    return value


def _headers(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        raise ProtocolError("Reading map length for 'headers' failed.")
    if not all(type(k) is str and type(v) is str for k, v in value.items()):
        raise ProtocolError("Reading 'headers' as String failed.")
    return value or None


def _args(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError("Reading array length for 'arguments' failed.")
    return value


def _stream_ids(fields: list[Any], index: int) -> list[str] | None:
    if len(fields) <= index:
        return None
    ids = fields[index]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ProtocolError("Reading array length for 'streamIds' failed.")
    return ids or None


def _need(fields: list[Any], count: int, name: str) -> None:
    if len(fields) < count:
        raise ProtocolError(f"Invalid {name} message: expected at least {count} items.")


def message_from_array(fields: Any) -> HubMessage | None:
    if not isinstance(fields, list) or not fields:
        raise ProtocolError("Reading array length for 'message' failed.")
    kind = fields[0]
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise ProtocolError("Reading 'messageType' as Int32 failed.")
    if kind == MessageType.INVOCATION:
        _need(fields, 5, "Invocation")
        invocation_id = fields[2]
        if invocation_id is not None:
            _str(invocation_id, "invocationId")
        return InvocationMessage(
            _str(fields[3], "target"),
            _args(fields[4]),
            invocation_id,
            _stream_ids(fields, 5),
            _headers(fields[1]),
        )
    if kind == MessageType.STREAM_ITEM:
        _need(fields, 4, "StreamItem")
        return StreamItemMessage(_str(fields[2], "invocationId"), fields[3], _headers(fields[1]))
    if kind == MessageType.COMPLETION:
        _need(fields, 4, "Completion")
        invocation_id = _str(fields[2], "invocationId")
        result_kind = fields[3]
        if result_kind == ERROR_RESULT:
            _need(fields, 5, "Completion")
            return CompletionMessage(invocation_id, error=_str(fields[4], "error"))
        if result_kind == VOID_RESULT:
            return CompletionMessage(invocation_id)
        if result_kind == NON_VOID_RESULT:
            _need(fields, 5, "Completion")
            return CompletionMessage.with_result(invocation_id, fields[4])
        raise ProtocolError("Invalid invocation result kind.")
    if kind == MessageType.STREAM_INVOCATION:
        _need(fields, 5, "StreamInvocation")
        return StreamInvocationMessage(
            _str(fields[2], "invocationId"),
            _str(fields[3], "target"),
            _args(fields[4]),
            _stream_ids(fields, 5),
            _headers(fields[1]),
        )
    if kind == MessageType.CANCEL_INVOCATION:
        _need(fields, 3, "CancelInvocation")
        return CancelInvocationMessage(_str(fields[2], "invocationId"), _headers(fields[1]))
    if kind == MessageType.PING:
        return PING
    if kind == MessageType.CLOSE:
        _need(fields, 2, "Close")
        error = fields[1]
        if error is not None:
            _str(error, "error")
        allow = bool(fields[2]) if len(fields) > 2 else False
        return CloseMessage(error, allow)
    if kind in (MessageType.ACK, MessageType.SEQUENCE):
        _need(fields, 2, "Ack" if kind == MessageType.ACK else "Sequence")
        sequence_id = fields[1]
        if not isinstance(sequence_id, int) or isinstance(sequence_id, bool):
            raise ProtocolError("Reading 'sequenceId' as Int64 failed.")
        return AckMessage(sequence_id) if kind == MessageType.ACK else SequenceMessage(sequence_id)
    return None  # a newer peer's message type: ignore it


def message_to_array(message: HubMessage) -> list[Any]:
    if isinstance(message, (InvocationMessage, StreamInvocationMessage)):
        return [
            int(message.type),
            message.headers or _EMPTY_MAP,
            message.invocation_id,
            message.target,
            message.arguments,
            message.stream_ids or [],
        ]
    if isinstance(message, StreamItemMessage):
        return [2, message.headers or _EMPTY_MAP, message.invocation_id, message.item]
    if isinstance(message, CompletionMessage):
        head: list[Any] = [3, message.headers or _EMPTY_MAP, message.invocation_id]
        if message.error is not None:
            return [*head, ERROR_RESULT, message.error]
        if message.has_result:
            return [*head, NON_VOID_RESULT, message.result]
        return [*head, VOID_RESULT]
    if isinstance(message, CancelInvocationMessage):
        return [5, message.headers or _EMPTY_MAP, message.invocation_id]
    if isinstance(message, PingMessage):
        return [6]
    if isinstance(message, CloseMessage):
        return [7, message.error, message.allow_reconnect]
    if isinstance(message, (AckMessage, SequenceMessage)):
        return [int(message.type), message.sequence_id]
    raise TypeError(f"not a hub message: {message!r}")


class MessagePackDecoder(MessageDecoder):
    """One connection's MessagePack reader: an incomplete message waits for the rest, and one over the limit
    is refused as soon as its length prefix is read, without waiting for its bytes."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message_size: int | None) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def feed(self, data: bytes) -> list[HubMessage]:
        buffer = self._buffer
        buffer += data
        messages: list[HubMessage] = []
        offset = 0
        end = len(buffer)
        while offset < end:
            length = 0
            shift = 0
            index = offset
            while True:
                if index >= end:
                    if index - offset >= _MAX_VARINT_BYTES:
                        raise ProtocolError("Messages over 2GB in size are not supported.")
                    del buffer[:offset]
                    return messages  # the prefix itself is incomplete
                byte = buffer[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
                if index - offset >= _MAX_VARINT_BYTES:
                    raise ProtocolError("Messages over 2GB in size are not supported.")
            if length > 0x7FFFFFFF:
                raise ProtocolError("Messages over 2GB in size are not supported.")
            if self._max is not None and length > self._max:
                raise ProtocolError(too_large(self._max))
            if index + length > end:
                break
            message = message_from_array(_unpack(bytes(buffer[index : index + length])))
            if message is not None:
                messages.append(message)
            offset = index + length
        del buffer[:offset]
        return messages


class MessagePackHubProtocol(HubProtocol):
    """The `messagepack` hub protocol, Binary: one instance (`MESSAGEPACK`) encodes for every connection."""

    name = "messagepack"
    version = 2
    transfer_format = TransferFormat.BINARY

    def __init__(self) -> None:
        self._ping = self.encode(PING)

    def decoder(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> MessagePackDecoder:
        return MessagePackDecoder(max_message_size)

    def encode(self, message: HubMessage) -> bytes:
        return frame(packb(message_to_array(message)))

    def encode_invocation(self, target: str, arguments: list[Any] | tuple[Any, ...]) -> bytes:
        return frame(packb([1, _EMPTY_MAP, None, target, arguments, []]))

    @property
    def ping(self) -> bytes:
        return self._ping
