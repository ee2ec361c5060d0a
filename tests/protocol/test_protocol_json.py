"""The JSON hub protocol on bytes: exact records out, every message type in, framing, errors."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from signalr_chat.signalr.protocol import (
    JSON,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    JsonHubProtocol,
    PingMessage,
    ProtocolError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)
from signalr_chat.signalr.protocol.base import too_large

RS = b"\x1e"


def decode(data: bytes, max_message_size: int | None = 32 * 1024) -> list[HubMessage]:
    return JSON.decoder(max_message_size).feed(data)


def decode_one(data: bytes) -> HubMessage:
    messages = decode(data)
    assert len(messages) == 1, messages
    return messages[0]


# -- identity ------------------------------------------------------------------


def test_protocol_identity() -> None:
    assert JsonHubProtocol.name == "json"
    assert JsonHubProtocol.version == 2
    assert JsonHubProtocol.transfer_format is TransferFormat.TEXT


# -- writing: exact bytes ----------------------------------------------------------

WRITE_CASES: list[tuple[HubMessage, bytes]] = [
    (InvocationMessage("Send", [1, "a"]), b'{"type":1,"target":"Send","arguments":[1,"a"]}'),
    (
        InvocationMessage("Send", [], "7"),
        b'{"type":1,"invocationId":"7","target":"Send","arguments":[]}',
    ),
    (
        InvocationMessage("Up", [1], "3", ["s1", "s2"]),
        b'{"type":1,"invocationId":"3","target":"Up","arguments":[1],"streamIds":["s1","s2"]}',
    ),
    (StreamItemMessage("4", {"k": [1, 2]}), b'{"type":2,"invocationId":"4","item":{"k":[1,2]}}'),
    (StreamItemMessage("4", None), b'{"type":2,"invocationId":"4","item":null}'),
    (CompletionMessage("5"), b'{"type":3,"invocationId":"5"}'),
    (CompletionMessage.with_result("5", 42), b'{"type":3,"invocationId":"5","result":42}'),
    (CompletionMessage.with_result("5", None), b'{"type":3,"invocationId":"5","result":null}'),
    (CompletionMessage.with_error("5", "boom"), b'{"type":3,"invocationId":"5","error":"boom"}'),
    (
        StreamInvocationMessage("6", "Counter", [3, 0.5]),
        b'{"type":4,"invocationId":"6","target":"Counter","arguments":[3,0.5]}',
    ),
    (
        StreamInvocationMessage("6", "Echo", [], ["u"]),
        b'{"type":4,"invocationId":"6","target":"Echo","arguments":[],"streamIds":["u"]}',
    ),
    (CancelInvocationMessage("6"), b'{"type":5,"invocationId":"6"}'),
    (PingMessage(), b'{"type":6}'),
    (CloseMessage(), b'{"type":7}'),
    (CloseMessage("Connection closed with an error."), b'{"type":7,"error":"Connection closed with an error."}'),
    (CloseMessage(None, True), b'{"type":7,"allowReconnect":true}'),
    (CloseMessage("bye", True), b'{"type":7,"error":"bye","allowReconnect":true}'),
    (AckMessage(3), b'{"type":8,"sequenceId":3}'),
    (SequenceMessage(12), b'{"type":9,"sequenceId":12}'),
]


@pytest.mark.parametrize(("message", "expected"), WRITE_CASES, ids=lambda v: type(v).__name__)
def test_encode_exact_bytes(message: HubMessage, expected: bytes) -> None:
    assert JSON.encode(message) == expected + RS


def test_ping_property_is_the_encoded_ping() -> None:
    assert JSON.ping == b'{"type":6}\x1e'


def test_encode_invocation_fast_path_matches_encode() -> None:
    assert JSON.encode_invocation("Broadcast", ("hi", 2)) == b'{"type":1,"target":"Broadcast","arguments":["hi",2]}\x1e'
    assert JSON.encode_invocation("Broadcast", ["hi", 2]) == JSON.encode(InvocationMessage("Broadcast", ["hi", 2]))


def test_server_invocation_omits_null_invocation_id() -> None:
    obj = json.loads(JSON.encode(InvocationMessage("X", [None])).rstrip(RS))
    assert "invocationId" not in obj
    assert "streamIds" not in obj
    assert obj["arguments"] == [None]


def test_empty_stream_ids_are_not_written() -> None:
    assert (
        JSON.encode(InvocationMessage("X", [], "1", []))
        == b'{"type":1,"invocationId":"1","target":"X","arguments":[]}\x1e'
    )


def test_bytes_are_written_as_base64() -> None:
    record = JSON.encode(CompletionMessage.with_result("1", b"\x00\x01\x02\xff"))
    assert record == b'{"type":3,"invocationId":"1","result":"AAEC/w=="}\x1e'


def test_datetime_is_iso_8601_with_utc_as_z_as_system_text_json_writes_it() -> None:
    def written(when: dt.datetime) -> bytes:
        return JSON.encode(CompletionMessage.with_result("1", when))

    assert written(dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == (
        b'{"type":3,"invocationId":"1","result":"2020-01-02T03:04:05Z"}\x1e'
    )
    # naive means UTC, as in the MessagePack protocol
    assert written(dt.datetime(2020, 1, 2, 3, 4, 5, 250000)) == (
        b'{"type":3,"invocationId":"1","result":"2020-01-02T03:04:05.250000Z"}\x1e'
    )
    # another offset stays, as a DateTimeOffset is written
    paris = dt.timezone(dt.timedelta(hours=1))
    assert written(dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=paris)) == (
        b'{"type":3,"invocationId":"1","result":"2020-01-02T03:04:05+01:00"}\x1e'
    )


def test_non_ascii_text_is_utf8() -> None:
    record = JSON.encode(InvocationMessage("Say", ["h\u00e9 \u2603 \U0001f600"]))
    assert record == '{"type":1,"target":"Say","arguments":["h\u00e9 \u2603 \U0001f600"]}'.encode() + RS


def test_record_separator_inside_a_string_is_escaped() -> None:
    record = JSON.encode(InvocationMessage("Say", ["a\x1eb\nc"]))
    assert record.count(RS) == 1 and record.endswith(RS)
    assert b"\n" not in record
    assert decode_one(record) == InvocationMessage("Say", ["a\x1eb\nc"])


def test_unencodable_value_raises_type_error() -> None:
    with pytest.raises(TypeError):
        JSON.encode(InvocationMessage("X", [object()]))


# -- reading every message type ----------------------------------------------------

READ_CASES: list[tuple[bytes, HubMessage]] = [
    (b'{"type":1,"target":"Send","arguments":[1,"a"]}', InvocationMessage("Send", [1, "a"])),
    (b'{"type":1,"invocationId":"0","target":"add","arguments":[1,2]}', InvocationMessage("add", [1, 2], "0")),
    (
        b'{"type":1,"invocationId":"1","target":"UploadSum","arguments":[],"streamIds":["2"]}',
        InvocationMessage("UploadSum", [], "1", ["2"]),
    ),
    (b'{"type":1,"invocationId":null,"target":"x","arguments":[]}', InvocationMessage("x", [])),
    (b'{"type":1,"target":"x","arguments":[],"streamIds":[],"headers":{}}', InvocationMessage("x", [])),
    (b'{"type":2,"invocationId":"2","item":7}', StreamItemMessage("2", 7)),
    (b'{"type":2,"invocationId":"2","item":null}', StreamItemMessage("2", None)),
    (b'{"type":3,"invocationId":"3"}', CompletionMessage("3")),
    (b'{"type":3,"invocationId":"3","result":{"a":1}}', CompletionMessage.with_result("3", {"a": 1})),
    (b'{"type":3,"invocationId":"3","result":null}', CompletionMessage.with_result("3", None)),
    (b'{"type":3,"invocationId":"3","error":"nope"}', CompletionMessage.with_error("3", "nope")),
    (
        b'{"type":4,"invocationId":"4","target":"Counter","arguments":[3,10]}',
        StreamInvocationMessage("4", "Counter", [3, 10]),
    ),
    (
        b'{"type":4,"invocationId":"4","target":"EchoStream","arguments":[],"streamIds":["5"]}',
        StreamInvocationMessage("4", "EchoStream", [], ["5"]),
    ),
    (b'{"type":5,"invocationId":"4"}', CancelInvocationMessage("4")),
    (b'{"type":6}', PingMessage()),
    (b'{"type":7}', CloseMessage()),
    (b'{"type":7,"error":"bad"}', CloseMessage("bad")),
    (b'{"type":7,"error":"bad","allowReconnect":true}', CloseMessage("bad", True)),
    (b'{"type":7,"allowReconnect":false}', CloseMessage(None, False)),
    (b'{"type":8,"sequenceId":3}', AckMessage(3)),
    (b'{"type":9,"sequenceId":1}', SequenceMessage(1)),
]


@pytest.mark.parametrize(("record", "expected"), READ_CASES, ids=lambda v: type(v).__name__)
def test_decode_every_type(record: bytes, expected: HubMessage) -> None:
    assert decode_one(record + RS) == expected


@pytest.mark.parametrize(("message", "_"), WRITE_CASES, ids=lambda v: type(v).__name__)
def test_round_trip(message: HubMessage, _: bytes) -> None:
    decoded = decode_one(JSON.encode(message))
    assert type(decoded) is type(message)
    assert JSON.encode(decoded) == JSON.encode(message)


def test_property_order_is_free_and_unknown_properties_are_ignored() -> None:
    record = b'{"arguments":[2,3],"extra":{"deep":[1]},"target":"add","invocationId":"9","type":1}'
    assert decode_one(record + RS) == InvocationMessage("add", [2, 3], "9")


def test_headers_are_accepted_and_ignored() -> None:
    record = b'{"type":1,"headers":{"a":"b","c":"d"},"target":"echo","arguments":["x"],"invocationId":"1"}'
    decoded = decode_one(record + RS)
    assert isinstance(decoded, InvocationMessage)
    assert (decoded.target, decoded.arguments, decoded.invocation_id) == ("echo", ["x"], "1")


def test_whitespace_around_json_is_accepted() -> None:
    assert decode_one(b' \r\n{ "type" : 6 }\n\t' + RS) == PingMessage()


def test_bytes_arrive_as_base64_text() -> None:
    # JSON has no binary type: the hub receives the base64 string, as ASP.NET would before binding.
    decoded = decode_one(b'{"type":1,"target":"EchoBytes","arguments":["AAEC/w=="]}' + RS)
    assert isinstance(decoded, InvocationMessage)
    assert decoded.arguments == ["AAEC/w=="]


# -- framing ------------------------------------------------------------------


def _stream() -> tuple[bytes, list[HubMessage]]:
    messages: list[HubMessage] = [
        InvocationMessage("echo", ["h\u00e9llo \U0001f600"], "0"),
        PingMessage(),
        StreamInvocationMessage("1", "counter", [3, 0.01]),
        CompletionMessage.with_result("2", [1, 2, 3]),
    ]
    return b"".join(JSON.encode(m) for m in messages), messages


def test_several_records_in_one_feed() -> None:
    data, messages = _stream()
    assert decode(data) == messages


def test_byte_by_byte_feed() -> None:
    data, messages = _stream()
    decoder = JSON.decoder()
    out: list[HubMessage] = []
    for i in range(len(data)):
        got = decoder.feed(data[i : i + 1])
        if got:
            # a message completes exactly on its separator byte
            assert data[i : i + 1] == RS
        out += got
    assert out == messages


def test_split_at_every_boundary() -> None:
    data, messages = _stream()
    for cut in range(len(data) + 1):
        decoder = JSON.decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == messages, cut


def test_incomplete_record_yields_nothing_until_separator() -> None:
    decoder = JSON.decoder()
    assert decoder.feed(b'{"type":6}') == []
    assert decoder.feed(b"") == []
    assert decoder.feed(RS + b'{"type":7') == [PingMessage()]
    assert decoder.feed(b"}" + RS) == [CloseMessage()]


def test_empty_feed() -> None:
    assert decode(b"") == []


def test_unknown_message_type_is_ignored() -> None:
    data = b'{"type":99,"whatever":true}' + RS + b'{"type":6}' + RS + b'{"type":0}' + RS
    assert decode(data) == [PingMessage()]


# -- malformed input ------------------------------------------------------------

MALFORMED: list[tuple[bytes, str | None]] = [
    (b"{not json}", None),
    (b'{"type":1,"target":"x","arguments":[]', None),
    (b"", None),
    (b"[1,2]", None),
    (b'"text"', None),
    (b"{}", r"^Missing required property 'type'\.$"),
    (b'{"target":"x","arguments":[]}', r"^Missing required property 'type'\.$"),
    (b'{"type":"1","target":"x","arguments":[]}', None),
    (b'{"type":true}', None),
    # true == 1 and 1.0 == 1 in Python: neither may pass for an invocation
    (b'{"type":true,"target":"x","arguments":[]}', r"^Expected 'type' to be of type Integer\.$"),
    (b'{"type":1.0,"target":"x","arguments":[]}', r"^Expected 'type' to be of type Integer\.$"),
    (b'{"type":1,"arguments":[]}', r"^Missing required property 'target'\.$"),
    (b'{"type":1,"target":5,"arguments":[]}', None),
    (b'{"type":1,"target":"x"}', r"^Missing required property 'arguments'\.$"),
    (b'{"type":1,"target":"x","arguments":{}}', None),
    (b'{"type":1,"invocationId":3,"target":"x","arguments":[]}', None),
    (b'{"type":1,"target":"x","arguments":[],"streamIds":"a"}', None),
    (b'{"type":1,"target":"x","arguments":[],"streamIds":[1]}', None),
    (b'{"type":2,"item":1}', r"^Missing required property 'invocationId'\.$"),
    (b'{"type":2,"invocationId":"1"}', r"^Missing required property 'item'\.$"),
    (b'{"type":3}', r"^Missing required property 'invocationId'\.$"),
    (
        b'{"type":3,"invocationId":"1","result":1,"error":"e"}',
        r"^The 'error' and 'result' properties are mutually exclusive\.$",
    ),
    (b'{"type":3,"invocationId":"1","error":5}', None),
    (b'{"type":4,"target":"x","arguments":[]}', r"^Missing required property 'invocationId'\.$"),
    (b'{"type":4,"invocationId":"1","arguments":[]}', r"^Missing required property 'target'\.$"),
    (b'{"type":4,"invocationId":"1","target":"x"}', r"^Missing required property 'arguments'\.$"),
    (b'{"type":5}', r"^Missing required property 'invocationId'\.$"),
    (b'{"type":7,"error":1}', None),
    (b'{"type":8}', r"^Missing required property 'sequenceId'\.$"),
    (b'{"type":9,"sequenceId":"1"}', None),
    (b"\xff\xfe", None),
    (b'{"type":1,"target":"x","arguments":[],"headers":{"a":1}}', r"^Expected header 'a' to be of type String\.$"),
    (b'{"type":8,"sequenceId":18446744073709551616}', None),  # past 64 bits: parsed as a float
]


@pytest.mark.parametrize(("record", "pattern"), MALFORMED)
def test_malformed_record_raises_protocol_error(record: bytes, pattern: str | None) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        decode(record + RS)


@pytest.mark.parametrize("headers", [b"5", b"[]"])
def test_non_object_headers_are_a_protocol_error(headers: bytes) -> None:
    # ASP.NET Core's JSON reader requires `headers` to be an object (InvalidDataException otherwise).
    with pytest.raises(ProtocolError):
        decode(b'{"type":1,"headers":' + headers + b',"target":"x","arguments":[]}' + RS)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)


def test_error_in_a_later_record_still_raises() -> None:
    with pytest.raises(ProtocolError):
        decode(b'{"type":6}' + RS + b"{oops" + RS)


# -- size limit ------------------------------------------------------------------


def _sized_record(size: int) -> bytes:
    """An Invocation record of exactly `size` bytes, separator excluded."""
    empty = len(b'{"type":1,"target":"t","arguments":[""]}')
    record = b'{"type":1,"target":"t","arguments":["' + b"x" * (size - empty) + b'"]}'
    assert len(record) == size
    return record


def test_too_large_text_matches_asp_net() -> None:
    assert too_large(1024) == (
        "The maximum message size of 1024B was exceeded. The message size can be configured in AddHubOptions."
    )


def test_message_over_limit_raises_with_asp_net_text() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(_sized_record(1100) + RS, max_message_size=1024)
    assert str(info.value) == too_large(1024)


def test_message_under_limit_is_accepted() -> None:
    messages = decode(_sized_record(1000) + RS, max_message_size=1024)
    assert len(messages) == 1


def test_limit_applies_per_message_not_per_feed() -> None:
    record = _sized_record(600) + RS
    assert len(decode(record * 5, max_message_size=1024)) == 5


def test_incomplete_message_over_limit_raises_without_waiting_for_separator() -> None:
    decoder = JSON.decoder(1024)
    assert decoder.feed(b'{"type":1,"target":"t","arguments":["' + b"x" * 500) == []
    with pytest.raises(ProtocolError) as info:
        decoder.feed(b"x" * 600)
    assert str(info.value) == too_large(1024)


def test_no_limit_when_none() -> None:
    assert len(decode(_sized_record(200_000) + RS, max_message_size=None)) == 1


def test_default_limit_is_32_kib() -> None:
    decoder = JSON.decoder()
    assert len(decoder.feed(_sized_record(32 * 1024 - 10) + RS)) == 1
    with pytest.raises(ProtocolError, match="32768B"):
        decoder.feed(_sized_record(40_000) + RS)


def _as_obj(record: bytes) -> Any:
    return json.loads(record.rstrip(RS))


def test_close_with_error_is_parseable_json() -> None:
    assert _as_obj(JSON.encode(CloseMessage('quote " and \\ backslash', True))) == {
        "type": 7,
        "error": 'quote " and \\ backslash',
        "allowReconnect": True,
    }
