"""The streams of one hub connection: server-to-client streams and client upload streams.

The connection owns both trackers; the dispatcher starts, feeds, completes and cancels
through them, and the drain lists the running ones. Neither creates anything until a
connection first streams, so an idle connection carries two small objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import Any

from .cancellation import CancellationToken
from .upload_stream import UploadStream


class RunningStream:
    """A server-to-client stream: its task, and the token its method may watch."""

    __slots__ = ("interruptible", "task", "token")

    def __init__(self, task: asyncio.Task[str | None], token: CancellationToken, interruptible: bool) -> None:
        self.task = task
        self.token = token
        #: False while a method that returns a stream is still being awaited for it: the
        #: token is cancelled, never the call (as .NET cancels a token, never a method).
        self.interruptible = interruptible

    def cancel(self) -> None:
        """The caller cancelled the stream or left: the token first (its callbacks run), then the task."""
        self.token.cancel()
        if self.interruptible:
            self.task.cancel()


class ServerStreams:
    """Server-to-client streams by invocation id."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[str, RunningStream] | None = None

    def __contains__(self, invocation_id: str) -> bool:
        return self._running is not None and invocation_id in self._running

    def start(
        self,
        invocation_id: str,
        run: Coroutine[Any, Any, str | None],
        token: CancellationToken,
        *,
        spawn: Callable[[Coroutine[Any, Any, str | None]], asyncio.Task[str | None]],
        interruptible: bool,
        done: Callable[[asyncio.Task[str | None]], None],
    ) -> RunningStream:
        """Run the stream as a task of the connection's owner; `done` runs when it ends, even
        when it is cancelled before `run` ever started (then no code inside `run` runs)."""
        task = spawn(run)
        stream = RunningStream(task, token, interruptible)
        if self._running is None:
            self._running = {}
        self._running[invocation_id] = stream
        task.add_done_callback(done)
        return stream

    def reading(self, invocation_id: str) -> None:
        """A method that returns its stream has returned it: cancelling now interrupts the reading."""
        stream = self._running.get(invocation_id) if self._running is not None else None
        if stream is not None:
            stream.interruptible = True

    def cancel(self, invocation_id: str) -> bool:
        """A CancelInvocation: False when no such stream runs (it may have just ended)."""
        stream = self._running.get(invocation_id) if self._running is not None else None
        if stream is None:
            return False
        stream.cancel()
        return True

    def cancel_all(self) -> None:
        """The connection is gone."""
        if self._running:
            for stream in list(self._running.values()):
                stream.cancel()

    def finished(self, invocation_id: str, task: asyncio.Task[Any]) -> None:
        """Forget a stream that ended (unless its id already names a newer one)."""
        running = self._running
        if running is not None:
            stream = running.get(invocation_id)
            if stream is not None and stream.task is task:
                del running[invocation_id]

    def tasks(self) -> list[asyncio.Task[str | None]]:
        """The tasks of the streams running now."""
        return [stream.task for stream in self._running.values()] if self._running else []

    def __len__(self) -> int:
        return len(self._running) if self._running is not None else 0


class UploadStreams:
    """Client-to-server streams by stream id, from the invocation that names them to its end."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, UploadStream] | None = None

    def __contains__(self, stream_id: str) -> bool:
        return self._open is not None and stream_id in self._open

    def prepare(self, stream_ids: Iterable[str], capacity: int) -> list[UploadStream] | str:
        """Streams for an invocation's ids, not yet open; the error text when an id is in use."""
        streams: list[UploadStream] = []
        for stream_id in stream_ids:
            if stream_id in self:
                return f"Invocation ID '{stream_id}' is already in use."
            streams.append(UploadStream(stream_id, capacity))
        return streams

    def open(self, streams: Iterable[UploadStream]) -> None:
        """The invocation bound: its streams receive items from now on."""
        for stream in streams:
            if self._open is None:
                self._open = {}
            self._open[stream.stream_id] = stream

    def item(self, stream_id: str, item: Any) -> Awaitable[None] | None:
        """A StreamItem: what the reader waits for while the stream's buffer is full; None if unknown."""
        stream = self._open.get(stream_id) if self._open is not None else None
        return None if stream is None else stream.put(item)

    def complete(self, stream_id: str, error: str | None) -> bool:
        """The client's Completion of an upload; False when it is not one (a client result)."""
        stream = self._open.pop(stream_id, None) if self._open is not None else None
        if stream is None:
            return False
        stream.complete(error)
        return True

    def forget(self, stream_ids: Iterable[str] | None) -> None:
        """The invocation that took these streams has ended: later items are ignored, and one
        waiting for room in a stream's buffer is let go."""
        if self._open:
            for stream_id in stream_ids or ():
                stream = self._open.pop(stream_id, None)
                if stream is not None:
                    stream.abandon()

    def complete_all(self, error: str) -> None:
        """The connection is gone: every method still reading an upload sees `error`."""
        if self._open:
            for stream in self._open.values():
                stream.complete(error)

    def __iter__(self) -> Iterator[UploadStream]:
        return iter(list(self._open.values()) if self._open else [])
