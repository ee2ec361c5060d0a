"""The handshake: the first record each way, always JSON text, whatever the hub protocol."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .errors import ProtocolError

RECORD_SEPARATOR = 0x1E
HANDSHAKE_SUCCESS = b"{}\x1e"


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The client's first record: which hub protocol, and which version of it, the connection speaks."""

    protocol: str
    version: int


def parse_handshake_request(
    buffer: bytes | bytearray, max_size: int | None = None
) -> tuple[HandshakeRequest, int] | None:
    """Return the request and how many bytes it used, or None while the record is incomplete.

    The rest of the buffer after the separator belongs to the hub protocol: a client may
    send its first messages in the same frame as the handshake. As ASP.NET Core does, only
    the first `max_size` bytes are searched for the separator: a longer record stays
    "incomplete" however it arrived, and the caller refuses it once the buffer outgrows
    the limit.
    """
    end = buffer.find(RECORD_SEPARATOR, 0, max_size)
    if end < 0:
        return None
    try:
        payload = orjson.loads(bytes(buffer[:end]))
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"Error reading JSON. {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError("Unexpected JSON Token Type. Expected a JSON Object.")
    protocol = payload.get("protocol")
    if protocol is None:
        raise ProtocolError("Missing required property 'protocol'.")
    if not isinstance(protocol, str):
        raise ProtocolError("Expected 'protocol' to be of type String.")
    version = payload.get("version")
    if version is None:
        raise ProtocolError("Missing required property 'version'.")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("Expected 'version' to be of type Integer.")
    return HandshakeRequest(protocol, version), end + 1


def handshake_response(error: str | None = None) -> bytes:
    """`{}` on success; `{"error": ...}` before the server closes a failed handshake."""
    if error is None:
        return HANDSHAKE_SUCCESS
    return orjson.dumps({"error": error}) + b"\x1e"
