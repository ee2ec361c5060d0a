"""Fan-out messages from Redis delivered in batches while a burst lasts, so they share frames.

In memory, the records a loop turn queues for one connection leave in one WebSocket frame.
Through Redis that rarely happens by itself: a hub method awaits each PUBLISH (a send returns
only once Redis has taken it), so a burst from one sender arrives one message at a time, and
each was written to every connection, a frame and a send call apiece, before the next came.
A frame costs far more than the record in it.

So while a burst lasts, deliveries are spaced: a message that arrives less than `window`
after the last delivery (and its flush) ended waits, with every message that arrives
meanwhile, until `window` has passed since then; then all are delivered in order in one loop
turn, and each connection's outbox takes them as one frame. A message after a quiet spell
goes at once (in the next loop turn, with any read together with it), so steady traffic gains
no latency; in a burst a message waits at most `window`.

Why a fixed spacing and not "until the burst pauses": a burst's messages arrive as fast as
the sender's instance gets them through Redis, and that instance is slow exactly while every
message costs a frame per connection, so gaps between messages stay long. Spacing the
deliveries makes each cheaper, which lets the sender go faster, which fills the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..untrusted import Untrusted
from .wire import BackplaneProtocolError

log = logging.getLogger(__name__)

#: The spacing of deliveries in a burst: its frames per delivery, CPU and added latency
#: follow it (docs/benchmarks.md, "Scale-out through Redis").
DEFAULT_WINDOW = 0.02

Handler = Callable[[bytes], None]


class DeliveryCoalescer:
    """Messages taken in arrival order and handed to their handlers in batches."""

    __slots__ = ("_handle", "_inbox", "_loop", "_quiet_at", "window")

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self._inbox: list[tuple[Handler, bytes, bytes]] = []
        self._handle: asyncio.Handle | None = None
        #: Until this loop time a new message waits for company.
        self._quiet_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, handler: Handler, data: bytes, channel: bytes) -> None:
        self._inbox.append((handler, data, channel))
        if self._handle is not None:
            return  # a delivery is due: this one joins it
        loop = self._loop = self._loop or asyncio.get_running_loop()
        if loop.time() >= self._quiet_at:
            # call_soon rather than now: the messages read together with this one join it
            self._handle = loop.call_soon(self._run)
        else:
            self._handle = loop.call_at(self._quiet_at, self._run)

    def drain(self) -> None:
        """Deliver what waits, now: before a message that must not overtake it, and at close."""
        if self._handle is not None:
            self._handle.cancel()
            self._run()

    def _run(self) -> None:
        self._handle = None
        inbox, self._inbox = self._inbox, []
        for handler, data, channel in inbox:
            try:
                handler(data)
            except BackplaneProtocolError as exc:
                log.error("Redis backplane: %s on %s", exc, Untrusted(channel.decode(errors="replace")))
        if inbox and self._loop is not None:
            # queued after the outboxes' flush, which this delivery scheduled: the window
            # counts from when the frames were written, however long that took
            self._loop.call_soon(self._delivered)

    def _delivered(self) -> None:
        assert self._loop is not None
        self._quiet_at = self._loop.time() + self.window
