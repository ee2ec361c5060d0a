"""The MessagePack hub protocol on bytes: exact arrays out, every type in, VarInt framing, errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgpack
import pytest

from signalr_chat.signalr.protocol import (
    MESSAGEPACK,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessagePackHubProtocol,
    PingMessage,
    ProtocolError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)
from signalr_chat.signalr.protocol.base import too_large
from signalr_chat.signalr.protocol.msgpack_protocol import varint
from tests.support.msgpack_wire import TIMESTAMP_PAST_9999, framed, pack

OVER_2GB = "Messages over 2GB in size are not supported."


def decode(data: bytes, max_message_size: int | None = 32 * 1024) -> list[HubMessage]:
    return MESSAGEPACK.decoder(max_message_size).feed(data)


def decode_one(data: bytes) -> HubMessage:
    messages = decode(data)
    assert len(messages) == 1, messages
    return messages[0]


def unframe(record: bytes) -> bytes:
    """Strip a one-byte VarInt prefix (short test records only)."""
    assert record[0] < 0x80 and record[0] == len(record) - 1
    return record[1:]


def test_protocol_identity() -> None:
    assert MessagePackHubProtocol.name == "messagepack"
    assert MessagePackHubProtocol.version == 2
    assert MessagePackHubProtocol.transfer_format is TransferFormat.BINARY


# -- writing: exact bytes ----------------------------------------------------------

WRITE_CASES: list[tuple[HubMessage, bytes]] = [
    # [1, {}, nil, "T", [], []]
    (InvocationMessage("T", []), bytes.fromhex("96 01 80 c0 a1 54 90 90")),
    # [1, {}, "1", "T", [5], []]
    (InvocationMessage("T", [5], "1"), bytes.fromhex("96 01 80 a1 31 a1 54 91 05 90")),
    # [1, {}, "1", "T", [], ["a"]]
    (InvocationMessage("T", [], "1", ["a"]), bytes.fromhex("96 01 80 a1 31 a1 54 90 91 a1 61")),
    # [2, {}, "1", 5]
    (StreamItemMessage("1", 5), bytes.fromhex("94 02 80 a1 31 05")),
    # [2, {}, "1", nil]
    (StreamItemMessage("1", None), bytes.fromhex("94 02 80 a1 31 c0")),
    # [3, {}, "1", 1, "e"]   error
    (CompletionMessage.with_error("1", "e"), bytes.fromhex("95 03 80 a1 31 01 a1 65")),
    # [3, {}, "1", 2]        void
    (CompletionMessage("1"), bytes.fromhex("94 03 80 a1 31 02")),
    # [3, {}, "1", 3, 42]    result
    (CompletionMessage.with_result("1", 42), bytes.fromhex("95 03 80 a1 31 03 2a")),
    # [3, {}, "1", 3, nil]   a result that is null is still kind 3
    (CompletionMessage.with_result("1", None), bytes.fromhex("95 03 80 a1 31 03 c0")),
    # [4, {}, "1", "T", [1], []]
    (StreamInvocationMessage("1", "T", [1]), bytes.fromhex("96 04 80 a1 31 a1 54 91 01 90")),
    # [5, {}, "1"]
    (CancelInvocationMessage("1"), bytes.fromhex("93 05 80 a1 31")),
    # [6]
    (PingMessage(), bytes.fromhex("91 06")),
    # [7, nil, false]
    (CloseMessage(), bytes.fromhex("93 07 c0 c2")),
    # [7, "e", false]
    (CloseMessage("e"), bytes.fromhex("93 07 a1 65 c2")),
    # [7, nil, true]
    (CloseMessage(None, True), bytes.fromhex("93 07 c0 c3")),
    # [7, "e", true]
    (CloseMessage("e", True), bytes.fromhex("93 07 a1 65 c3")),
    # [8, 3]
    (AckMessage(3), bytes.fromhex("92 08 03")),
    # [9, 300]
    (SequenceMessage(300), bytes.fromhex("92 09 cd 01 2c")),
]


@pytest.mark.parametrize(("message", "payload"), WRITE_CASES, ids=lambda v: type(v).__name__)
def test_encode_exact_bytes(message: HubMessage, payload: bytes) -> None:
    assert MESSAGEPACK.encode(message) == bytes([len(payload)]) + payload


def test_ping_is_exactly_91_06() -> None:
    assert MESSAGEPACK.ping == b"\x02\x91\x06"
    assert MESSAGEPACK.encode(PingMessage()) == b"\x02\x91\x06"


def test_headers_are_written_as_an_empty_map() -> None:
    for message in (InvocationMessage("T", []), StreamItemMessage("1", 1), CompletionMessage("1")):
        assert unframe(MESSAGEPACK.encode(message))[2] == 0x80


def test_server_invocation_writes_six_items() -> None:
    fields = msgpack.unpackb(unframe(MESSAGEPACK.encode(InvocationMessage("Receive", ["a", 1]))))
    assert fields == [1, {}, None, "Receive", ["a", 1], []]


def test_encode_invocation_fast_path_is_identical() -> None:
    assert MESSAGEPACK.encode_invocation("Broadcast", ("x", 1)) == MESSAGEPACK.encode(
        InvocationMessage("Broadcast", ["x", 1])
    )
    assert MESSAGEPACK.encode_invocation("T", []) == b"\x08" + bytes.fromhex("96 01 80 c0 a1 54 90 90")


def test_nested_values_round_trip_through_plain_msgpack() -> None:
    value = {"a": [1, 2.5, None, True, "s"], "b": {"c": -7}}
    fields = msgpack.unpackb(unframe(MESSAGEPACK.encode(CompletionMessage.with_result("9", value))))
    assert fields == [3, {}, "9", 3, value]


# -- bytes and datetimes -----------------------------------------------------------


def test_bytes_are_written_as_bin() -> None:
    record = MESSAGEPACK.encode(CompletionMessage.with_result("1", b"\x00\x01\x02\xff"))
    assert record == framed(bytes.fromhex("95 03 80 a1 31 03 c4 04 00 01 02 ff"))


def test_bin_is_read_as_bytes() -> None:
    decoded = decode_one(framed(pack([1, {}, "1", "EchoBytes", [b"\x00\xff"], []])))
    assert isinstance(decoded, InvocationMessage)
    assert decoded.arguments == [b"\x00\xff"]
    assert isinstance(decoded.arguments[0], bytes)


def _raw_item(record: bytes) -> Any:
    """The item of a framed StreamItem, decoded without turning timestamps into datetimes."""
    payload = record[1:] if record[0] < 0x80 else record[2:]
    return msgpack.unpackb(payload, timestamp=0)[3]


def test_aware_datetime_is_written_as_timestamp_extension() -> None:
    when = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    record = MESSAGEPACK.encode(CompletionMessage.with_result("1", when))
    seconds = int(when.timestamp())
    # timestamp 32: fixext4 (d6), type -1 (ff), big-endian seconds
    assert record == framed(bytes.fromhex("95 03 80 a1 31 03 d6 ff") + seconds.to_bytes(4, "big"))


def test_naive_datetime_is_taken_as_utc() -> None:
    naive = dt.datetime(2020, 1, 2, 3, 4, 5)
    aware = naive.replace(tzinfo=dt.UTC)
    assert MESSAGEPACK.encode(CompletionMessage.with_result("1", naive)) == MESSAGEPACK.encode(
        CompletionMessage.with_result("1", aware)
    )


def test_datetime_with_offset_is_converted_to_the_same_instant() -> None:
    plus2 = dt.datetime(2020, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    utc = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert MESSAGEPACK.encode(StreamItemMessage("1", plus2)) == MESSAGEPACK.encode(StreamItemMessage("1", utc))


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2020, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
        dt.datetime(1960, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
        dt.datetime(2200, 1, 1, tzinfo=dt.UTC),
    ],
    ids=["ts32", "ts64", "before-epoch", "after-2106"],
)
def test_datetime_round_trip(when: dt.datetime) -> None:
    record = MESSAGEPACK.encode(StreamItemMessage("1", when))
    raw = _raw_item(record)
    assert isinstance(raw, msgpack.Timestamp)  # only extension type -1 unpacks to a Timestamp
    assert raw.to_datetime() == when
    decoded = decode_one(record)
    assert isinstance(decoded, StreamItemMessage)
    assert decoded.item == when
    assert decoded.item.tzinfo is not None
    assert decoded.item.utcoffset() == dt.timedelta(0)


def test_incoming_timestamp_extension_becomes_aware_datetime() -> None:
    ts = msgpack.Timestamp(1577934245, 500_000_000)
    decoded = decode_one(framed(pack([1, {}, "1", "EchoDate", [ts], []])))
    assert isinstance(decoded, InvocationMessage)
    assert decoded.arguments == [dt.datetime(2020, 1, 2, 3, 4, 5, 500000, tzinfo=dt.UTC)]


# -- reading every type --------------------------------------------------------------

READ_CASES: list[tuple[Any, HubMessage]] = [
    ([1, {}, None, "Send", [1, "a"], []], InvocationMessage("Send", [1, "a"])),
    ([1, {}, "0", "add", [1, 2]], InvocationMessage("add", [1, 2], "0")),  # 5 items: no streamIds
    ([1, {}, "0", "add", [1, 2], []], InvocationMessage("add", [1, 2], "0")),
    ([1, {}, "1", "UploadSum", [], ["2"]], InvocationMessage("UploadSum", [], "1", ["2"])),
    ([2, {}, "2", 7], StreamItemMessage("2", 7)),
    ([2, {}, "2", None], StreamItemMessage("2", None)),
    ([3, {}, "3", 1, "nope"], CompletionMessage.with_error("3", "nope")),
    ([3, {}, "3", 2], CompletionMessage("3")),
    ([3, {}, "3", 3, {"a": 1}], CompletionMessage.with_result("3", {"a": 1})),
    ([3, {}, "3", 3, None], CompletionMessage.with_result("3", None)),
    ([4, {}, "4", "Counter", [3, 10]], StreamInvocationMessage("4", "Counter", [3, 10])),
    ([4, {}, "4", "Counter", [3, 10], []], StreamInvocationMessage("4", "Counter", [3, 10])),
    ([4, {}, "4", "Echo", [], ["5"]], StreamInvocationMessage("4", "Echo", [], ["5"])),
    ([5, {}, "4"], CancelInvocationMessage("4")),
    ([6], PingMessage()),
    ([7, None], CloseMessage()),
    ([7, "bad"], CloseMessage("bad")),
    ([7, None, True], CloseMessage(None, True)),
    ([7, "bad", False], CloseMessage("bad", False)),
    ([8, 3], AckMessage(3)),
    ([9, 1], SequenceMessage(1)),
    ([9, 2**40], SequenceMessage(2**40)),
]


def _strip_headers(message: HubMessage) -> HubMessage:
    if hasattr(message, "headers"):
        message.headers = None
    return message


@pytest.mark.parametrize(("fields", "expected"), READ_CASES, ids=lambda v: type(v).__name__)
def test_decode_every_type(fields: Any, expected: HubMessage) -> None:
    assert decode_one(framed(pack(fields))) == expected


@pytest.mark.parametrize(("message", "_"), WRITE_CASES, ids=lambda v: type(v).__name__)
def test_round_trip(message: HubMessage, _: bytes) -> None:
    decoded = decode_one(MESSAGEPACK.encode(message))
    assert type(decoded) is type(message)
    assert MESSAGEPACK.encode(decoded) == MESSAGEPACK.encode(message)


def test_headers_map_is_parsed_and_ignored_by_dispatch() -> None:
    decoded = decode_one(framed(pack([1, {"k": "v", "x": "y"}, "1", "echo", ["a"], []])))
    assert isinstance(decoded, InvocationMessage)
    assert (decoded.target, decoded.arguments, decoded.invocation_id, decoded.stream_ids) == (
        "echo",
        ["a"],
        "1",
        None,
    )
    assert decoded.headers in (None, {"k": "v", "x": "y"})


def test_unknown_message_type_is_ignored() -> None:
    data = framed(pack([99, {}, "x"])) + framed(pack([6])) + framed(pack([10]))
    assert decode(data) == [PingMessage()]


def test_extra_trailing_fields_are_tolerated() -> None:
    # newer peers may append fields; ASP.NET skips what it does not know
    assert decode_one(framed(pack([6, "extra"]))) == PingMessage()


# -- VarInt framing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "prefix"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "80 01"),
        (255, "ff 01"),
        (16383, "ff 7f"),
        (16384, "80 80 01"),
        (2097151, "ff ff 7f"),
        (2097152, "80 80 80 01"),
        (268435455, "ff ff ff 7f"),
        (268435456, "80 80 80 80 01"),
        (2**31 - 1, "ff ff ff ff 07"),
    ],
)
def test_varint_bytes(length: int, prefix: str) -> None:
    assert varint(length) == bytes.fromhex(prefix)


def _invocation_payload(size: int) -> bytes:
    """A packed Invocation whose payload is exactly `size` bytes."""
    base = len(pack([1, {}, None, "t", [""], []])) - 1  # minus the 1-byte fixstr header of ""
    for header in (1, 2, 3, 5):
        text_len = size - base - header
        if text_len >= 0:
            payload = pack([1, {}, None, "t", ["x" * text_len], []])
            if len(payload) == size:
                return payload
    raise AssertionError(f"cannot build a payload of {size} bytes")


@pytest.mark.parametrize(("size", "prefix_len"), [(127, 1), (128, 2), (16383, 2), (16384, 3), (70000, 3)])
def test_encoded_prefix_lengths(size: int, prefix_len: int) -> None:
    payload = _invocation_payload(size)
    text = msgpack.unpackb(payload)[4][0]
    record = MESSAGEPACK.encode(InvocationMessage("t", [text]))
    assert record == framed(payload)
    assert len(record) == size + prefix_len


@pytest.mark.parametrize("size", [127, 128, 16383, 16384, 70000])
def test_decode_sizes_around_prefix_boundaries(size: int) -> None:
    payload = _invocation_payload(size)
    messages = decode(framed(payload) + framed(pack([6])), max_message_size=None)
    assert len(messages) == 2
    first = messages[0]
    assert isinstance(first, InvocationMessage)
    assert len(first.arguments[0]) == len(msgpack.unpackb(payload)[4][0])
    assert messages[1] == PingMessage()


def _stream() -> tuple[bytes, list[HubMessage]]:
    messages: list[HubMessage] = [
        InvocationMessage("echo", ["h\u00e9llo \U0001f600"], "0"),
        PingMessage(),
        StreamInvocationMessage("1", "counter", [3, 0.01]),
        InvocationMessage("big", ["y" * 200], "2"),  # two-byte prefix
        CompletionMessage.with_result("3", b"\x00\x1e\x80"),
        CloseMessage("e", True),
    ]
    return b"".join(MESSAGEPACK.encode(m) for m in messages), messages


def test_several_messages_in_one_feed() -> None:
    data, messages = _stream()
    assert decode(data) == messages


def test_byte_by_byte_feed() -> None:
    data, messages = _stream()
    decoder = MESSAGEPACK.decoder()
    out: list[HubMessage] = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert out == messages


def test_split_at_every_boundary() -> None:
    data, messages = _stream()
    for cut in range(len(data) + 1):
        decoder = MESSAGEPACK.decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == messages, cut


def test_split_into_three_at_every_pair_of_boundaries_around_a_long_prefix() -> None:
    payload = _invocation_payload(16384)
    data = framed(payload) + framed(pack([6]))
    points = [0, 1, 2, 3, 4, 5, len(data) - 3, len(data) - 2, len(data) - 1, len(data)]
    for a in points:
        for b in points:
            if a > b:
                continue
            decoder = MESSAGEPACK.decoder(None)
            out = decoder.feed(data[:a]) + decoder.feed(data[a:b]) + decoder.feed(data[b:])
            assert len(out) == 2 and out[1] == PingMessage(), (a, b)


def test_empty_feed() -> None:
    assert decode(b"") == []


def test_zero_length_message_is_a_protocol_error() -> None:
    # a zero-length payload is no MessagePack value at all
    with pytest.raises(ProtocolError):
        decode(b"\x00")


# -- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    ["80 80 80 80 80 01", "ff ff ff ff ff 00", "80 80 80 80 08", "ff ff ff ff 0f"],
    ids=["six-bytes", "six-bytes-ff", "2GB", "over-2GB"],
)
def test_varint_over_limit_raises(prefix: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(bytes.fromhex(prefix), max_message_size=None)
    assert str(info.value) == OVER_2GB


def test_five_continuation_bytes_raise_before_a_sixth_arrives() -> None:
    decoder = MESSAGEPACK.decoder(None)
    assert decoder.feed(b"\x80\x80\x80\x80") == []
    with pytest.raises(ProtocolError, match="2GB"):
        decoder.feed(b"\x80")


def test_largest_legal_prefix_waits_for_data() -> None:
    decoder = MESSAGEPACK.decoder(None)
    assert decoder.feed(bytes.fromhex("ff ff ff ff 07") + b"\x91") == []


def test_oversize_message_raises_with_asp_net_text() -> None:
    payload = _invocation_payload(2000)
    with pytest.raises(ProtocolError) as info:
        decode(framed(payload), max_message_size=1024)
    assert str(info.value) == too_large(1024)
    assert str(info.value) == (
        "The maximum message size of 1024B was exceeded. The message size can be configured in AddHubOptions."
    )


def test_oversize_detected_from_the_prefix_alone() -> None:
    decoder = MESSAGEPACK.decoder(1024)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(varint(1025))
    assert str(info.value) == too_large(1024)


def test_message_at_and_under_limit_is_accepted() -> None:
    assert len(decode(framed(_invocation_payload(1024)), max_message_size=1024)) == 1
    assert len(decode(framed(_invocation_payload(1000)) * 3, max_message_size=1024)) == 3


def test_default_limit_is_32_kib() -> None:
    with pytest.raises(ProtocolError, match="32768B"):
        decode(framed(_invocation_payload(40_000)))


MALFORMED: list[tuple[bytes, str | None]] = [
    (pack(5), None),  # not an array
    (pack({"type": 1}), None),
    (pack([]), None),
    (pack(["1"]), None),  # type not an integer
    (pack([True]), None),
    (pack([1, {}, None, "t"]), None),  # Invocation with 4 items
    (pack([1, {}, 5, "t", []]), None),  # invocation id not a string
    (pack([1, {}, None, 5, []]), r"^Reading 'target' as String failed\.$"),
    (pack([1, {}, None, "t", {}]), r"^Reading array length for 'arguments' failed\.$"),
    (pack([1, [], None, "t", []]), r"^Reading map length for 'headers' failed\.$"),
    (pack([1, "h", None, "t", []]), r"^Reading map length for 'headers' failed\.$"),
    (pack([1, None, None, "t", []]), r"^Reading map length for 'headers' failed\.$"),
    (pack([4, 7, "1", "t", []]), r"^Reading map length for 'headers' failed\.$"),
    (pack([2, [], "1", 1]), r"^Reading map length for 'headers' failed\.$"),
    (pack([5, 1, "1"]), r"^Reading map length for 'headers' failed\.$"),
    (pack([1, {}, None, "t", [], "s"]), None),  # streamIds not an array
    (pack([1, {}, None, "t", [], [1]]), None),
    (pack([2, {}, "1"]), None),  # StreamItem without item
    (pack([3, {}, "1"]), None),  # Completion without result kind
    (pack([3, {}, "1", 4, 1]), None),  # unknown result kind
    (pack([3, {}, "1", 1]), None),  # error kind without error
    (pack([3, {}, "1", 3]), None),  # result kind without result
    (pack([3, {}, "1", 1, 5]), None),  # error not a string
    (pack([3, {}, 1, 2]), None),
    (pack([4, {}, None, "t", []]), None),  # stream invocation needs an id
    (pack([5, {}]), None),
    (pack([7]), None),
    (pack([7, 5, True]), None),
    (pack([8]), None),
    (pack([8, "1"]), None),
    (pack([9, 1.5]), None),
    (b"\xc1", None),  # never-used MessagePack byte
    (b"\x92\x06", None),  # truncated array inside a complete frame
    (pack([6]) + b"\x00", None),  # trailing bytes inside the frame
    (pack([1, {}, None, "t", [{(1,): 2}]]), r"^Deserializing"),  # a map keyed by an array (unhashable)
    (pack([1, {}, None, "t", [TIMESTAMP_PAST_9999]]), r"^Deserializing"),  # past datetime's range
    (pack([1, {"a": 1}, None, "t", []]), r"^Reading 'headers' as String failed\.$"),
    (pack([1, {1: "a"}, None, "t", []]), r"^Reading 'headers' as String failed\.$"),
]


@pytest.mark.parametrize(("payload", "pattern"), MALFORMED)
def test_malformed_message_raises_protocol_error(payload: bytes, pattern: str | None) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        decode(framed(payload))


def test_error_after_good_messages_still_raises() -> None:
    with pytest.raises(ProtocolError):
        decode(framed(pack([6])) + framed(pack("x")))
