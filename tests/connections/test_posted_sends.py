"""PostedSends: the bodies POSTed over SSE and long polling, processed in arrival order, each
from the POST's own turn, with a task kept by the owner only when processing has to wait."""

from __future__ import annotations

import asyncio

from signalr_chat.signalr.connections.background import BackgroundTasks
from signalr_chat.signalr.connections.inbound import BACKLOG, PostedSends


class Application:
    """Records what it receives; a body named in `hold` waits until released."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.hold: dict[bytes, asyncio.Future[None]] = {}
        self.failures: list[BaseException] = []

    async def receive(self, body: bytes) -> None:
        held = self.hold.get(body)
        if held is not None:
            await held
        if body == b"boom":
            raise ValueError("bad body")
        self.received.append(body)

    async def fail(self, exc: BaseException) -> None:
        self.failures.append(exc)


def posted(app: Application, tasks: BackgroundTasks) -> PostedSends:
    return PostedSends(app.receive, app.fail, tasks)


async def test_a_body_that_never_waits_is_processed_before_add_returns_and_leaves_no_task() -> None:
    app, tasks = Application(), BackgroundTasks()
    sends = posted(app, tasks)
    assert sends.add(b"one") is None
    assert app.received == [b"one"]
    assert len(tasks) == 0
    assert sends.add(b"two") is None
    assert app.received == [b"one", b"two"]
    assert len(tasks) == 0


async def test_a_body_that_waits_goes_on_in_a_task_the_owner_keeps_and_later_bodies_follow_it() -> None:
    app, tasks = Application(), BackgroundTasks()
    release = app.hold[b"slow"] = asyncio.get_running_loop().create_future()
    sends = posted(app, tasks)
    sends.add(b"slow")
    assert len(tasks) == 1, "the rest of the work belongs to the owner (cancelled when it closes)"
    sends.add(b"after")
    assert app.received == [], "a later body never overtakes one that waits"
    release.set_result(None)
    while len(tasks):
        await asyncio.sleep(0)  # the kept task forgets itself when it ends
    assert app.received == [b"slow", b"after"]
    sends.add(b"then")  # nothing waits now: processed at once again
    assert app.received == [b"slow", b"after", b"then"]


async def test_past_the_backlog_the_sender_is_given_the_task_to_wait_on() -> None:
    app, tasks = Application(), BackgroundTasks()
    release = app.hold[b"0"] = asyncio.get_running_loop().create_future()
    sends = posted(app, tasks)
    waits = [sends.add(str(i).encode()) for i in range(BACKLOG + 2)]
    assert waits[: BACKLOG + 1] == [None] * (BACKLOG + 1)
    backlog = waits[-1]
    assert backlog is not None
    release.set_result(None)
    await backlog
    assert app.received == [str(i).encode() for i in range(BACKLOG + 2)]


async def test_a_failing_body_ends_the_connection_and_drops_what_was_queued_behind_it() -> None:
    app, tasks = Application(), BackgroundTasks()
    release = app.hold[b"boom"] = asyncio.get_running_loop().create_future()
    sends = posted(app, tasks)
    sends.add(b"boom")
    sends.add(b"never")
    release.set_result(None)
    while len(tasks):
        await asyncio.sleep(0)
    assert [str(exc) for exc in app.failures] == ["bad body"]
    assert app.received == []


async def test_closing_the_owner_cancels_a_body_that_waits() -> None:
    app, tasks = Application(), BackgroundTasks()
    app.hold[b"stuck"] = asyncio.get_running_loop().create_future()
    sends = posted(app, tasks)
    sends.add(b"stuck")
    await tasks.aclose()
    assert len(tasks) == 0
    assert app.received == []
    sends.add(b"next")  # the connection may still be POSTed to while it ends: a fresh start
    assert app.received == [b"next"]
