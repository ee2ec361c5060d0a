"""Runs one connection's plain invocations in arrival order, at most N at a time.

The receive loop never waits on a hub method, so Completions for client results and
upload StreamItems keep flowing while a method runs. Each of the N slots is one task
that drains the queue: invocations that finish without waiting (a broadcast, an echo)
run back to back in one loop turn, so what a burst sends to a connection leaves in one
frame, and a burst costs one task instead of one per invocation.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ..connections.background import BackgroundTasks

_Job = Callable[[], Coroutine[Any, Any, None]]

#: What received invocations waiting for a slot may hold: their records' bytes plus
#: JOB_OVERHEAD each. Past it the connection stops reading (the receive loop waits, so the
#: socket is not read and a POST is held), as ASP.NET Core stops reading at
#: MaximumParallelInvocationsPerClient with at most its transport buffer unread. It is a few
#: reads' worth, so a burst that one read delivers is queued whole and runs in one loop
#: turn: what the burst sends to a connection then leaves in one frame.
WAITING_BUDGET = 512 * 1024
#: What a waiting invocation costs beyond its record: the parsed message, its arguments
#: as Python objects, the job (measured at ~470 bytes for a small one).
JOB_OVERHEAD = 512
#: Jobs one slot runs back to back before it lets the rest of the loop run: a full budget.
_TURN = WAITING_BUDGET // JOB_OVERHEAD


class InvocationQueue:
    """One connection's plain invocations: at most `limit` run, the rest wait in arrival order, and past
    WAITING_BUDGET `submit` tells the reader what to wait for."""

    __slots__ = ("_limit", "_room", "_running", "_tasks", "_waiting", "_waiting_cost", "record_size")

    def __init__(self, limit: int, tasks: BackgroundTasks) -> None:
        self._limit = max(1, limit)
        #: Keeps the slots' tasks: the connection's owner (it cancels them at shutdown).
        self._tasks = tasks
        self._running = 0
        self._waiting: deque[tuple[_Job, int]] | None = None  # created when the limit is first reached
        self._waiting_cost = 0
        self._room: asyncio.Future[None] | None = None  # what a full queue's reader waits on
        #: The size of the records being read now: the receive loop sets it per frame.
        self.record_size = 0

    def has_room(self) -> bool:
        """A slot is free (then nothing waits): work run now keeps arrival order."""
        return self._running < self._limit

    def submit(self, job: _Job) -> asyncio.Future[None] | None:
        """Run or queue `job`; when the queue is full, what the reader must wait for before reading on."""
        if self.has_room():
            self._running += 1
            self._tasks.start(self._drain(job))  # no done callback: the slot ends itself
            return None
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        cost = self.record_size + JOB_OVERHEAD
        waiting.append((job, cost))
        self._waiting_cost += cost
        if self._waiting_cost < WAITING_BUDGET:
            return None
        if self._room is None:
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def _free_room(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    async def _drain(self, job: _Job) -> None:
        """One slot: this job, then whatever waits, until nothing does."""
        try:
            ran = 0
            while True:
                try:
                    await job()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the slot itself is being cancelled
                    # the method let a cancellation of its own escape: its job is over, not the slot
                waiting = self._waiting
                if not waiting:
                    return
                job, cost = waiting.popleft()
                self._waiting_cost -= cost
                if self._waiting_cost < WAITING_BUDGET:
                    self._free_room()
                ran += 1
                if ran % _TURN == 0:
                    await asyncio.sleep(0)
        finally:
            self._running -= 1
            self._tasks.ended()

    def clear(self) -> None:
        """The connection is gone: jobs not started yet never run."""
        if self._waiting is not None:
            self._waiting.clear()
        self._waiting_cost = 0
        self._free_room()
