"""Interaction ids: RFC 9562 version 7 UUIDs, time-ordered and unique."""

import time
import uuid

from services.tracking.ids import uuid7_batch


def test_ids_are_version_7_rfc_variant_uuids_carrying_the_current_millisecond():
    before = time.time_ns() // 1_000_000
    ids = uuid7_batch(3)
    after = time.time_ns() // 1_000_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after


def test_a_batch_counts_up_so_its_ids_are_distinct_and_sorted():
    ids = uuid7_batch(5000)
    assert len(set(ids)) == 5000 and ids == sorted(ids)


def test_batches_made_in_the_same_millisecond_do_not_collide():
    ids = [i for _ in range(200) for i in uuid7_batch(50)]
    assert len(set(ids)) == len(ids)
