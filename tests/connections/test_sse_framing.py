"""Server-Sent Events framing, as ASP.NET Core's ServerSentEventsMessageFormatter writes it."""

from __future__ import annotations

from signalr_chat.signalr.connections.transports.server_sent_events import HEADERS, PREAMBLE, format_event


def test_single_line_payload() -> None:
    assert format_event(b"abc") == b"data: abc\r\n\r\n"


def test_json_record_keeps_its_separator() -> None:
    assert format_event(b'{"type":6}\x1e') == b'data: {"type":6}\x1e\r\n\r\n'


def test_several_records_in_one_event() -> None:
    payload = b"{}\x1e" + b'{"type":3,"invocationId":"0","result":1}\x1e'
    assert format_event(payload) == b"data: " + payload + b"\r\n\r\n"


def test_each_line_becomes_a_data_line() -> None:
    assert format_event(b"a\nb\nc") == b"data: a\r\ndata: b\r\ndata: c\r\n\r\n"


def test_trailing_line_feed_gives_an_empty_last_line() -> None:
    assert format_event(b"a\n") == b"data: a\r\ndata: \r\n\r\n"


def test_empty_lines_in_the_middle() -> None:
    assert format_event(b"a\n\nb") == b"data: a\r\ndata: \r\ndata: b\r\n\r\n"


def test_crlf_line_endings_are_trimmed() -> None:
    # ASP.NET trims the \r of a \r\n line ending; a stray \r would end the line early in EventSource.
    assert format_event(b"a\r\nb") == b"data: a\r\ndata: b\r\n\r\n"


def test_non_ascii_is_passed_through() -> None:
    payload = '{"type":1,"target":"t","arguments":["\u00e9\u2603"]}\x1e'.encode()
    assert format_event(payload) == b"data: " + payload + b"\r\n\r\n"


def test_preamble_is_a_comment_line() -> None:
    assert PREAMBLE == b":\r\n"


def test_response_headers() -> None:
    assert HEADERS["Content-Type"] == "text/event-stream"
    assert HEADERS["Cache-Control"] == "no-cache,no-store"
    assert HEADERS["Pragma"] == "no-cache"
    assert HEADERS["Content-Encoding"] == "identity"
