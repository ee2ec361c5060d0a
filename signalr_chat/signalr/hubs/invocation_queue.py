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

_Job = Callable[[], Coroutine[Any, Any, None]]

#: Jobs one slot runs back to back before it lets the rest of the loop run.
_TURN = 64
#: Invocations that may wait for a slot. Past this the connection stops reading (the
#: receive loop waits, so the socket is not read and a POST is held), as ASP.NET Core
#: stops reading at MaximumParallelInvocationsPerClient; a few may wait, so a Completion
#: for a client result still gets read while the one running method waits for it.
MAX_WAITING = 16


class InvocationQueue:
    __slots__ = ("_limit", "_room", "_running", "_waiting")

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._running = 0
        self._waiting: deque[_Job] | None = None  # created when the limit is first reached
        self._room: asyncio.Future[None] | None = None  # what a full queue's reader waits on

    def has_room(self) -> bool:
        """A slot is free (then nothing waits): work run now keeps arrival order."""
        return self._running < self._limit

    def submit(self, job: _Job) -> asyncio.Future[None] | None:
        """Run or queue `job`; when the queue is full, what the reader must wait for before reading on."""
        if self.has_room():
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain(job))
            return None
        waiting = self._waiting
        if waiting is None:
            waiting = self._waiting = deque()
        waiting.append(job)
        if len(waiting) < MAX_WAITING:
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
                job = waiting.popleft()
                if len(waiting) < MAX_WAITING:
                    self._free_room()
                ran += 1
                if ran % _TURN == 0:
                    await asyncio.sleep(0)
        finally:
            self._running -= 1

    def clear(self) -> None:
        """The connection is gone: jobs not started yet never run."""
        if self._waiting is not None:
            self._waiting.clear()
        self._free_room()
