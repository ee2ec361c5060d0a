"""Sans-I/O SignalR hub protocol: bytes in, messages out; no sockets, no event loop."""

from .base import DEFAULT_MAX_MESSAGE_SIZE, HubProtocol, MessageDecoder, TransferFormat
from .errors import ProtocolError
from .handshake import HandshakeRequest, handshake_response, parse_handshake_request
from .json_protocol import JsonHubProtocol
from .messages import (
    SEQUENCED_TYPES,
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
from .msgpack_protocol import MessagePackHubProtocol
from .values import UnencodableValue

JSON = JsonHubProtocol()
MESSAGEPACK = MessagePackHubProtocol()
PROTOCOLS: dict[str, HubProtocol] = {JSON.name: JSON, MESSAGEPACK.name: MESSAGEPACK}

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "JSON",
    "MESSAGEPACK",
    "PROTOCOLS",
    "SEQUENCED_TYPES",
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeRequest",
    "HubMessage",
    "HubProtocol",
    "InvocationMessage",
    "JsonHubProtocol",
    "MessageDecoder",
    "MessagePackHubProtocol",
    "MessageType",
    "PingMessage",
    "ProtocolError",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "TransferFormat",
    "UnencodableValue",
    "handshake_response",
    "parse_handshake_request",
]
