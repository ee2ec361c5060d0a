"""The JSON hub protocol: one UTF-8 JSON object per record, each ended by 0x1E."""

from __future__ import annotations

from typing import Any

import orjson

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
from .values import JSON_OPTIONS, json_default

RS = b"\x1e"


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default, option=JSON_OPTIONS)


def _require(obj: dict[str, Any], name: str, kind: type, kind_name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise ProtocolError(f"Missing required property '{name}'.")
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError(f"Expected '{name}' to be of type {kind_name}.")
    return value


def _optional_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"Expected '{name}' to be of type String.")
    return value


def _stream_ids(obj: dict[str, Any]) -> list[str] | None:
    ids = obj.get("streamIds")
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ProtocolError("Expected 'streamIds' to be of type Array of String.")
    return ids or None


def _headers(obj: dict[str, Any]) -> dict[str, str] | None:
    headers = obj.get("headers")
    if headers is None:
        return None
    if not isinstance(headers, dict):
        raise ProtocolError("Expected 'headers' to be of type StartObject.")
    for name, value in headers.items():
        if not isinstance(value, str):
            raise ProtocolError(f"Expected header '{name}' to be of type String.")
    return headers or None


def _arguments(obj: dict[str, Any]) -> list[Any]:
    return _require(obj, "arguments", list, "Array")  # type: ignore[no-any-return]


def message_from_object(obj: Any) -> HubMessage | None:
    """Validate a decoded record; None for message types this server does not know."""
    if type(obj) is dict:  # the hot path: a plain invocation, valid, checked in one pass
        kind = obj.get("type")
        if kind == 1 and type(kind) is int:
            target, arguments, invocation_id = obj.get("target"), obj.get("arguments"), obj.get("invocationId")
            if (
                type(target) is str
                and type(arguments) is list
                and (invocation_id is None or type(invocation_id) is str)
                and obj.get("streamIds") is None
                and obj.get("headers") is None
            ):
                return InvocationMessage(target, arguments, invocation_id)
    # everything else, and the exact error for each thing that can be wrong
    if not isinstance(obj, dict):
        raise ProtocolError("Unexpected JSON Token Type. Expected a JSON Object.")
    kind = _require(obj, "type", int, "Integer")
    headers = _headers(obj)
    if kind == MessageType.INVOCATION:
        return InvocationMessage(
            _require(obj, "target", str, "String"),
            _arguments(obj),
            _optional_str(obj, "invocationId"),
            _stream_ids(obj),
            headers,
        )
    if kind == MessageType.STREAM_ITEM:
        if "item" not in obj:
            raise ProtocolError("Missing required property 'item'.")
        return StreamItemMessage(_require(obj, "invocationId", str, "String"), obj["item"], headers)
    if kind == MessageType.COMPLETION:
        invocation_id = _require(obj, "invocationId", str, "String")
        if "error" in obj and "result" in obj:
            raise ProtocolError("The 'error' and 'result' properties are mutually exclusive.")
        if "result" in obj:
            return CompletionMessage.with_result(invocation_id, obj["result"])
        error = _optional_str(obj, "error")
        return CompletionMessage(invocation_id, error=error)
    if kind == MessageType.STREAM_INVOCATION:
        return StreamInvocationMessage(
            _require(obj, "invocationId", str, "String"),
            _require(obj, "target", str, "String"),
            _arguments(obj),
            _stream_ids(obj),
            headers,
        )
    if kind == MessageType.CANCEL_INVOCATION:
        return CancelInvocationMessage(_require(obj, "invocationId", str, "String"), headers)
    if kind == MessageType.PING:
        return PING
    if kind == MessageType.CLOSE:
        allow = obj.get("allowReconnect", False)
        return CloseMessage(_optional_str(obj, "error"), bool(allow))
    if kind == MessageType.ACK:
        return AckMessage(_require(obj, "sequenceId", int, "Integer"))
    if kind == MessageType.SEQUENCE:
        return SequenceMessage(_require(obj, "sequenceId", int, "Integer"))
    return None  # a newer peer's message type: ignore it, as ASP.NET Core does


def message_to_object(message: HubMessage) -> dict[str, Any]:
    if isinstance(message, (InvocationMessage, StreamInvocationMessage)):
        obj: dict[str, Any] = {"type": int(message.type)}
        if message.invocation_id is not None:
            obj["invocationId"] = message.invocation_id
        obj["target"] = message.target
        obj["arguments"] = message.arguments
        if message.stream_ids:
            obj["streamIds"] = message.stream_ids
        return obj
    if isinstance(message, StreamItemMessage):
        return {"type": 2, "invocationId": message.invocation_id, "item": message.item}
    if isinstance(message, CompletionMessage):
        obj = {"type": 3, "invocationId": message.invocation_id}
        if message.error is not None:
            obj["error"] = message.error
        elif message.has_result:
            obj["result"] = message.result
        return obj
    if isinstance(message, CancelInvocationMessage):
        return {"type": 5, "invocationId": message.invocation_id}
    if isinstance(message, PingMessage):
        return {"type": 6}
    if isinstance(message, CloseMessage):
        obj = {"type": 7}
        if message.error is not None:
            obj["error"] = message.error
        if message.allow_reconnect:
            obj["allowReconnect"] = True
        return obj
    if isinstance(message, (AckMessage, SequenceMessage)):
        return {"type": int(message.type), "sequenceId": message.sequence_id}
    raise TypeError(f"not a hub message: {message!r}")


class JsonDecoder(MessageDecoder):
    """One connection's JSON reader: the bytes after the last 0x1E wait for the rest of their record."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_message_size: int | None) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def feed(self, data: bytes) -> list[HubMessage]:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        records = data.split(RS)
        tail = records.pop()  # bytes after the last separator: an incomplete record
        if self._max is not None and len(tail) > self._max:
            raise ProtocolError(too_large(self._max))
        if tail:
            self._buffer += tail
        messages = []
        for record in records:
            if self._max is not None and len(record) > self._max:
                raise ProtocolError(too_large(self._max))
            try:
                obj = orjson.loads(record)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"Error reading JSON. {exc}") from None
            message = message_from_object(obj)
            if message is not None:
                messages.append(message)
        return messages


class JsonHubProtocol(HubProtocol):
    """The `json` hub protocol, Text: one instance (`JSON`) encodes for every connection."""

    name = "json"
    version = 2
    transfer_format = TransferFormat.TEXT

    def __init__(self) -> None:
        self._ping = self.encode(PING)

    def decoder(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> JsonDecoder:
        return JsonDecoder(max_message_size)

    def encode(self, message: HubMessage) -> bytes:
        return dumps(message_to_object(message)) + RS

    def encode_invocation(self, target: str, arguments: list[Any] | tuple[Any, ...]) -> bytes:
        return dumps({"type": 1, "target": target, "arguments": arguments}) + RS

    @property
    def ping(self) -> bytes:
        return self._ping


__all__ = ["JsonDecoder", "JsonHubProtocol", "dumps"]
