"""Runs one connection's plain invocations in arrival order, at most N at a time."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

_Job = Callable[[], Coroutine[Any, Any, None]]


class InvocationQueue:
    """The receive loop never waits on a hub method, so Completions for client results
    and upload StreamItems keep flowing while a method runs."""

    __slots__ = ("_limit", "_running", "_waiting", "tasks")

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self._running = 0
        self._waiting: deque[_Job] | None = None  # created when the limit is first reached
        self.tasks: set[asyncio.Task[None]] = set()

    def has_room(self) -> bool:
        """Nothing waits and a slot is free: work run now keeps arrival order."""
        return self._running < self._limit

    def submit(self, job: _Job) -> None:
        if self.has_room():
            self._start(job)
        else:
            if self._waiting is None:
                self._waiting = deque()
            self._waiting.append(job)

    def _start(self, job: _Job) -> None:
        self._running += 1
        task = asyncio.get_running_loop().create_task(job())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._running -= 1
        if self._waiting:
            self._start(self._waiting.popleft())

    def clear(self) -> None:
        """The connection is gone: jobs not started yet never run."""
        if self._waiting is not None:
            self._waiting.clear()
