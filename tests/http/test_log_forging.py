"""Log forging: what a client chose (method names, Close errors, handshake protocols, header
names) reaches the server log escaped and cut short, never as lines of its own."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from signalr_chat.signalr.untrusted import MAX_LOGGED_CHARS, Untrusted, escape_for_log
from tests.http.test_raw_http import handshake, hub_socket, in_process, json_record, session

__all__ = ["session"]  # the fixture, shared with test_raw_http

pytestmark = pytest.mark.timeout(30)

FORGED = "x\n2026-01-01 00:00:00 CRITICAL signalr_chat: forged line\r\x1b[2J\u2028"
#: The longest line an escaped value may make: the text plus quotes, escapes and the count.
LONGEST_LINE = 600


@pytest.mark.parametrize(
    ("value", "logged"),
    [
        ("plain", "'plain'"),
        ("a\nb\rc", r"'a\nb\rc'"),
        ("\x1b[31mred", r"'\x1b[31mred'"),
        ("line\u2028separator", r"'line\u2028separator'"),
        ("back\\slash 'quote'", '''"back\\\\slash 'quote'"'''),
        (ValueError("bad\nvalue"), r"'bad\nvalue'"),
        (None, "'None'"),
    ],
)
def test_escape_for_log(value: object, logged: str) -> None:
    assert escape_for_log(value) == logged
    assert str(Untrusted(value)) == logged


def test_long_text_is_cut_and_counted() -> None:
    logged = escape_for_log("y" * 40_000)
    assert logged == repr("y" * MAX_LOGGED_CHARS) + f"... ({40_000 - MAX_LOGGED_CHARS} more characters)"


def test_untrusted_costs_nothing_until_formatted(caplog: pytest.LogCaptureFixture) -> None:
    class Exploding:
        def __str__(self) -> str:
            raise AssertionError("formatted although the record was filtered out")

    caplog.set_level(logging.INFO)
    logging.getLogger("tests.untrusted").debug("%s", Untrusted(Exploding()))


def assert_no_forged_lines(caplog: pytest.LogCaptureFixture, *needles: str) -> None:
    messages = [record.getMessage() for record in caplog.records]
    for needle in needles:
        assert any(needle in message for message in messages), f"{needle!r} not logged: {[m[:150] for m in messages]}"
    for message in messages:
        assert "\n" not in message and "\r" not in message and "\x1b" not in message, message
        assert "\u2028" not in message, message
        assert len(message) < LONGEST_LINE, message[:300]


async def test_client_text_is_logged_escaped_and_cut(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="signalr_chat")
    async with in_process(max_message_size=64 * 1024) as server:
        async with hub_socket(session, server.base) as socket:
            # a non-blocking call of a method that does not exist is logged, with its name
            await socket.send({"type": 1, "target": FORGED, "arguments": []})
            await socket.send({"type": 1, "target": "m" * 40_000, "arguments": []})
            assert await socket.call("echo", "after") == {"type": 3, "invocationId": "1", "result": "after"}
            # items and completions for ids the server does not know
            await socket.send({"type": 2, "invocationId": FORGED, "item": 1})
            await socket.send({"type": 3, "invocationId": FORGED})
            await socket.send({"type": 7, "error": FORGED})
            await socket.wait_closed()
        async with hub_socket(session, server.base, do_handshake=False) as socket:
            await socket.send_raw(handshake(FORGED))
            assert "error" in await socket.handshake_response()
            await socket.wait_closed()
        async with hub_socket(session, server.base) as socket:
            await socket.send_raw(json_record({"type": 1, "target": "echo", "arguments": [], "headers": {FORGED: 1}}))
            await socket.wait_closed()
    assert_no_forged_lines(
        caplog,
        r"x\n2026-01-01 00:00:00 CRITICAL",
        "more characters)",
        "unknown stream",
        "unexpected completion",
        "client closed with error",
        "handshake failed",
        "protocol error",
    )
