"""What every outbox id must be: a canonical version 7 UUID stamped with the clock."""

from __future__ import annotations

import uuid


def assert_uuid7_between(text: str, first_ms: int, last_ms: int) -> None:
    """``text`` is a canonical (lower-case, dashed) version 7 UUID whose millisecond timestamp
    lies in ``[first_ms, last_ms]``."""
    parsed = uuid.UUID(text)
    assert (str(parsed), parsed.version, parsed.variant) == (text, 7, uuid.RFC_4122)
    assert first_ms <= parsed.int >> 80 <= last_ms, (text, first_ms, last_ms)
