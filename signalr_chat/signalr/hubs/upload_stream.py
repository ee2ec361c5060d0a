"""A client-to-server stream, as the async iterator a hub method parameter receives."""

from __future__ import annotations

import asyncio
from typing import Any

from ..connections.background import spawn
from .errors import HubException

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class UploadStream:
    """Fed by StreamItem messages; a bounded buffer pushes back on a fast client."""

    __slots__ = ("_done", "_queue", "stream_id")

    def __init__(self, stream_id: str, capacity: int) -> None:
        self.stream_id = stream_id
        self._queue: asyncio.Queue[Any] = asyncio.Queue(capacity)
        self._done = False

    async def put(self, item: Any) -> None:
        await self._queue.put(item)

    def complete(self, error: str | None = None) -> None:
        """End the stream; the client's error surfaces in the method as a HubException."""
        item = _END if error is None else _Failed(error)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # a completion must not be lost behind a full buffer
            spawn(self._queue.put(item))

    def __aiter__(self) -> UploadStream:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            self._done = True
            raise HubException(item.error)
        return item
