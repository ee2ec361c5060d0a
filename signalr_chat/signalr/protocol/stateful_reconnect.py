"""Stateful reconnect bookkeeping, sans-I/O: numbering, acks, replay and de-duplication.

Both sides number the messages of types 1-5 they send, from 1. What we sent stays
buffered until the client acks it, so a socket that drops without a Close loses
nothing: after the client reconnects we announce the first unacked id and replay.
"""

from __future__ import annotations

from collections import deque


class MessageBuffer:
    """One connection's stateful reconnect: what we sent stays until acked and is replayed after a reconnect,
    what the client resends is not dispatched twice, and a client too far behind is dropped."""

    __slots__ = (
        "_buffered_bytes",
        "_limit",
        "_next_receiving_id",
        "_sent",
        "_total_sent",
        "_waiting_for_sequence",
        "ack_due",
        "latest_received_id",
    )

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._sent: deque[tuple[int, bytes]] = deque()
        self._buffered_bytes = 0
        self._total_sent = 0
        self._next_receiving_id = 1
        self.latest_received_id = 0
        self._waiting_for_sequence = False
        #: A message was received since the last Ack we sent.
        self.ack_due = False

    # -- sending ---------------------------------------------------------
    def sent(self, data: bytes) -> None:
        """Record a sequenced message as sent (or queued while the socket is down)."""
        self._total_sent += 1
        self._sent.append((self._total_sent, data))
        self._buffered_bytes += len(data)

    @property
    def overflowing(self) -> bool:
        """Past the limit the client is too far behind to replay for: drop the connection."""
        return self._buffered_bytes > self._limit

    def ack(self, sequence_id: int) -> None:
        sent = self._sent
        while sent and sent[0][0] <= sequence_id:
            self._buffered_bytes -= len(sent.popleft()[1])

    def resend(self) -> tuple[int, list[bytes]]:
        """The Sequence id to announce and the messages to replay after a reconnect."""
        first = self._sent[0][0] if self._sent else self._total_sent + 1
        return first, [data for _, data in self._sent]

    # -- receiving -------------------------------------------------------
    def disconnected(self) -> None:
        """Until the client's Sequence arrives, nothing it sends can be numbered."""
        self._waiting_for_sequence = True

    def should_process(self, sequenced: bool, is_sequence_message: bool) -> bool:
        """False for a replayed message we already processed (or anything before Sequence)."""
        if self._waiting_for_sequence:
            if not is_sequence_message:
                return False
            self._waiting_for_sequence = False
            return True
        if not sequenced:
            return True
        current = self._next_receiving_id
        self._next_receiving_id += 1
        if current <= self.latest_received_id:
            return False
        self.latest_received_id = current
        self.ack_due = True
        return True

    def reset_sequence(self, sequence_id: int) -> bool:
        """Apply the client's Sequence; False when it claims more than we ever received."""
        if sequence_id > self._next_receiving_id:
            return False
        self._next_receiving_id = sequence_id
        return True
