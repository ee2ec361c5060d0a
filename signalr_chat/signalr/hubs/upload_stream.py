"""A client-to-server stream, as the async iterator a hub method parameter receives."""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import HubException

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class UploadStream:
    """Fed by StreamItem messages; a bounded buffer pushes back on a fast client."""

    __slots__ = ("_abandoned", "_done", "_end", "_queue", "stream_id")

    def __init__(self, stream_id: str, capacity: int) -> None:
        self.stream_id = stream_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(capacity)
        self._done = False
        #: The end, when it came while the buffer was full: read once the buffer is empty.
        self._end: object | None = None
        #: The method that read it has ended: nothing more is kept.
        self._abandoned = False

    async def put(self, item: Any) -> None:
        if not self._abandoned:
            await self._queue.put(item)

    def abandon(self) -> None:
        """The method ended without reading it to the end (it returned, failed, was refused).

        What it buffered is dropped, which also lets go an item waiting for room: the
        connection's reader waits on that put, and would otherwise read nothing more, ever.
        ASP.NET Core completes the stream's channel, which fails the pending write alike.
        """
        self._abandoned = True
        queue = self._queue
        while not queue.empty():
            queue.get_nowait()

    def complete(self, error: str | None = None) -> None:
        """End the stream; the client's error surfaces in the method as a HubException."""
        item = _END if error is None else _Failed(error)
        if self._end is not None:
            return  # ended already
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # a completion must not be lost behind a full buffer: the
            self._end = item  # reader takes it after the last item (no task waits to queue it)

    def __aiter__(self) -> UploadStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        queue = self._queue
        if self._end is not None and queue.empty():
            item = self._end
        else:
            item = await queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            self._done = True
            raise HubException(item.error)
        return item
