"""Waiting on a condition, not on a sleep: for state a server reaches on its own."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def until(condition: Callable[[], object], what: str = "the condition", timeout: float = 10.0) -> None:
    """Poll `condition` (a function, or a coroutine function) until it is true; an AssertionError
    naming `what` after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                held = condition()
                if inspect.isawaitable(held):
                    held = await held
                if held:
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def within_loop_turns(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Lets spawned work run until `condition` holds: a bounded number of event loop turns, no
    time passing (for tests on an injected clock)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
