"""A reply that belongs to its conversation, not to the connection that asked for it.

Its text arrives as numbered chunks (1, 2, ...), kept while it runs and for a while after,
so a client that reconnects or reloads asks for what follows the last number it has and
then follows live: `follow(after)` replays and waits in one loop over one list, so nothing
is missed between the replay and the live part, and nothing comes twice.

The end item says how it ended, and two things more: `cut: "length"` when the reply stopped at
a length limit (ContinueReply asks for the rest), and `withdrawn: true` when a late content
filter signal took the reply back: its chunks are dropped, so nothing of it is replayed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Literal, Protocol

from ..ai import Cut

Outcome = Literal["completed", "stopped", "error"]
#: Stops this instance's replies of a conversation (by key); whether any was running.
StopHandler = Callable[[str], Awaitable[bool]]


class ReplyRun:
    """One reply's chunks and how it ended; any number of followers, any time."""

    def __init__(
        self,
        conversation_id: str,
        user_message: str | None,
        continues: bool,
        user_attachments: Sequence[dict[str, object]] = (),
    ) -> None:
        self.id = uuid.uuid4().hex
        self.conversation_id = conversation_id
        #: The message being answered (None when the reply continues an earlier one).
        self.user_message = user_message
        #: Its files' metadata (StartReplyWithAttachments), shown with it while the reply runs.
        self.user_attachments = list(user_attachments)
        self.continues = continues
        self.chunks: list[str] = []
        self.outcome: Outcome | None = None
        self.error: str | None = None
        #: Stopped at a length limit: what came is kept, and marked so.
        self.cut: Cut | None = None
        #: Taken back (a late content filter signal): nothing of it is kept or replayed.
        self.withdrawn = False
        self.usage: dict[str, int] | None = None
        self.ended_at: float | None = None
        #: Set just before the turn is written to the store: from then on a snapshot of the
        #: history may already hold this reply, so it is no longer shown as running.
        self.storing = False
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.outcome is None

    @property
    def changed(self) -> asyncio.Event:
        """Set at the next chunk or the end (take it before reading the state it guards)."""
        return self._changed

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    async def append(self, text: str) -> None:
        """The relay's emit: a chunk gets the next number."""
        self.chunks.append(text)
        self._wake()

    def finish(
        self, outcome: Outcome, error: str | None = None, *, cut: Cut | None = None, withdrawn: bool = False
    ) -> None:
        if self.outcome is not None:
            return
        if withdrawn:
            self.chunks.clear()  # followers from now on get the end alone
        self.outcome = outcome
        self.error = error
        self.cut = cut
        self.withdrawn = withdrawn
        self.ended_at = time.monotonic()
        self._wake()

    def end_item(self, sequence: int) -> dict[str, object]:
        """The last item a follower gets (here, or from another instance's mirror)."""
        end: dict[str, object] = {"sequence": sequence, "end": self.outcome, "replyId": self.id}
        end.update(self.ending())
        return end

    def ending(self) -> dict[str, object]:
        """How it ended, beyond the outcome: what the end item and the Redis mirror carry."""
        described: dict[str, object] = {}
        if self.error is not None:
            described["error"] = self.error
        if self.cut is not None:
            described["cut"] = self.cut
        if self.withdrawn:
            described["withdrawn"] = True
        if self.usage is not None:
            described["usage"] = self.usage
        return described

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def describe(self) -> dict[str, object]:
        """What a client needs to show the reply before following it."""
        return {
            "replyId": self.id,
            "conversationId": self.conversation_id,
            "userMessage": self.user_message,
            "userAttachments": self.user_attachments,
            "continues": self.continues,
            "running": self.running,
            "sequence": len(self.chunks),
        }

    async def follow(self, after: int) -> AsyncIterator[dict[str, object]]:
        """Chunks numbered above `after`, as they come, then one end item."""
        sent = max(0, after)
        while True:
            changed = self._changed
            while sent < len(self.chunks):
                sent += 1
                yield {"sequence": sent, "text": self.chunks[sent - 1]}
            if self.outcome is not None:
                yield self.end_item(sent)
                return
            await changed.wait()


class ReplySharing(Protocol):
    """What the other instances know of this instance's replies, and this one of theirs.

    `SharedReplies` (shared_replies.py) mirrors them to Redis; `LocalReplies` is for
    conversations only this instance serves. Either way the relay never waits for it.
    """

    #: How long a running reply's owner may be silent before it counts as gone.
    lease_seconds: float

    async def start(self, on_stop: StopHandler) -> None:
        """`on_stop(key)` stops this instance's replies when another instance asks."""
        ...

    async def claim(self, key: str, run: ReplyRun) -> bool:
        """Takes the conversation for `run`; False when a reply runs in it elsewhere."""
        ...

    async def storing(self, run: ReplyRun) -> None:
        """`run` is about to be written to the store (run.storing is set)."""
        ...

    async def describe(self, key: str) -> tuple[dict[str, object] | None, bool]:
        """Another instance's latest reply of the conversation, and whether it is being stored."""
        ...

    def follow(self, key: str, after: int, *, linger: float) -> AsyncIterator[dict[str, object]]:
        """Another instance's latest reply, as `ReplyRun.follow` gives it; nothing when there is none."""
        ...

    async def is_running(self, keys: Sequence[str]) -> list[bool]:
        """Whether each conversation has a reply running on another instance."""
        ...

    async def followed_elsewhere(self, key: str) -> bool: ...

    async def stop(self, key: str) -> bool:
        """Stops the conversation's replies on the other instances; whether any was running."""
        ...

    async def forget(self, keys: Sequence[str]) -> None:
        """Deletes what is kept of the conversations' ended replies (their text) for other
        instances (DeleteAllMyData, after every reply of them was stopped)."""
        ...

    async def close(self) -> None: ...


class LocalReplies:
    """`ReplySharing` for one instance: nothing runs anywhere else."""

    lease_seconds = 0.0

    async def start(self, on_stop: StopHandler) -> None:
        return None

    async def claim(self, key: str, run: ReplyRun) -> bool:
        return True

    async def storing(self, run: ReplyRun) -> None:
        return None

    async def describe(self, key: str) -> tuple[dict[str, object] | None, bool]:
        return None, False

    async def follow(self, key: str, after: int, *, linger: float) -> AsyncIterator[dict[str, object]]:
        return
        yield

    async def is_running(self, keys: Sequence[str]) -> list[bool]:
        return [False] * len(keys)

    async def followed_elsewhere(self, key: str) -> bool:
        return False

    async def stop(self, key: str) -> bool:
        return False

    async def forget(self, keys: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        return None
