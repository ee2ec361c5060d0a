"""A cancellation a hub method can see, as a .NET hub method sees its CancellationToken.

A streaming method's token is cancelled when the caller cancels the stream or leaves; a
plain method's when the connection ends. The method can poll it, await it, or register a
callback: none of it depends on a `finally` running, which it never does for a stream
cancelled before its method first ran. A callback may be async (or return an awaitable),
as .NET's `token.Register(async ...)`: the connection's owner runs it in the background.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..connections.background import BackgroundTasks

log = logging.getLogger(__name__)


class OperationCancelled(Exception):
    """Raised by `raise_if_cancelled`, as .NET's OperationCanceledException."""


class CancellationToken:
    """What a hub method's `CancellationToken` parameter receives: polled, awaited or given callbacks, so
    no cleanup depends on a `finally` that may never run."""

    __slots__ = ("_callbacks", "_cancelled", "_event", "_tasks")

    def __init__(self, tasks: BackgroundTasks | None = None) -> None:
        self._cancelled = False
        self._event: asyncio.Event | None = None  # created by the first wait()
        self._callbacks: list[Callable[[], object]] | None = None
        #: Runs the awaitables async callbacks return (the hub layer's tokens: the connection's owner).
        self._tasks = tasks

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def raise_if_cancelled(self) -> None:
        if self._cancelled:
            raise OperationCancelled("The operation was canceled.")

    async def wait(self) -> None:
        """Returns once cancelled."""
        if self._cancelled:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Runs `callback` once cancelled (at once if it is already); returns its remover.

        When the callback returns an awaitable (an `async def`, or a lambda calling one), the
        awaitable runs in the background, kept by the connection's owner.
        """
        if self._cancelled:
            self._run(callback)
            return _nothing
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)
        callbacks = self._callbacks

        def remove() -> None:
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    def cancel(self) -> None:
        """For the hub layer: the caller cancelled or left."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._event is not None:
            self._event.set()
        callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            self._run(callback)

    def _run(self, callback: Callable[[], object]) -> None:
        result = callback()
        if not inspect.isawaitable(result):
            return
        if self._tasks is None:
            if inspect.iscoroutine(result):
                result.close()
            log.error("a cancellation callback returned an awaitable, but this token has no owner to run it")
            return
        self._tasks.spawn(result if inspect.iscoroutine(result) else _awaited(result))


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _nothing() -> None:
    return None
