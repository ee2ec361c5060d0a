"""Property tests (hypothesis) for the three parsers a client's bytes reach: the handshake,
the JSON and the MessagePack hub protocols.

Two properties. Whatever the bytes, a decoder hands back messages or raises the protocol's
own ProtocolError, never anything else (anything else escapes the connection's error
handling and ends it without a Close message). And every message type survives encode then
decode. Example counts stay modest so `make test` stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signalr_chat.signalr.protocol import (
    JSON,
    MESSAGEPACK,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeRequest,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    PingMessage,
    ProtocolError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    handshake_response,
    parse_handshake_request,
)
from tests.support.msgpack_wire import TIMESTAMP_PAST_9999, ext, framed, pack

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RS = b"\x1e"


#: A map keyed by an array (a tuple packs as one), and a 12-byte timestamp extension far past
#: year 9999: the two inputs that once escaped the MessagePack decoder as TypeError and OverflowError.
ARRAY_KEYED_MAP = framed(pack([1, {}, None, "t", [{(1,): 2}]]))
FAR_FUTURE_TIMESTAMP = framed(pack([1, {}, None, "t", [TIMESTAMP_PAST_9999]]))


def decode_all(protocol: HubProtocol, chunks: list[bytes]) -> list[HubMessage]:
    """Feed the chunks to one decoder as a transport would; the property holds throughout."""
    decoder = protocol.decoder(32 * 1024)
    messages: list[HubMessage] = []
    for chunk in chunks:
        try:
            messages += decoder.feed(chunk)
        except ProtocolError:
            break  # the connection would close here
    return messages


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


# -- MessagePack inputs: raw bytes, and framed values shaped like hub messages ----------

msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
    # the timestamp extension in its three sizes, with any bits, and other extensions
    | st.builds(ext, st.just(-1), st.sampled_from([4, 8, 12]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
    | st.builds(ext, st.integers(-128, 127), st.binary(max_size=12))
)
msgpack_keys = msgpack_scalars.filter(lambda v: not isinstance(v, float)) | st.lists(
    st.integers(-(2**63), 2**63 - 1) | st.text(max_size=3), max_size=3
).map(tuple)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(msgpack_keys, inner, max_size=4),
    max_leaves=16,
)
message_arrays = st.builds(lambda kind, rest: [kind, *rest], st.integers(-1, 11), st.lists(msgpack_values, max_size=6))
msgpack_frames = st.one_of(
    st.binary(max_size=64),
    message_arrays.map(lambda v: framed(pack(v))),
    msgpack_values.map(lambda v: framed(pack(v))),
    # a valid frame cut short, or with its length prefix lying
    st.tuples(message_arrays, st.integers(0, 40)).map(lambda t: framed(pack(t[0]))[: t[1]]),
    st.tuples(message_arrays, st.integers(0, 127)).map(lambda t: bytes([t[1]]) + pack(t[0])),
)


@FUZZ
@given(frames=st.lists(msgpack_frames, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 2**16), max_size=4))
@example(frames=[ARRAY_KEYED_MAP], cuts=[])
@example(frames=[FAR_FUTURE_TIMESTAMP], cuts=[])
def test_messagepack_decoder_yields_messages_or_protocol_error(frames: list[bytes], cuts: list[int]) -> None:
    decode_all(MESSAGEPACK, split(b"".join(frames), cuts))


# -- JSON inputs ------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
JSON_FIELDS = (
    "type",
    "invocationId",
    "target",
    "arguments",
    "streamIds",
    "headers",
    "item",
    "result",
    "error",
    "allowReconnect",
    "sequenceId",
)
json_messages = st.dictionaries(st.sampled_from(JSON_FIELDS), json_values, max_size=7).flatmap(
    lambda fields: st.integers(-1, 11).map(lambda kind: {**fields, "type": kind})
)
json_records = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode() + RS),
    json_messages.map(lambda v: json.dumps(v).encode() + RS),
    json_messages.map(lambda v: json.dumps(v).encode()[:-1] + RS),
)


@FUZZ
@given(records=st.lists(json_records, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 2**16), max_size=4))
@example(records=[b'{"type":8,"sequenceId":1e999}\x1e'], cuts=[])
@example(records=[b'{"type":1,"target":"t","arguments":[],"headers":{"a":1}}\x1e'], cuts=[])
def test_json_decoder_yields_messages_or_protocol_error(records: list[bytes], cuts: list[int]) -> None:
    decode_all(JSON, split(b"".join(records), cuts))


# -- the handshake --------------------------------------------------------------------------

handshake_objects = st.dictionaries(st.sampled_from(["protocol", "version", "extra"]), json_values, max_size=3)
handshake_records = st.one_of(
    st.binary(max_size=64),
    handshake_objects.map(lambda v: json.dumps(v).encode() + RS),
    json_values.map(lambda v: json.dumps(v).encode() + RS),
)


@FUZZ
@given(data=handshake_records)
def test_handshake_parser_yields_a_request_none_or_protocol_error(data: bytes) -> None:
    try:
        parsed = parse_handshake_request(data)
    except ProtocolError:
        return
    if parsed is not None:
        request, used = parsed
        assert isinstance(request, HandshakeRequest)
        assert 0 < used <= len(data)


@ROUND_TRIP
@given(protocol=st.text(max_size=20), version=st.integers(-(2**63), 2**63 - 1), rest=st.binary(max_size=8))
def test_handshake_round_trip(protocol: str, version: int, rest: bytes) -> None:
    record = json.dumps({"protocol": protocol, "version": version}).encode() + RS
    assert parse_handshake_request(record + rest) == (HandshakeRequest(protocol, version), len(record))


@ROUND_TRIP
@given(error=st.none() | st.text(max_size=40))
def test_handshake_response_round_trip(error: str | None) -> None:
    response = handshake_response(error)
    assert response.endswith(RS) and response.count(RS) == 1
    assert json.loads(response[:-1]) == ({} if error is None else {"error": error})


# -- round trips of every message type ------------------------------------------------------

ids = st.text(min_size=1, max_size=10)
headers = st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5), min_size=1, max_size=3)
stream_ids = st.none() | st.lists(ids, min_size=1, max_size=3)
sequence_ids = st.integers(0, 2**63 - 1)


def hub_messages(values: st.SearchStrategy[Any], with_headers: bool) -> st.SearchStrategy[HubMessage]:
    hdrs = headers if with_headers else st.none()
    arguments = st.lists(values, max_size=4)
    return st.one_of(
        st.builds(InvocationMessage, st.text(max_size=10), arguments, st.none() | ids, stream_ids, hdrs),
        st.builds(StreamInvocationMessage, ids, st.text(max_size=10), arguments, stream_ids, hdrs),
        st.builds(StreamItemMessage, ids, values, hdrs),
        st.builds(CompletionMessage, ids),
        st.builds(CompletionMessage.with_result, ids, values),
        st.builds(CompletionMessage.with_error, ids, st.text(max_size=20)),
        st.builds(CancelInvocationMessage, ids, hdrs),
        st.just(PingMessage()),
        st.builds(CloseMessage, st.none() | st.text(max_size=20), st.booleans()),
        st.builds(AckMessage, sequence_ids),
        st.builds(SequenceMessage, sequence_ids),
    )


json_round_trip_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
msgpack_round_trip_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.datetimes(timezones=st.just(dt.UTC)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@ROUND_TRIP
@given(messages=st.lists(hub_messages(json_round_trip_values, with_headers=False), min_size=1, max_size=4))
def test_json_round_trip(messages: list[HubMessage]) -> None:
    data = b"".join(JSON.encode(m) for m in messages)
    assert JSON.decoder(None).feed(data) == messages


@ROUND_TRIP
@given(messages=st.lists(hub_messages(msgpack_round_trip_values, with_headers=True), min_size=1, max_size=4))
def test_messagepack_round_trip(messages: list[HubMessage]) -> None:
    data = b"".join(MESSAGEPACK.encode(m) for m in messages)
    assert MESSAGEPACK.decoder(None).feed(data) == messages
