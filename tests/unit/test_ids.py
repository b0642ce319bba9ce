"""The outboxes' ids made in Python: version 7 UUIDs, in time order."""

from __future__ import annotations

import time
import uuid

from contact_segments.storage.ids import new_uuid7
from tests.support.ids import assert_uuid7_between


def test_an_id_is_a_version_7_uuid_stamped_with_the_clock() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_uuid7() for _ in range(2000)]
    after = time.time_ns() // 1_000_000

    assert len(set(ids)) == len(ids)
    for text in ids:
        assert_uuid7_between(text, before, after)


def test_ids_of_later_milliseconds_sort_after_earlier_ones() -> None:
    earlier = [new_uuid7() for _ in range(50)]
    time.sleep(0.002)
    later = [new_uuid7() for _ in range(50)]

    assert max(earlier) < min(later)


def test_the_random_bits_vary() -> None:
    """The 74 bits after the timestamp, version and variant are random, not a counter or zero."""
    tails = {uuid.UUID(new_uuid7()).int & ((1 << 62) - 1) for _ in range(200)}
    heads = {uuid.UUID(new_uuid7()).int >> 64 & 0xFFF for _ in range(200)}
    assert len(tails) == 200
    assert len(heads) > 100
