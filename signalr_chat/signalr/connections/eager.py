"""Run a coroutine at once, and give it a task only if it has to wait.

A WebSocket write almost never waits (only when the peer stops reading and the socket's
buffer is full), yet `await`-ing it from a fresh task per write costs more than the write.
Python 3.12's eager tasks do this for any coroutine; on 3.11 this does it for the
coroutines we hand it, which do not rely on `asyncio.current_task()` being their own. Given
a `contextvars.Context`, the coroutine runs in it from start to end, as in a Task of its own,
so what it sets (a span, a log field) never leaks into the caller's context.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


def start_eagerly(
    coroutine: Coroutine[Any, Any, None], context: contextvars.Context | None = None
) -> asyncio.Task[None] | None:
    """Runs `coroutine` to its first suspension: None if it finished, else the task that goes on.

    An exception raised before the first suspension propagates to the caller.
    """
    try:
        awaited = coroutine.send(None) if context is None else context.run(coroutine.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coroutine, awaited), context=context)


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
