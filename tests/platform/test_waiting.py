"""A service loop waiting on an event stops when cancelled, even when woken at that moment, and
a task that swallowed its cancellation still stops."""

from __future__ import annotations

import asyncio

import pytest

from gobuild.platform.waiting import cancel_and_wait, wait_event, wait_within


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


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def loop_forever() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1  # what a library call that loses the cancellation looks like

    stubborn = asyncio.create_task(loop_forever())
    quick = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0.01)

    await wait_within(cancel_and_wait([stubborn, quick], again_after=0.05), 5)

    assert stubborn.cancelled() and quick.cancelled()
    assert swallowed == 2


async def test_cancel_and_wait_leaves_what_a_task_raised_on_the_task() -> None:
    async def fail_when_cancelled() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    task = asyncio.create_task(fail_when_cancelled())
    await asyncio.sleep(0.01)

    await wait_within(cancel_and_wait([task]), 5)

    assert isinstance(task.exception(), RuntimeError)
