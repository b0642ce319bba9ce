"""The workers' PostgreSQL connections killed (``pg_terminate_backend``) again and again during
load: every transaction caught open dies and rolls back, the task sees a transient database
error and retries it (Celery ``autoretry_for``), the pool opens fresh connections.  The three
outcomes hold.

The workers' connections are told apart by their ``application_name`` (``segments-fault-w<n>``,
set in the URL the workers get); the test's and the host's own connections are never touched.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import text

from tests.support.workers import Pipeline

from .conftest import POSTGRESQL_ONLY
from .harness import APPLICATION_PREFIX, FaultConfig, Load, check_outcomes, recover, report, start_workers

_config = FaultConfig.from_env()
pytestmark = [pytest.mark.worker_faults, pytest.mark.redis, pytest.mark.timeout(300 + 3 * _config.seconds + 5 * _config.db_kills)]

TERMINATE = text(
    "SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name LIKE :prefix AND pid <> pg_backend_pid()"
)


@POSTGRESQL_ONLY
def test_worker_connections_killed_under_load(fault_pipeline: Pipeline, fault_config: FaultConfig) -> None:
    pipeline, config = fault_pipeline, fault_config
    workers = start_workers(pipeline, 2)
    load = Load(pipeline, config)
    load.setup()
    terminated: Counter[str] = Counter()
    try:
        load.start(edits_per_second=1.0, ballast_every=2.0)
        pause = config.seconds / config.db_kills
        for round_ in range(config.db_kills):
            if round_ % 2:
                load.edit("B2B in Malaysia")
            time.sleep(pause)
            with pipeline.session_factory() as session:
                for state, done in session.execute(TERMINATE, {"prefix": APPLICATION_PREFIX + "%"}).tuples():
                    if done:
                        terminated["in a transaction" if state in ("active", "idle in transaction") else "idle"] += 1
                session.commit()
        time.sleep(1)
    finally:
        load.stop()
    assert all(worker.alive for worker in workers), "a worker died of a lost database connection"
    retried = sum(worker.log.read_text(errors="replace").count(" retry: Retry in ") for worker in workers)
    figures = {
        "connection kill rounds": config.db_kills,
        "connections killed": sum(terminated.values()),
        "of them inside a transaction": terminated["in a transaction"],
        "tasks retried after a transient database error": retried,
    }
    figures |= recover(pipeline, load.workspace_id)
    figures |= check_outcomes(pipeline, load, redeliveries_allowed=True)
    report("database_connections_killed", figures)
