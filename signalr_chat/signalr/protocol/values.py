"""The values a hub method may send or return: one model, the same for both hub protocols.

| Python                        | JSON                             | MessagePack            |
|-------------------------------|----------------------------------|------------------------|
| str, int, float, bool, None   | as is                            | as is                  |
| list, tuple, set, frozenset   | array                            | array                  |
| dict                          | object (keys as strings)         | map                    |
| bytes, bytearray, memoryview  | base64 string (System.Text.Json) | bin                    |
| datetime                      | ISO 8601, UTC as `Z`; naive=UTC  | timestamp extension    |
| uuid.UUID                     | string, as .NET sends a Guid     | string                 |
| Enum                          | its value                        | its value              |
| dataclass, pydantic model     | object of its fields             | map of its fields      |

Anything else fails the send with `UnencodableValue`, in both protocols alike.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import uuid
from typing import Any

import msgpack
import orjson


class UnencodableValue(TypeError):
    """A value outside the model: the send or result fails; nothing is queued."""


#: orjson writes datetime, UUID, Enum and dataclasses itself; these options make it write them as .NET does.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    raise UnencodableValue(f"Type is not serializable: {type(value).__name__}")


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def msgpack_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # the JS client decodes the timestamp extension into a Date; naive means UTC
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        # exact arithmetic: msgpack's from_datetime truncates a float toward zero, which
        # moves an instant before 1970 with a fraction of a second by one second
        delta = value - _EPOCH
        return msgpack.Timestamp(delta.days * 86_400 + delta.seconds, delta.microseconds * 1000)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="python")
    raise UnencodableValue(f"Type is not serializable: {type(value).__name__}")
