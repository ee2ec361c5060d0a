"""Bytes on the wire, built by hand: RFC 6455 client frames, SignalR records, HTTP/1.1 requests.

The load generator must cost less than the servers it measures, so frames are built once
(fixed mask key) and responses are parsed only as far as a check needs.
"""

from __future__ import annotations

from typing import Any

import msgpack
import orjson

from tests.support.msgpack_wire import framed, take_frames

#: A fixed, non-zero mask key: the server unmasks every frame as it would a random one.
MASK_KEY = b"\x5a\xc3\x3c\xa5"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: First-byte bit of a permessage-deflate compressed message.
RSV1 = 0x40
#: What a compressed message's deflate stream lacks at its end (RFC 7692, 7.2.2).
DEFLATE_TAIL = b"\x00\x00\xff\xff"
RS = b"\x1e"
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key; the accept value is not checked


def mask(payload: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (MASK_KEY * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int) -> bytes:
    """One final, masked frame, as a client must send it."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + MASK_KEY + mask(payload)


def parse_frames(buffer: bytearray) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the front of `buffer` (opcode, payload) and the bytes they used.

    The opcode keeps RSV1 (0x40): set, the payload is permessage-deflate compressed.
    """
    frames: list[tuple[int, bytes]] = []
    pos, size = 0, len(buffer)
    while size - pos >= 2:
        length = buffer[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            if size - pos < 4:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            if size - pos < 10:
                break
            length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            start = pos + 10
        end = start + length
        if end > size:
            break
        frames.append((buffer[pos] & (RSV1 | 0x0F), bytes(buffer[start:end])))
        pos = end
    return frames, pos


# -- SignalR records -------------------------------------------------------------


def handshake(protocol: str) -> bytes:
    return orjson.dumps({"protocol": protocol, "version": 1}) + RS


def invocation(protocol: str, target: str, arguments: list[Any], invocation_id: str | None = None) -> bytes:
    """One Invocation record; without an id it is fire-and-forget (no Completion)."""
    if protocol == "json":
        obj: dict[str, Any] = {"type": 1}
        if invocation_id is not None:
            obj["invocationId"] = invocation_id
        obj["target"] = target
        obj["arguments"] = arguments
        return orjson.dumps(obj) + RS
    packed: bytes = msgpack.packb([1, {}, invocation_id, target, arguments], use_bin_type=True)
    return framed(packed)


def ping(protocol: str) -> bytes:
    if protocol == "json":
        return b'{"type":6}' + RS
    return framed(b"\x91\x06")


def split_records(protocol: str, payload: bytes) -> list[bytes]:
    """The records of one frame or body: RS-terminated JSON, or VarInt-prefixed MessagePack."""
    if protocol == "json":
        return payload.split(RS)[:-1]
    return take_frames(payload)[0]


def decode(protocol: str, record: bytes) -> Any:
    """A record as the protocol's data: a dict (JSON) or a list (MessagePack)."""
    if protocol == "json":
        return orjson.loads(record)
    return msgpack.unpackb(record, raw=False)


def message_type(protocol: str, decoded: Any) -> int:
    return int(decoded["type"] if protocol == "json" else decoded[0])


def invocation_arguments(protocol: str, decoded: Any) -> list[Any]:
    return list(decoded["arguments"] if protocol == "json" else decoded[4])


def completion_result(protocol: str, decoded: Any) -> Any:
    if protocol == "json":
        return decoded.get("result")
    return decoded[4] if len(decoded) > 4 else None


# -- HTTP/1.1 --------------------------------------------------------------------


def http_request(
    method: str, target: str, port: int, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade_request(target: str, port: int, deflate: bool = False) -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": WS_KEY.decode(),
        "Sec-WebSocket-Version": "13",
    }
    if deflate:  # what browsers offer
        headers["Sec-WebSocket-Extensions"] = "permessage-deflate; client_max_window_bits"
    return http_request("GET", target, port, headers)


class HttpResponses:
    """Incremental HTTP/1.1 response reader: Content-Length and chunked bodies.

    In streaming mode (Server-Sent Events) each chunk is handed over as it arrives instead
    of waiting for the end of the body.
    """

    __slots__ = ("_body", "_buffer", "_chunked", "_headers", "_remaining", "_status", "streaming")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._remaining = -1  # -1: reading headers
        self._chunked = False
        self._body = bytearray()
        self.streaming = False

    def feed(self, data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
        """Complete responses (status, lower-cased headers, body); streamed chunks come with status 0."""
        self._buffer += data
        out: list[tuple[int, dict[str, str], bytes]] = []
        while self._step(out):
            pass
        return out

    def take_rest(self) -> bytes:
        """Bytes after the last complete response (after a 101, the WebSocket stream)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def _step(self, out: list[tuple[int, dict[str, str], bytes]]) -> bool:
        buffer = self._buffer
        if self._remaining == -1:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            self._status = int(head[0].split(" ", 2)[1])
            self._headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            self._chunked = self._headers.get("transfer-encoding", "").lower() == "chunked"
            self._remaining = 0 if self._chunked else int(self._headers.get("content-length", "0"))
            if self._status == 101 or (self._status == 200 and self.streaming and self._chunked):
                out.append((self._status, self._headers, b""))
                if self._status == 101:
                    return False
            elif not self._chunked and self._remaining == 0:
                self._finish(out)
            return True
        if self._chunked:
            if self._remaining == 0:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    return False
                size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
                del buffer[: line_end + 2]
                if size == 0:
                    if len(buffer) < 2:
                        buffer[:0] = b"0\r\n"  # wait for the final CRLF
                        return False
                    del buffer[:2]
                    self._finish(out)
                    return True
                self._remaining = size + 2  # the chunk and its CRLF
            if len(buffer) < self._remaining:
                return False
            chunk = bytes(buffer[: self._remaining - 2])
            del buffer[: self._remaining]
            self._remaining = 0
            if self.streaming:
                out.append((0, self._headers, chunk))
            else:
                self._body += chunk
            return True
        if len(buffer) < self._remaining:
            return False
        self._body += buffer[: self._remaining]
        del buffer[: self._remaining]
        self._finish(out)
        return True

    def _finish(self, out: list[tuple[int, dict[str, str], bytes]]) -> None:
        out.append((self._status, self._headers, bytes(self._body)))
        self._body.clear()
        self._remaining = -1
        self._chunked = False
