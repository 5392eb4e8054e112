"""A service loop waiting on an event stops when cancelled, even when woken at that moment."""

from __future__ import annotations

import asyncio

import pytest

from gobuild.platform.waiting import wait_event, wait_within


async def test_a_set_event_ends_the_wait_at_once() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, event.set)
    assert await wait_event(event, 10) is True


async def test_an_unset_event_times_out() -> None:
    assert await wait_event(asyncio.Event(), 0.05) is False


async def test_a_loop_woken_as_it_is_cancelled_still_stops() -> None:
    wake = asyncio.Event()
    rounds = 0

    async def loop_forever() -> None:
        nonlocal rounds
        while True:
            await wait_event(wake, 10)
            wake.clear()
            rounds += 1

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0.01)  # the loop is waiting
    wake.set()
    task.cancel()  # in the same iteration as the wake-up
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == 0


async def test_wait_within_answers_or_times_out() -> None:
    assert await wait_within(asyncio.sleep(0.01, result="done"), 5) == "done"
    with pytest.raises(TimeoutError):
        await wait_within(asyncio.sleep(5), 0.05)


async def test_a_loop_whose_wait_completes_as_it_is_cancelled_still_stops() -> None:
    rounds = 0
    answers: asyncio.Queue[int] = asyncio.Queue()

    async def loop_forever() -> None:
        nonlocal rounds
        while True:
            await wait_within(answers.get(), 10)
            rounds += 1

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0.01)  # the loop is waiting
    answers.put_nowait(1)  # its wait completes...
    task.cancel()  # ...in the same iteration as the cancellation
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
