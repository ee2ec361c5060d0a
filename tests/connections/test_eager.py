"""start_eagerly: a coroutine runs in the caller's turn, and takes a task only if it waits."""

from __future__ import annotations

import asyncio

import pytest

from signalr_chat.signalr.connections.eager import start_eagerly


async def test_a_coroutine_that_never_waits_runs_at_once_without_a_task() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("done")

    assert start_eagerly(work()) is None
    assert ran == ["done"]


async def test_a_coroutine_that_waits_goes_on_in_a_task() -> None:
    gate = asyncio.get_running_loop().create_future()
    ran: list[str] = []

    async def work() -> None:
        ran.append("before")
        ran.append(await gate)

    task = start_eagerly(work())
    assert task is not None and ran == ["before"]
    gate.set_result("after")
    await task
    assert ran == ["before", "after"]


@pytest.mark.parametrize("started", [False, True], ids=["before-its-first-step", "while-it-waits"])
async def test_a_cancelled_task_closes_the_coroutine(started: bool) -> None:
    gate = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    task = start_eagerly(work())
    assert task is not None
    if started:
        await asyncio.sleep(0)  # the task's first step: it waits on the gate
    task.cancel()
    await asyncio.wait((task,))
    assert task.cancelled()
    assert cleaned == [True], "the coroutine's finally ran"
