"""Real Celery workers: subprocesses on the Redis broker and the test's PostgreSQL schema.

The reusable parts (``Worker``, ``Pipeline``, ``wait_for``) live in :mod:`tests.support.workers`,
shared with the fault tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.workers import TEST_BROKER_DB, Pipeline, Worker, open_pipeline, wait_for

__all__ = ["TEST_BROKER_DB", "Pipeline", "Worker", "wait_for"]


@pytest.fixture
def pipeline(backend: str, db_url: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    if backend != "postgresql":
        pytest.skip("the Celery pipeline is tested on PostgreSQL")
    with open_pipeline(db_url, redis_url, tmp_path, broker_db=TEST_BROKER_DB) as state:
        yield state
