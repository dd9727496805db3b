"""Interaction ids: time-ordered UUIDs (RFC 9562 version 7), made a batch at a time."""

from __future__ import annotations

import random
import time

# Ids need to be unique, not secret: a seeded PRNG spares a system call per event.
_random = random.Random()  # seeded from os.urandom


VERSION_7 = 0x7 << 76
VARIANT = 0b10 << 14  # the top bits of the clock-sequence group
RAND_A_BITS = 12
# rand_b (62 bits) is the 14 low bits of the clock-sequence group and the 48-bit node group.
CLOCK_SEQ_RANDOM_BITS = 14
NODE_START_BITS = 47  # leaves room to count up by any batch size without a carry


def uuid7_batch(count: int) -> list[str]:
    """count time-ordered UUIDs (RFC 9562 version 7), as strings, for one batch.

    New rows land at the right edge of the index. One timestamp, one rand_a and one
    random start of rand_b serve the whole batch, the ids counting up from it (RFC 9562's
    "monotonic random" method): ids stay unique, a batch costs one random draw instead
    of one per id, and only the last group (12 hex digits) differs from id to id, so an
    id is one formatted number after a shared prefix.
    """
    head = f"{(time.time_ns() // 1_000_000) << 80 | VERSION_7 | _random.getrandbits(RAND_A_BITS) << 64:032x}"
    clock_seq = VARIANT | _random.getrandbits(CLOCK_SEQ_RANDOM_BITS)
    prefix = f"{head[:8]}-{head[8:12]}-{head[12:16]}-{clock_seq:04x}-"
    start = _random.getrandbits(NODE_START_BITS)
    return [f"{prefix}{node:012x}" for node in range(start, start + count)]


def uuid7() -> str:
    [one] = uuid7_batch(1)
    return one
