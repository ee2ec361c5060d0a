"""Stateful reconnect bookkeeping (MessageBuffer): numbering, acks, replay and de-duplication."""

from __future__ import annotations

from signalr_chat.signalr.protocol.stateful_reconnect import MessageBuffer


def receive(buffer: MessageBuffer, count: int) -> list[bool]:
    """Feed `count` sequenced messages (types 1-5); what should_process answered for each."""
    return [buffer.should_process(True, False) for _ in range(count)]


# -- sending -------------------------------------------------------------------


def test_nothing_sent_announces_one() -> None:
    buffer = MessageBuffer(1000)
    assert buffer.resend() == (1, [])


def test_sent_messages_are_numbered_from_one_and_replayed_in_order() -> None:
    buffer = MessageBuffer(1000)
    for data in (b"a", b"b", b"c"):
        buffer.sent(data)
    assert buffer.resend() == (1, [b"a", b"b", b"c"])


def test_ack_drops_everything_up_to_the_acked_id() -> None:
    buffer = MessageBuffer(1000)
    for data in (b"a", b"b", b"c"):
        buffer.sent(data)
    buffer.ack(2)
    assert buffer.resend() == (3, [b"c"])
    buffer.ack(3)
    assert buffer.resend() == (4, [])
    buffer.sent(b"d")
    assert buffer.resend() == (4, [b"d"])


def test_stale_and_repeated_acks_change_nothing() -> None:
    buffer = MessageBuffer(1000)
    for data in (b"a", b"b", b"c"):
        buffer.sent(data)
    buffer.ack(2)
    buffer.ack(1)
    buffer.ack(2)
    buffer.ack(0)
    assert buffer.resend() == (3, [b"c"])


def test_ack_beyond_what_was_sent_clears_the_buffer() -> None:
    buffer = MessageBuffer(1000)
    buffer.sent(b"a")
    buffer.ack(10)
    assert buffer.resend() == (2, [])


def test_resend_is_repeatable() -> None:
    buffer = MessageBuffer(1000)
    buffer.sent(b"a")
    buffer.sent(b"b")
    assert buffer.resend() == buffer.resend() == (1, [b"a", b"b"])


def test_overflow_tracks_unacked_bytes() -> None:
    buffer = MessageBuffer(10)
    buffer.sent(b"12345")
    buffer.sent(b"67890")
    assert not buffer.overflowing  # exactly at the limit
    buffer.sent(b"x")
    assert buffer.overflowing
    buffer.ack(1)
    assert not buffer.overflowing
    buffer.ack(3)
    buffer.sent(b"0123456789")
    assert not buffer.overflowing


# -- receiving -----------------------------------------------------------------


def test_received_messages_are_counted() -> None:
    buffer = MessageBuffer(1000)
    assert buffer.latest_received_id == 0
    assert not buffer.ack_due
    assert receive(buffer, 3) == [True, True, True]
    assert buffer.latest_received_id == 3
    assert buffer.ack_due


def test_unsequenced_messages_are_processed_and_not_counted() -> None:
    buffer = MessageBuffer(1000)
    assert buffer.should_process(False, False)  # Ping, Ack, Close...
    assert buffer.latest_received_id == 0
    assert not buffer.ack_due
    assert receive(buffer, 1) == [True]
    assert buffer.should_process(False, False)
    assert buffer.latest_received_id == 1


def test_after_a_drop_only_the_sequence_message_gets_through() -> None:
    buffer = MessageBuffer(1000)
    receive(buffer, 2)
    buffer.disconnected()
    assert buffer.should_process(True, False) is False
    assert buffer.should_process(False, False) is False  # not even a ping before Sequence
    assert buffer.should_process(False, True) is True
    assert buffer.latest_received_id == 2


def test_replayed_messages_are_deduplicated_after_sequence() -> None:
    buffer = MessageBuffer(1000)
    assert receive(buffer, 3) == [True, True, True]
    buffer.disconnected()
    assert buffer.should_process(False, True)
    # the client had only seen an ack for 1, so it replays 2, 3 and then sends 4, 5
    assert buffer.reset_sequence(2)
    buffer.ack_due = False
    assert receive(buffer, 4) == [False, False, True, True]
    assert buffer.latest_received_id == 5
    assert buffer.ack_due


def test_sequence_equal_to_next_id_replays_nothing() -> None:
    buffer = MessageBuffer(1000)
    receive(buffer, 2)
    buffer.disconnected()
    buffer.should_process(False, True)
    assert buffer.reset_sequence(3)
    assert receive(buffer, 1) == [True]
    assert buffer.latest_received_id == 3


def test_sequence_beyond_what_was_received_is_refused() -> None:
    buffer = MessageBuffer(1000)
    receive(buffer, 2)
    buffer.disconnected()
    buffer.should_process(False, True)
    assert buffer.reset_sequence(4) is False
    assert buffer.reset_sequence(100) is False
    assert buffer.reset_sequence(3) is True


def test_sequence_on_a_fresh_buffer() -> None:
    buffer = MessageBuffer(1000)
    assert buffer.reset_sequence(1) is True
    assert buffer.reset_sequence(2) is False


def test_replay_from_one_after_full_loss() -> None:
    buffer = MessageBuffer(1000)
    receive(buffer, 3)
    buffer.disconnected()
    buffer.should_process(False, True)
    assert buffer.reset_sequence(1)
    assert receive(buffer, 5) == [False, False, False, True, True]
    assert buffer.latest_received_id == 5


def test_second_drop_during_replay() -> None:
    buffer = MessageBuffer(1000)
    receive(buffer, 4)
    buffer.disconnected()
    buffer.should_process(False, True)
    assert buffer.reset_sequence(2)
    assert receive(buffer, 1) == [False]  # id 2 again
    buffer.disconnected()
    assert buffer.should_process(True, False) is False
    assert buffer.should_process(False, True)
    assert buffer.reset_sequence(3)
    assert receive(buffer, 3) == [False, False, True]
    assert buffer.latest_received_id == 5
