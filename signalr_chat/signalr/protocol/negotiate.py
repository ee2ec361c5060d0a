"""The negotiate exchange, sans-I/O: query in, JSON document out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any


class TransportKind(Enum):
    """The transports by the names negotiate and the clients use."""

    WEBSOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


ALL_TRANSPORTS = frozenset(TransportKind)

_FORMATS = {
    TransportKind.WEBSOCKETS: ["Text", "Binary"],
    TransportKind.SERVER_SENT_EVENTS: ["Text"],
    TransportKind.LONG_POLLING: ["Text", "Binary"],
}
_ORDER = (TransportKind.WEBSOCKETS, TransportKind.SERVER_SENT_EVENTS, TransportKind.LONG_POLLING)
LATEST_VERSION = 1


class NegotiateError(ValueError):
    """Answered as 200 `{"error": ...}`: the client throws the text."""


def lower_query(query: Mapping[str, str]) -> dict[str, str]:
    """Query names match case-insensitively, as in ASP.NET Core."""
    return {name.lower(): value for name, value in query.items()}


def requested_version(query: Mapping[str, str]) -> int:
    """Missing means 0 (older clients); newer than ours is lowered to ours."""
    raw = query.get("negotiateversion")
    if raw is None or raw == "":
        return 0
    try:
        version = int(raw)
    except ValueError:
        raise NegotiateError("The client requested a non-integer protocol version.") from None
    return min(max(version, 0), LATEST_VERSION)


def wants_stateful_reconnect(query: Mapping[str, str]) -> bool:
    return query.get("usestatefulreconnect", "").lower() == "true"


def negotiate_document(
    version: int,
    connection_id: str,
    connection_token: str,
    transports: Iterable[TransportKind],
    stateful_reconnect: bool,
    token_lifetime: int | None = None,
) -> dict[str, Any]:
    """`token_lifetime`: the seconds the caller's authentication has left, reported as
    `tokenLifetimeSeconds` where authentication refresh is served (the client schedules its
    refresh from it)."""
    enabled = set(transports)
    document: dict[str, Any] = {"negotiateVersion": version, "connectionId": connection_id}
    if version >= 1:
        document["connectionToken"] = connection_token
    document["availableTransports"] = [
        {"transport": kind.value, "transferFormats": _FORMATS[kind]} for kind in _ORDER if kind in enabled
    ]
    if stateful_reconnect:
        document["useStatefulReconnect"] = True
    if token_lifetime is not None:
        document["tokenLifetimeSeconds"] = token_lifetime
    return document
