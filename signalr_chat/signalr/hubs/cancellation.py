"""A cancellation a hub method can see, as a .NET hub method sees its CancellationToken.

A streaming method's token is cancelled when the caller cancels the stream or leaves; a
plain method's when the connection ends. The method can poll it, await it, or register a
callback: none of it depends on a `finally` running, which it never does for a stream
cancelled before its method first ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class OperationCancelled(Exception):
    """Raised by `raise_if_cancelled`, as .NET's OperationCanceledException."""


class CancellationToken:
    __slots__ = ("_callbacks", "_cancelled", "_event")

    def __init__(self) -> None:
        self._cancelled = False
        self._event: asyncio.Event | None = None  # created by the first wait()
        self._callbacks: list[Callable[[], None]] | None = None

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

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Runs `callback` once cancelled (at once if it is already); returns its remover."""
        if self._cancelled:
            callback()
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
            callback()


def _nothing() -> None:
    return None
