"""Requests aiohttp cannot parse, sent with raw sockets to `python -m signalr_chat`: each is
answered as aiohttp answers it (400 with the parser's reason) and logged as one DEBUG line,
never as a traceback at ERROR, and the server goes on serving."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import LineTooLong

from signalr_chat.hosting.bad_requests import AIOHTTP_SERVER_LOGGER, BadRequestsAtDebug
from tests.support.chat_fixtures import ChatServer, offline_env

pytestmark = pytest.mark.timeout(60)

#: Each is a whole request that aiohttp's parser refuses.
MALFORMED = {
    "100 KB header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "control byte in the URL": b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",
    "unparsable absolute URL": b"GET http://[bad HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "newline in a header value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rINFO forged\r\n\r\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    log = tmp_path_factory.mktemp("bad-http") / "server.log"
    server = ChatServer(offline_env(log_level="DEBUG"), log=log).start()
    try:
        yield server
    finally:
        server.stop()


def exchange(port: int, request: bytes) -> bytes:
    """Send `request`, read until the server closes (it closes after a parse error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def wait_for_log(log: Path, text: str, count: int, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = log.read_text(errors="replace")
        if content.count(text) >= count or time.monotonic() > deadline:
            return content
        time.sleep(0.05)


def test_malformed_requests_are_answered_400_and_logged_at_debug(server: ChatServer) -> None:
    assert server.log is not None
    for name, request in MALFORMED.items():
        response = exchange(server.port, request)
        assert response.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), (name, response[:200])
    with urllib.request.urlopen(f"{server.base}/", timeout=10) as page:
        assert page.status == 200, "the server goes on serving"
    log = wait_for_log(server.log, "Error handling request from 127.0.0.1: ", len(MALFORMED))
    lines = [line for line in log.splitlines() if "Error handling request" in line]
    assert len(lines) == len(MALFORMED), log[-3000:]
    assert all(" DEBUG aiohttp.server: " in line for line in lines), lines
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert not any(line.startswith("INFO forged") for line in log.splitlines())


def _record(error: BaseException) -> logging.LogRecord:
    return logging.LogRecord(
        AIOHTTP_SERVER_LOGGER,
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        (type(error), error, None),
    )


def test_only_parse_errors_are_demoted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=AIOHTTP_SERVER_LOGGER)
    bad = _record(LineTooLong("x\ny", 8190))
    assert BadRequestsAtDebug().filter(bad)
    assert (bad.levelno, bad.exc_info) == (logging.DEBUG, None)
    assert "\n" not in bad.getMessage() and bad.getMessage().startswith("Error handling request from 127.0.0.1: ")
    own = _record(RuntimeError("a handler failed"))
    assert BadRequestsAtDebug().filter(own)
    assert own.levelno == logging.ERROR and own.exc_info is not None, "the server's own errors keep their traceback"


def test_demoted_records_are_dropped_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AIOHTTP_SERVER_LOGGER)
    assert not BadRequestsAtDebug().filter(_record(LineTooLong("x", 8190)))
