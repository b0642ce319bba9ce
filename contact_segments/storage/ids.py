"""The outboxes' unique ids: time-ordered UUIDs (version 7, RFC 9562), made in Python or in SQL.

An event's id only has to be unique, but it is a unique index's key, and a random one (version
4) lands on a random leaf page of that index: once the index outgrows the buffer cache, each
insert reads a page and later writes it back.  A version 7 UUID starts with the Unix time in
milliseconds, so new ids land at the right-hand edge of the index, on pages already in memory.
The 74 bits after the version and variant are random, so ids stay unique across processes and
machines; within one millisecond their order is random.

:func:`new_uuid7` makes one in Python (the ORM default, :func:`~.queries.append_events`);
:func:`uuid7_sql` is the same in PostgreSQL, for the statements that write events themselves.
"""

from __future__ import annotations

import os
import time
import uuid

from sqlalchemy import BigInteger, ColumnElement, Text, cast, func, select

_RANDOM_BITS = 62
"""The random bits after the variant (the 12 after the version come from another 12 bits)."""


def new_uuid7() -> str:
    """A new version 7 UUID, as text: the clock's milliseconds, then random bits."""
    milliseconds = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 + 62 used
    value = (
        (milliseconds & (1 << 48) - 1) << 80
        | 0x7 << 76  # version
        | (random >> _RANDOM_BITS & 0xFFF) << 64
        | 0b10 << 62  # variant (RFC 9562)
        | random & (1 << _RANDOM_BITS) - 1
    )
    return str(uuid.UUID(int=value))


def uuid7_sql() -> ColumnElement[str]:
    """PostgreSQL: a new version 7 UUID per row, as text (``uuid7()`` arrives only in version
    18): the statement's start in milliseconds as 12 hex digits, then the random digits of a
    ``gen_random_uuid()`` (version 4, whose variant bits are already those of version 7), its
    first 15 characters overlaid::

        xxxxxxxx-xxxx-4rrr-vrrr-rrrrrrrrrrrr   gen_random_uuid()
        tttttttt-tttt-7rrr-vrrr-rrrrrrrrrrrr   the result
    """
    milliseconds = cast(func.floor(func.extract("epoch", func.statement_timestamp()) * 1000), BigInteger)
    clock = func.lpad(func.to_hex(milliseconds), 12, "0")
    head = func.concat(func.substr(clock, 1, 8), "-", func.substr(clock, 9, 4), "-7")  # 15 characters
    # A subquery of no table runs once per statement (an InitPlan), not once per row.
    return func.overlay(cast(func.gen_random_uuid(), Text), select(head).scalar_subquery(), 1, 15, type_=Text)
