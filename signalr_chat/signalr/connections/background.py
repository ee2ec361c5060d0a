"""Background tasks that an owner keeps, and cancels when it ends.

The one way the library runs work in the background. The event loop holds tasks only
weakly, so a task nobody references can be collected before it finishes; an exception in
a task nobody awaits is reported late or never; and a task nobody can name cannot be
cancelled when what it works for is gone. So every background task belongs to an owner
with a `BackgroundTasks`: the owner keeps it until it ends, a failure is logged at once,
and the owner cancels what is left when it closes (`aclose`).

Owners: each endpoint's `ConnectionManager` (everything run on behalf of its connections:
disposals, transport ends, hub invocations and streams, cancellation callbacks), the Redis
backplane, and Azure SignalR Service's server connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

from . import eager

log = logging.getLogger(__name__)


class BackgroundTasks:
    """An owner's background tasks (see above): each kept until it ends, its failure logged at once, what is
    left cancelled by `aclose`."""

    __slots__ = ("_done", "_tasks", "name")

    def __init__(self, name: str = "background") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done = self._finished  # bound once: a spawn allocates no method object

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run `coroutine` as a task this owner keeps until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def start(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """`spawn` for the per-message path: no done callback (which costs a loop callback per
        task), so the coroutine must call `ended()` last, in a `finally`, and handle its own
        failures. Only the owner may cancel it (before its first step, `ended` never runs:
        `aclose` forgets it anyway)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        return task

    def start_eagerly(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """`start`, but the coroutine first runs in the caller's turn, up to its first suspension
        (`eager.start_eagerly`): work that never waits costs no task at all. What is left, if
        anything, goes on in a task this owner keeps; the coroutine calls `ended()` last, as for
        `start` (in the caller's turn that forgets nothing)."""
        task = eager.start_eagerly(coroutine)
        if task is not None:
            self._tasks.add(task)
        return task

    def ended(self) -> None:
        """The last act of a task `start`ed here: the owner forgets it."""
        self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s task failed", self.name, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        """The tasks running now (a copy: tasks end while the caller iterates)."""
        return iter(list(self._tasks))

    def cancel(self) -> None:
        """Cancel every task; `aclose` also waits for them."""
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self, grace: float = 0.0) -> None:
        """The owner is closing: wait up to `grace` seconds for its tasks, then cancel the rest.

        A task that spawns another while it ends has it cancelled too. The caller's own
        task is never waited for nor cancelled (a task may close its owner).
        """
        current = asyncio.current_task()
        running = {task for task in self._tasks if task is not current}
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        while running := {task for task in self._tasks if task is not current and not task.done()}:
            for task in running:
                task.cancel()
            await asyncio.wait(running)
        self._tasks = {task for task in self._tasks if not task.done()}
