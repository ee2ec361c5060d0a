"""The negotiate exchange, sans-I/O: query parsing and the response documents."""

from __future__ import annotations

import re

import orjson
import pytest

from signalr_chat.signalr.connections.manager import new_id
from signalr_chat.signalr.protocol.negotiate import (
    ALL_TRANSPORTS,
    LATEST_VERSION,
    NegotiateError,
    TransportKind,
    lower_query,
    negotiate_document,
    requested_version,
    wants_stateful_reconnect,
)

NON_INTEGER = "The client requested a non-integer protocol version."

ALL_AVAILABLE = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


# -- query ---------------------------------------------------------------------


def test_latest_version_is_one() -> None:
    assert LATEST_VERSION == 1


@pytest.mark.parametrize(
    ("query", "version"),
    [
        ({}, 0),
        ({"negotiateversion": ""}, 0),
        ({"negotiateversion": "0"}, 0),
        ({"negotiateversion": "1"}, 1),
        ({"negotiateversion": "2"}, 1),
        ({"negotiateversion": "99"}, 1),
        ({"negotiateversion": " 1"}, 1),
    ],
)
def test_requested_version(query: dict[str, str], version: int) -> None:
    assert requested_version(query) == version


@pytest.mark.parametrize("raw", ["abc", "1.5", "one", "0x1", "1a"])
def test_non_integer_version_is_an_error_with_asp_net_text(raw: str) -> None:
    with pytest.raises(NegotiateError) as info:
        requested_version({"negotiateversion": raw})
    assert str(info.value) == NON_INTEGER


def test_query_names_are_case_insensitive() -> None:
    query = lower_query({"NegotiateVersion": "1", "UseStatefulReconnect": "true", "ID": "tok"})
    assert query == {"negotiateversion": "1", "usestatefulreconnect": "true", "id": "tok"}
    assert requested_version(query) == 1
    assert wants_stateful_reconnect(query)


def test_query_values_keep_their_case() -> None:
    assert lower_query({"id": "AbC-_x"}) == {"id": "AbC-_x"}


@pytest.mark.parametrize(
    ("value", "wanted"),
    [(None, False), ("true", True), ("True", True), ("TRUE", True), ("false", False), ("1", False), ("", False)],
)
def test_wants_stateful_reconnect(value: str | None, wanted: bool) -> None:
    query = {} if value is None else {"usestatefulreconnect": value}
    assert wants_stateful_reconnect(query) is wanted


# -- documents -------------------------------------------------------------------


def test_version_zero_document() -> None:
    document = negotiate_document(0, "the-id", "the-token", ALL_TRANSPORTS, False)
    assert document == {"negotiateVersion": 0, "connectionId": "the-id", "availableTransports": ALL_AVAILABLE}
    assert "connectionToken" not in document


def test_version_one_document() -> None:
    document = negotiate_document(1, "the-id", "the-token", ALL_TRANSPORTS, False)
    assert document == {
        "negotiateVersion": 1,
        "connectionId": "the-id",
        "connectionToken": "the-token",
        "availableTransports": ALL_AVAILABLE,
    }


def test_version_one_document_serializes_exactly() -> None:
    document = negotiate_document(1, "i", "t", ALL_TRANSPORTS, False)
    assert orjson.dumps(document) == (
        b'{"negotiateVersion":1,"connectionId":"i","connectionToken":"t","availableTransports":['
        b'{"transport":"WebSockets","transferFormats":["Text","Binary"]},'
        b'{"transport":"ServerSentEvents","transferFormats":["Text"]},'
        b'{"transport":"LongPolling","transferFormats":["Text","Binary"]}]}'
    )


def test_stateful_reconnect_flag_only_when_granted() -> None:
    granted = negotiate_document(1, "i", "t", ALL_TRANSPORTS, True)
    assert granted["useStatefulReconnect"] is True
    assert "useStatefulReconnect" not in negotiate_document(1, "i", "t", ALL_TRANSPORTS, False)


def test_no_protocol_version_property() -> None:
    # old ASP.NET SignalR's ProtocolVersion makes the client refuse the server
    for version in (0, 1):
        document = negotiate_document(version, "i", "t", ALL_TRANSPORTS, True)
        assert "ProtocolVersion" not in document and "protocolVersion" not in document
        assert "url" not in document and "error" not in document


def test_transports_keep_a_fixed_order_and_subset() -> None:
    document = negotiate_document(1, "i", "t", [TransportKind.LONG_POLLING, TransportKind.WEBSOCKETS], False)
    assert document["availableTransports"] == [ALL_AVAILABLE[0], ALL_AVAILABLE[2]]
    only_sse = negotiate_document(1, "i", "t", frozenset({TransportKind.SERVER_SENT_EVENTS}), False)
    assert only_sse["availableTransports"] == [ALL_AVAILABLE[1]]


# -- ids -----------------------------------------------------------------------


def test_ids_are_url_safe_and_unique() -> None:
    ids = {new_id() for _ in range(500)}
    assert len(ids) == 500
    for value in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", value), value
