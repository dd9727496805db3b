"""Stopping background loops for certain (libs/tasks.py)."""

import asyncio

import pytest

from libs.tasks import cancel_and_wait, wait_for_event


async def test_cancel_and_wait_ends_a_loop_that_swallowed_the_first_cancellation():
    turns = 0

    async def stubborn_loop():
        nonlocal turns
        while True:
            turns += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if turns > 1:
                    raise

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0)
    await cancel_and_wait(task, ask_again_seconds=0.05)
    assert task.cancelled() and turns == 2


async def test_cancel_and_wait_raises_what_a_task_raised_on_its_way_out():
    async def failing_clean_up():
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("clean-up failed")

    task = asyncio.create_task(failing_clean_up())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="clean-up failed"):
        await cancel_and_wait(task)


async def test_cancel_and_wait_lets_a_cancelled_loop_finish_its_clean_up():
    cleaned = asyncio.Event()

    async def loop_with_clean_up():
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.1)
            cleaned.set()

    task = asyncio.create_task(loop_with_clean_up())
    await asyncio.sleep(0)
    await cancel_and_wait(task, ask_again_seconds=1)
    assert cleaned.is_set()


@pytest.mark.parametrize("steps_before_cancel", [0, 1, 2, 3])
async def test_a_loop_waiting_on_an_event_stops_when_cancelled_as_the_event_is_set(steps_before_cancel):
    """The instant Python 3.11's wait_for loses the cancellation in (cpython gh-86296)."""
    wake = asyncio.Event()

    async def poll_loop():
        while True:
            await wait_for_event(wake, 10)
            wake.clear()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(poll_loop())
    await asyncio.sleep(0.005)
    wake.set()
    for _ in range(steps_before_cancel):
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0.1)
    assert task.done()


async def test_wait_for_event_says_whether_the_event_was_set_in_time():
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_for_event(event, 5) is True
