"""Workers killed with SIGKILL in the middle of a rebuild and in the middle of a batch of contact
changes, while changes keep arriving; a worker started again after each kill.

Three worker slots run side by side (so the load never stops while a replacement starts).  For
each kill the test makes the work it aims at happen (a segment edit for a rebuild, a batch of a
thousand changed contacts for an evaluation), watches ``pg_stat_activity`` until a worker's
connection is inside such a transaction, and SIGKILLs that worker's whole process group on the
spot: the transaction dies with it, its message stays unacknowledged in Redis (until the
visibility timeout, far beyond the test), and its coalescing key may linger.  Only the beat's
re-sending from the database (:func:`~contact_segments.service.maintenance.schedule_pending_work`)
brings the lost work back, and that is what :func:`.harness.recover` runs, as the beat would.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.support.workers import Pipeline, Worker

from .conftest import POSTGRESQL_ONLY
from .harness import (
    APPLICATION_PREFIX,
    Backend,
    FaultConfig,
    Load,
    check_outcomes,
    classify,
    recover,
    report,
    start_workers,
    worker_backends,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300 + 30 * FaultConfig.from_env().kills)]

SLOTS = 3  #: workers side by side: while one starts again, the others take the load
CONCURRENCY = 1
AIM_TIMEOUT = 4.0  #: how long to watch for the aimed-at transaction before trying again


def watch_for(pipeline: Pipeline, slots: list[Worker], target: str, timeout: float) -> tuple[Worker, Backend] | None:
    """A live worker and its backend inside a transaction of the ``target`` kind, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {worker.name: worker for worker in slots if worker.alive}
        for backend in worker_backends(pipeline):
            if backend.application_name in alive and classify(backend.query) == target:
                return alive[backend.application_name], backend
        time.sleep(0.003)
    return None


@POSTGRESQL_ONLY
def test_workers_killed_mid_rebuild_and_mid_batch(fault_pipeline: Pipeline, fault_config: FaultConfig) -> None:
    pipeline, config = fault_pipeline, fault_config
    slots = start_workers(pipeline, SLOTS, concurrency=CONCURRENCY)
    generation = len(slots)

    def new_worker() -> Worker:
        """A replacement, started without waiting: the other slots take the load meanwhile."""
        nonlocal generation
        generation += 1
        return pipeline.start_worker(CONCURRENCY, application_name=f"{APPLICATION_PREFIX}w{generation}", wait=False)

    load = Load(pipeline, config)
    load.setup()
    load.start(edits_per_second=0.5, ballast_every=4.0)
    kills: Counter[str] = Counter()
    states: Counter[str] = Counter()
    misses = 0
    began = time.monotonic()
    try:
        while sum(kills.values()) < config.kills:
            target = ("rebuild", "evaluation")[sum(kills.values()) % 2]
            deadline = time.monotonic() + 60
            while not any(worker.alive and worker.ready() for worker in slots):
                assert time.monotonic() < deadline, "no worker became ready within 60 s"
                time.sleep(0.05)
            if target == "rebuild":
                load.edit("B2B in Malaysia")  # reads the ballast too: the longest rebuilds
            else:
                load.ballast_change()
            found = watch_for(pipeline, slots, target, AIM_TIMEOUT)
            if found is None:
                misses += 1
                assert misses <= 3 * config.kills, f"could not catch a {target} in flight ({misses} tries)"
                continue
            victim, backend = found
            victim.kill()
            kills[target] += 1
            states[backend.state] += 1
            slots[slots.index(victim)] = new_worker()
        load_seconds = time.monotonic() - began
        time.sleep(2)  # changes keep arriving after the last kill, too
    finally:
        load.stop()
    for worker in slots:
        worker.wait_ready()

    figures = {
        "kills survived": sum(kills.values()),
        "kills mid-rebuild": kills["rebuild"],
        "kills mid-evaluation": kills["evaluation"],
        "kills inside a statement / between statements": f"{states['active']} / {states['idle in transaction']}",
        "aims missed (work finished before a kill)": misses,
        "seconds under load and kills": round(load_seconds, 1),
    }
    figures |= recover(pipeline, load.workspace_id)
    figures |= check_outcomes(pipeline, load, redeliveries_allowed=True)
    report("worker killed", figures)
