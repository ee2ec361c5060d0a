"""Run a coroutine at once, and give it a task only if it has to wait.

A WebSocket write almost never waits (only when the peer stops reading and the socket's
buffer is full), yet `await`-ing it from a fresh task per write costs more than the write.
Python 3.12's eager tasks do this for any coroutine; on 3.11 this does it for the simple
coroutines we hand it, which do not look at `asyncio.current_task()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Runs `coroutine` to its first suspension: None if it finished, else the task that goes on.

    An exception raised before the first suspension propagates to the caller.
    """
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return None
    task = asyncio.get_running_loop().create_task(_resume(coroutine, awaited))
    # a task cancelled before its first step never enters `_resume`: the coroutine is closed
    # here then, so its `finally` blocks run (closing a finished coroutine does nothing)
    task.add_done_callback(lambda _: coroutine.close())
    return task


async def _resume(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Waits for what the coroutine awaited, then drives it on, as a Task would."""
    try:
        while True:
            if awaited is None:  # a bare yield (asyncio.sleep(0)): one loop turn
                await asyncio.sleep(0)
            else:
                await asyncio.wait((awaited,))  # its outcome is for the coroutine to read
            awaited = coroutine.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        coroutine.close()
        raise
