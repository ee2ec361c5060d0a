"""Fan-out messages from Redis delivered in batches while a burst lasts, so they share frames.

In memory, the records a loop turn queues for one connection leave in one WebSocket frame.
Through Redis that rarely happens by itself: a hub method awaits each PUBLISH (a send returns
only once Redis has taken it), so a burst from one sender arrives one message at a time, and
each was written to every connection, a frame and a send call apiece, before the next came.
A frame costs far more than the record in it.

So once a burst is under way (a message arrives within `window` of the end of the last
delivery), messages are held while they keep coming: they are delivered, in order and in one
loop turn, when none has arrived for `window`, or when the first has waited `MAX_HOLD` windows.
Each connection's outbox then takes them as one frame. A message after a quiet spell goes at
once (in the next loop turn, with any read together with it), so steady traffic gains no
latency; in a burst a message waits at most `MAX_HOLD` windows (20 ms by default).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..untrusted import Untrusted
from .wire import BackplaneProtocolError

log = logging.getLogger(__name__)

#: The gap that ends a burst: a burst's frames per delivery, CPU and added latency follow it
#: (docs/benchmarks.md, "Through Redis").
DEFAULT_WINDOW = 0.002
#: The longest a held message waits, in windows: a sender that never pauses still gets its
#: messages out every this many windows.
MAX_HOLD = 10

Handler = Callable[[bytes], None]


class DeliveryCoalescer:
    """Messages taken in arrival order and handed to their handlers in batches."""

    __slots__ = ("_first", "_handle", "_inbox", "_last", "_loop", "_quiet_at", "window")

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.window = window
        self._inbox: list[tuple[Handler, bytes, bytes]] = []
        self._handle: asyncio.Handle | None = None
        #: Until this loop time a new message waits for company.
        self._quiet_at = 0.0
        #: When the first and the last held message arrived.
        self._first = self._last = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, handler: Handler, data: bytes, channel: bytes) -> None:
        self._inbox.append((handler, data, channel))
        loop = self._loop = self._loop or asyncio.get_running_loop()
        now = self._last = loop.time()
        if self._handle is not None:
            return  # a delivery is due: this one joins it
        if now >= self._quiet_at:
            # call_soon rather than now: the messages read together with this one join it
            self._handle = loop.call_soon(self._run)
        else:
            self._first = now
            self._handle = loop.call_later(self.window, self._held)

    def _held(self) -> None:
        """A held batch's timer: deliver after a gap of `window`, or once the first waited long enough."""
        assert self._loop is not None
        now = self._loop.time()
        due = min(self._last + self.window, self._first + MAX_HOLD * self.window)
        if now < due:
            self._handle = self._loop.call_at(due, self._held)
        else:
            self._run()

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
