"""Stopping background tasks for certain, and waiting on an event with a deadline.

Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives in the instant its
awaited work completes (fixed in 3.12, cpython gh-86296): a loop that waits that way can
outlive the `cancel()` meant to end it, and a shutdown awaiting that loop hangs for good (a
scheduler replica polling its lock ten times a second did, once in a CI run). So the
services wait with `asyncio.timeout`, which has no such window (ruff bans `wait_for`), and
stop their tasks with `cancel_and_wait`, which asks again should any library swallow the
request the same way.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

ASK_AGAIN_SECONDS = 5.0  # longer than any clean-up a cancelled loop does on its way out


async def cancel_and_wait(*tasks: asyncio.Task, ask_again_seconds: float = ASK_AGAIN_SECONDS) -> None:
    """Cancels the tasks and returns once every one has ended, cancelling again any that
    carried on. An exception other than the cancellation is raised, as awaiting would."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=ask_again_seconds)
    for task in tasks:
        with suppress(asyncio.CancelledError):
            task.result()


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` was set within `seconds`."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
