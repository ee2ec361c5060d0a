"""A connection's outbox: records queued between flushes leave together, in bounded chunks."""

from __future__ import annotations

from signalr_chat.signalr.connections import Connection


def outbox(*records: bytes) -> Connection:
    connection = Connection("id", "token", 1)
    for record in records:
        assert connection.send(record)
    return connection


def test_everything_pending_leaves_as_one_chunk() -> None:
    connection = outbox(b"a\x1e", b"bb\x1e", b"ccc\x1e")
    assert connection.take_pending() == b"a\x1ebb\x1eccc\x1e"
    assert not connection.has_pending


def test_a_limit_cuts_between_records_never_inside_one() -> None:
    connection = outbox(b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 200)
    assert connection.take_pending(100) == b"a" * 40 + b"b" * 40
    assert connection.take_pending(100) == b"c" * 40
    assert connection.take_pending(100) == b"d" * 200  # a bigger record goes alone
    assert not connection.has_pending
    assert connection.send(b"e")  # the byte count started again from zero
    assert connection.take_pending(100) == b"e"


def test_a_limit_that_fits_everything_takes_everything() -> None:
    connection = outbox(b"x" * 10, b"y" * 10)
    assert connection.take_pending(20) == b"x" * 10 + b"y" * 10
