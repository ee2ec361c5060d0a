"""The graceful stop that SIGTERM sets off, before the server closes its doors.

1. Readiness turns false (/readyz 503), so the load balancer sends no one new.
2. New negotiates (and skip-negotiation WebSockets) get 503 "Server is shutting down".
3. Invocations in flight, chat replies among them, may finish for `drain_timeout_seconds`.
4. Replies still running then are stopped: each ends normally, stored as far as it got.
5. Every client gets Close with allowReconnect: true, and reconnects to another instance.
6. Long-polling clients get a moment to collect that Close with their next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .chat import ChatService
from .health import Health
from .signalr import HubEndpoint
from .signalr.draining import in_flight, wait_for_invocations

log = logging.getLogger(__name__)

#: After the stop at the limit, how long replies get to store themselves and complete.
STOP_GRACE_SECONDS = 5.0
#: How long long-polling clients get to collect their Close before the listener closes.
COLLECT_SECONDS = 2.0
#: How often the drain looks whether they have.
_COLLECT_CHECK = 0.05


@dataclass(slots=True)
class GracefulDrain:
    health: Health
    endpoints: Sequence[HubEndpoint]
    chat: ChatService
    limit: float

    @property
    def bound(self) -> float:
        """The longest a drain takes: the limit, then the grace for stopped replies."""
        return self.limit + STOP_GRACE_SECONDS + COLLECT_SECONDS

    def begin(self) -> None:
        """Steps 1 and 2, at once: not ready, and no new connections."""
        self.health.draining = True
        for endpoint in self.endpoints:
            endpoint.draining = True

    async def __call__(self) -> None:
        started = time.monotonic()
        self.begin()
        running = sum(len(in_flight(endpoint)) for endpoint in self.endpoints)
        log.info("draining: not ready, new connections refused; %d invocations in flight", running)
        if not await wait_for_invocations(self.endpoints, self.limit):
            stopped = self.chat.stop_all()
            log.info(
                "drain limit of %.0f s reached: %d replies stopped, stored as far as they got", self.limit, stopped
            )
            await wait_for_invocations(self.endpoints, STOP_GRACE_SECONDS)
        for endpoint in self.endpoints:
            await endpoint.shutdown()  # Close(allowReconnect: true) to every client
        await self._collected()
        log.info("drained in %.1f s", time.monotonic() - started)

    async def _collected(self) -> None:
        """A closed long-polling connection stays registered until a poll has taken its Close."""
        deadline = time.monotonic() + COLLECT_SECONDS
        while any(len(endpoint.connections) for endpoint in self.endpoints) and time.monotonic() < deadline:
            await asyncio.sleep(_COLLECT_CHECK)
