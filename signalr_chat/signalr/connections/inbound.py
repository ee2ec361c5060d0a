"""Sends that arrive by HTTP POST (Server-Sent Events and long polling), in arrival order.

A POST is answered at once and what is left of its body processed behind the response, as
ASP.NET Core's pipe does; past a short backlog the sender waits, so a client cannot queue
without bound. The processing starts in the POST's own turn and takes a task only if it has
to wait (the usual body, an invocation or two, never does): a task per POST was a loop turn
and a task object per send over SSE and long polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .background import BackgroundTasks

log = logging.getLogger(__name__)

#: POST bodies queued before a sender has to wait for them to be processed.
BACKLOG = 16


class PostedSends:
    """A connection's POSTed bodies, processed in order: from the POST's own turn, then by one task
    its owner keeps once a body has to wait; past BACKLOG the sender waits, so a client cannot
    queue without bound."""

    __slots__ = ("_bodies", "_draining", "_on_failure", "_receive", "_tasks", "in_progress")

    def __init__(
        self,
        receive: Callable[[bytes], Awaitable[None]],
        on_failure: Callable[[BaseException], Awaitable[None]],
        tasks: BackgroundTasks,
    ) -> None:
        self._receive = receive
        self._on_failure = on_failure
        #: The connection's owner's: it keeps the task that processes the bodies, when one is
        #: needed (`start_eagerly`), and the task ends itself.
        self._tasks = tasks
        self._bodies: deque[bytes] = deque()
        self._draining: asyncio.Task[None] | None = None
        #: A POST is being read (a concurrent one gets 409).
        self.in_progress = False

    def add(self, body: bytes) -> asyncio.Task[None] | None:
        """Queue a body; returns the draining task when the backlog is long, for the sender to wait on."""
        self._bodies.append(body)
        if self._draining is None:
            self._draining = self._tasks.start_eagerly(self._drain())
        return self._draining if len(self._bodies) > BACKLOG else None

    def clear(self) -> None:
        self._bodies.clear()

    async def _drain(self) -> None:
        bodies = self._bodies
        try:
            while bodies:
                await self._receive(bodies.popleft())
        except Exception as exc:  # a failing receive ends this connection, never the server
            log.exception("processing a send failed")
            bodies.clear()
            await self._on_failure(exc)
        finally:
            self._draining = None
            self._tasks.ended()
