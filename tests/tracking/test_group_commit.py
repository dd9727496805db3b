"""The group committer: who shares a commit, and who waits for one to fill."""

import asyncio
import time

from services.tracking.group_commit import GroupCommitter


class RecordingFlush:
    """A flush that takes `seconds` and records the size of each group it wrote."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.groups: list[int] = []

    async def __call__(self, events):
        self.groups.append(len(events))
        await asyncio.sleep(self.seconds)
        return [("id", False) for _ in events]


async def test_a_lone_caller_is_written_at_once_whatever_the_delay():
    flush = RecordingFlush(0.0)
    committer = GroupCommitter([flush], max_batch=100, delay=5.0, group_calls=10)
    try:
        for _ in range(3):  # one after another, as a single client calls
            started = time.perf_counter()
            await committer.submit(["event"])
            assert time.perf_counter() - started < 1.0
    finally:
        await committer.close()
    assert flush.groups == [1, 1, 1]


async def test_calls_arriving_during_a_write_wait_to_share_the_next_commit():
    flush = RecordingFlush(0.05)
    committer = GroupCommitter([flush], max_batch=100, delay=5.0, group_calls=3)
    try:
        first = asyncio.create_task(committer.submit(["a"]))
        await asyncio.sleep(0.01)  # "a" is being written
        later = []
        for name in "bcd":
            later.append(asyncio.create_task(committer.submit([name])))
            await asyncio.sleep(0.06)  # each arrives after the previous write would have ended
        await asyncio.gather(first, *later)
    finally:
        await committer.close()
    assert flush.groups == [1, 3]


async def test_a_waiting_group_is_written_when_the_delay_runs_out():
    flush = RecordingFlush(0.02)
    committer = GroupCommitter([flush], max_batch=100, delay=0.1, group_calls=50)
    try:
        first = asyncio.create_task(committer.submit(["a"]))
        await asyncio.sleep(0.005)
        started = time.perf_counter()
        await committer.submit(["b"])
        waited = time.perf_counter() - started
        await first
    finally:
        await committer.close()
    assert flush.groups == [1, 1] and 0.09 <= waited < 1.0


async def test_a_waiting_group_is_written_as_soon_as_it_holds_a_full_batch_of_events():
    flush = RecordingFlush(0.02)
    committer = GroupCommitter([flush], max_batch=10, delay=5.0, group_calls=50)
    try:
        first = asyncio.create_task(committer.submit(["a"]))
        await asyncio.sleep(0.005)  # "a" is being written: the next group waits to grow
        started = time.perf_counter()
        await asyncio.gather(committer.submit(["b"] * 4), committer.submit(["c"] * 6))
        waited = time.perf_counter() - started
        await first
    finally:
        await committer.close()
    assert flush.groups == [1, 10] and waited < 1.0
