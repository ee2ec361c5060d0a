"""The graceful stop that SIGTERM sets off, before the server closes its doors.

1. Readiness turns false (/readyz 503), so the load balancer sends no one new.
2. New negotiates (and skip-negotiation WebSockets) get 503 "Server is shutting down".
3. Chat replies in flight (and server streams) may finish for `drain_timeout_seconds`.
4. Replies still running then are stopped: each ends normally, stored as far as it got.
5. Behind Azure SignalR Service, the service's shutdown handshake moves our clients to other
   instances first (the `handover`); then every client still here gets Close with
   allowReconnect: true, and reconnects to another instance.
6. Long-polling clients get a moment to collect that Close with their next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..chat.conversations import ConversationService
from ..hosting.health import Health
from ..signalr import HubEndpoint

log = logging.getLogger(__name__)

#: After the stop at the limit, how long replies get to store themselves and complete.
STOP_GRACE_SECONDS = 5.0
#: How long long-polling clients get to collect their Close before the listener closes.
COLLECT_SECONDS = 2.0
#: How often the drain looks whether they have.
_COLLECT_CHECK = 0.05


@dataclass(slots=True)
class GracefulDrain:
    """The chat app's drain (the steps above), which hosting's `run` calls on the first SIGTERM while it still
    listens: replies finish or are stored as far as they got, and every client reconnects elsewhere."""

    health: Health
    endpoints: Sequence[HubEndpoint]
    chat: ConversationService
    limit: float
    #: Hands the clients over before they are closed (Azure SignalR Service's fin/finack and migration).
    handover: Callable[[], Awaitable[None]] | None = None

    @property
    def bound(self) -> float:
        """The longest a drain takes: the limit, the grace for stopped replies, the last polls."""
        return self.limit + STOP_GRACE_SECONDS + COLLECT_SECONDS

    def begin(self) -> None:
        """Steps 1 and 2, at once: not ready, and no new connections."""
        self.health.draining = True
        for endpoint in self.endpoints:
            endpoint.stop_accepting()

    async def __call__(self) -> None:
        started = time.monotonic()
        self.begin()
        log.info("draining: not ready, new connections refused; %d replies in flight", len(self._running()))
        if not await self._settled(self.limit):
            stopped = self.chat.stop_all()
            log.info(
                "drain limit of %.0f s reached: %d replies stopped, stored as far as they got", self.limit, stopped
            )
            await self._settled(STOP_GRACE_SECONDS)
        settled = time.monotonic()
        if self.handover is not None:
            await self.handover()
        for endpoint in self.endpoints:
            await endpoint.shutdown()  # Close(allowReconnect: true) to every client
        closed = time.monotonic()
        await self._collected()
        now = time.monotonic()
        log.info(
            "drained in %.1f s: replies %.1f s, Close to every client %.2f s, last long polls %.2f s",
            now - started,
            settled - started,
            closed - settled,
            now - closed,
        )

    def _running(self) -> set[asyncio.Task[Any]]:
        """The tasks of the chat's replies, and of server streams (whose completion follows the reply)."""
        tasks: set[asyncio.Task[Any]] = {r.task for r in self.chat.replies_in_flight() if r.task is not None}
        for endpoint in self.endpoints:
            tasks.update(endpoint.running_streams())
        return tasks

    async def _settled(self, timeout: float) -> bool:
        """Wait until nothing runs (replies started meanwhile count too); False at the timeout."""
        deadline = time.monotonic() + timeout
        while tasks := self._running():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(tasks, timeout=remaining)
        return True

    async def _collected(self) -> None:
        """A closed long-polling connection stays registered until a poll has taken its Close."""
        deadline = time.monotonic() + COLLECT_SECONDS
        while any(len(endpoint.connections) for endpoint in self.endpoints) and time.monotonic() < deadline:
            await asyncio.sleep(_COLLECT_CHECK)
