"""MessagePack wire helpers for tests, written from the spec and independent of the server's code."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


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


def split_msgpack(buffer: bytearray) -> list[Any]:
    """Take every complete framed message off the front of `buffer`, decoded."""
    records: list[Any] = []
    while buffer:
        length = shift = index = 0
        while True:
            if index >= len(buffer):
                return records
            byte = buffer[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if index + length > len(buffer):
            return records
        records.append(msgpack.unpackb(bytes(buffer[index : index + length]), timestamp=3))
        del buffer[: index + length]
    return records
