"""Watching PostgreSQL for a connection that waits for a lock (a race a test sets up)."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

_WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock'")


def waiting_on_locks(engine: Engine, application_name: str, *, expected: int = 1, timeout: float = 10) -> int:
    """How many connections named ``application_name`` wait for a lock, once that is
    ``expected`` (or after ``timeout`` seconds).  Each look is a transaction of its own:
    PostgreSQL keeps one view of ``pg_stat_activity`` per transaction."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            count = connection.scalar(_WAITING, {"name": application_name}) or 0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.02)
