"""Fixtures of the fault tests: a Celery pipeline on PostgreSQL whose workers the tests kill,
and the configuration that says how hard they push (see :class:`.harness.FaultConfig`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.workers import Pipeline, open_pipeline

from .harness import FaultConfig, JournalHost, claim_broker_db, release_broker_db

POSTGRESQL_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def fault_config() -> FaultConfig:
    return FaultConfig.from_env()


@pytest.fixture(scope="session")
def fault_broker_db(redis_url: str) -> Iterator[int]:
    """The Redis database this run's workers use, claimed for the session (see
    :func:`.harness.claim_broker_db`)."""
    number = claim_broker_db(redis_url)
    yield number
    release_broker_db(redis_url, number)


@pytest.fixture
def fault_pipeline(
    backend: str, db_url: str, redis_url: str, fault_broker_db: int, tmp_path: Path
) -> Iterator[Pipeline]:
    """Workers on this test's PostgreSQL schema and this run's Redis database."""
    assert backend == "postgresql", "the fault pipeline runs on PostgreSQL"
    with open_pipeline(db_url, redis_url, tmp_path, broker_db=fault_broker_db, host_class=JournalHost) as pipeline:
        yield pipeline
