"""The handshake record on bytes: complete, incomplete, trailing data, malformed, responses."""

from __future__ import annotations

import json

import pytest

from signalr_chat.signalr.protocol import HandshakeRequest, ProtocolError, handshake_response, parse_handshake_request

REQUEST = b'{"protocol":"json","version":1}\x1e'


def test_complete_request() -> None:
    assert parse_handshake_request(REQUEST) == (HandshakeRequest("json", 1), len(REQUEST))


def test_messagepack_request_and_version_two() -> None:
    data = b'{"protocol":"messagepack","version":2}\x1e'
    assert parse_handshake_request(data) == (HandshakeRequest("messagepack", 2), len(data))


def test_property_order_extra_properties_and_whitespace() -> None:
    data = b' { "version" : 1 , "extra": [1, {"a": null}], "protocol" : "json" } \x1e'
    assert parse_handshake_request(data) == (HandshakeRequest("json", 1), len(data))


def test_version_zero_is_parsed() -> None:
    # signalrcore and pysignalr negotiate without negotiateVersion and send version 0 or 1
    data = b'{"protocol":"json","version":0}\x1e'
    assert parse_handshake_request(data) == (HandshakeRequest("json", 0), len(data))


def test_unknown_protocol_name_is_parsed_for_the_caller_to_refuse() -> None:
    data = b'{"protocol":"x","version":1}\x1e'
    assert parse_handshake_request(data) == (HandshakeRequest("x", 1), len(data))


@pytest.mark.parametrize("data", [b"", b"{", b'{"protocol":"json","version":1}', b'{"protocol":"json"'])
def test_incomplete_request_returns_none(data: bytes) -> None:
    assert parse_handshake_request(data) is None


def test_request_arriving_byte_by_byte() -> None:
    buffer = bytearray()
    for i, byte in enumerate(REQUEST):
        buffer.append(byte)
        result = parse_handshake_request(buffer)
        if i < len(REQUEST) - 1:
            assert result is None, i
        else:
            assert result == (HandshakeRequest("json", 1), len(REQUEST))


def test_trailing_data_is_left_for_the_hub_protocol() -> None:
    trailing = b'{"type":6}\x1e{"type":1,"target":"x","arguments":[]}\x1e'
    data = REQUEST + trailing
    parsed = parse_handshake_request(data)
    assert parsed is not None
    request, used = parsed
    assert request == HandshakeRequest("json", 1)
    assert data[used:] == trailing


def test_trailing_binary_data_after_the_separator() -> None:
    data = b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06'
    parsed = parse_handshake_request(bytearray(data))
    assert parsed is not None
    assert data[parsed[1] :] == b"\x02\x91\x06"


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"{bad json}\x1e", None),
        (b"[]\x1e", None),
        (b'"json"\x1e', None),
        (b"\x1e", None),
        (b'{"version":1}\x1e', r"^Missing required property 'protocol'\."),
        (b'{"protocol":null,"version":1}\x1e', r"^Missing required property 'protocol'\."),
        (b'{"protocol":"json"}\x1e', r"^Missing required property 'version'\."),
        (b'{"protocol":1,"version":1}\x1e', None),
        (b'{"protocol":"json","version":"1"}\x1e', None),
        (b'{"protocol":"json","version":1.5}\x1e', None),
        (b'{"protocol":"json","version":true}\x1e', None),
    ],
)
def test_malformed_request_raises(data: bytes, pattern: str | None) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        parse_handshake_request(data)


def test_malformed_request_with_trailing_data_still_raises() -> None:
    with pytest.raises(ProtocolError):
        parse_handshake_request(b'{"protocol":"json",}\x1e{"type":6}\x1e')


def test_record_within_the_size_limit_is_parsed() -> None:
    # the separator is the limit's last byte: the record, separator included, fits
    data = b'{"protocol":"json","version":1,"pad":"' + b"x" * 100 + b'"}\x1e{"type":6}\x1e'
    size = data.index(b"\x1e") + 1
    assert parse_handshake_request(data, max_size=size) == (HandshakeRequest("json", 1), size)


def test_record_over_the_size_limit_is_never_complete() -> None:
    # ASP.NET Core searches only the first max-size bytes for the separator: a longer
    # record stays incomplete even when all of it arrived at once, and the caller refuses it
    data = b'{"protocol":"json","version":1,"pad":"' + b"x" * 100 + b'"}\x1e'
    assert parse_handshake_request(data, max_size=len(data) - 1) is None
    assert parse_handshake_request(data, max_size=None) is not None


def test_success_response_is_exactly_empty_object() -> None:
    assert handshake_response() == b"{}\x1e"


@pytest.mark.parametrize(
    "error",
    [
        "The protocol 'x' is not supported.",
        "The server does not support version 3 of the 'json' protocol.",
        "Handshake was canceled.",
        "An unexpected error occurred during connection handshake.",
        "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format.",
    ],
)
def test_error_response(error: str) -> None:
    response = handshake_response(error)
    assert response.endswith(b"\x1e") and response.count(b"\x1e") == 1
    assert json.loads(response[:-1]) == {"error": error}


def test_error_response_exact_bytes() -> None:
    assert handshake_response("The protocol 'x' is not supported.") == (
        b'{"error":"The protocol \'x\' is not supported."}\x1e'
    )


def test_error_response_escapes_json() -> None:
    response = handshake_response('say "hi"\n\\')
    assert json.loads(response[:-1]) == {"error": 'say "hi"\n\\'}
    assert b"\n" not in response
