"""MessagePack wire helpers for tests, written from the spec and independent of the server's code."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def ext(code: int, data: bytes) -> msgpack.ExtType:
    """Any extension, the reserved negative codes included (ExtType's constructor refuses those)."""
    return tuple.__new__(msgpack.ExtType, (code, data))


#: A 12-byte timestamp extension (code -1) whose seconds are far past year 9999.
TIMESTAMP_PAST_9999 = ext(-1, b"\x00" * 4 + b"\x7f" + b"\xff" * 7)


def framed(payload: bytes) -> bytes:
    """VarInt length prefix: 7 bits per byte, low bits first, high bit set on all but the last."""
    n = len(payload)
    prefix = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        prefix.append(low | (0x80 if n else 0))
        if not n:
            return bytes(prefix) + payload


def take_frames(buffer: bytes | bytearray) -> tuple[list[bytes], int]:
    """The complete framed payloads at the front of `buffer`, and how many bytes they used."""
    payloads: list[bytes] = []
    used, size = 0, len(buffer)
    while used < size:
        length = shift = 0
        index = used
        while True:
            if index >= size:
                return payloads, used
            byte = buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if index + length > size:
            return payloads, used
        payloads.append(bytes(buffer[index : index + length]))
        used = index + length
    return payloads, used


def split_msgpack(buffer: bytearray) -> list[Any]:
    """Take every complete framed message off the front of `buffer`, decoded."""
    payloads, used = take_frames(buffer)
    del buffer[:used]
    return [msgpack.unpackb(payload, timestamp=3) for payload in payloads]
