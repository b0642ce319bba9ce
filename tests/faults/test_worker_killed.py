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
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from contact_segments.storage import PendingChange, Segment
from tests.support.workers import Pipeline, Worker

from .conftest import POSTGRESQL_ONLY
from .harness import (
    APPLICATION_PREFIX,
    Backend,
    FaultConfig,
    Load,
    backlog,
    check_outcomes,
    classify,
    recover,
    report,
    start_workers,
    worker_backends,
)

pytestmark = [pytest.mark.worker_faults, pytest.mark.redis, pytest.mark.timeout(300 + 30 * FaultConfig.from_env().kills)]

SLOTS = 3  #: workers side by side: while one starts again, the others take the load
CONCURRENCY = 1
AIM_TIMEOUT = 5.0  #: how long to watch for the aimed-at transaction before trying again
LONGEST_REBUILD = "B2B in Malaysia"  #: reads the ballast too: the longest rebuilds


def aimed_rebuild_done(pipeline: Pipeline, segment_id: int) -> Callable[[], bool]:
    def done() -> bool:
        with pipeline.session_factory() as session:
            return bool(session.scalar(select(Segment.built_version == Segment.rule_version).where(Segment.id == segment_id)))

    return done


def aimed_batch_done(pipeline: Pipeline, workspace_id: str, contact_ids: list[str]) -> Callable[[], bool]:
    def done() -> bool:
        with pipeline.session_factory() as session:
            pending = select(func.count()).where(
                PendingChange.workspace_id == workspace_id, PendingChange.contact_id.in_(contact_ids)
            )
            return session.scalar(pending) == 0

    return done


def watch_for(
    pipeline: Pipeline, slots: list[Worker], target: str, done: Callable[[], bool]
) -> tuple[Worker, Backend] | None:
    """A live worker and its backend inside a transaction of the ``target`` kind; None once the
    aimed-at work is ``done`` (it ran between two looks) or after :data:`AIM_TIMEOUT`."""
    deadline = time.monotonic() + AIM_TIMEOUT
    looks = 0
    while time.monotonic() < deadline:
        alive = {worker.name: worker for worker in slots if worker.alive}
        for backend in worker_backends(pipeline):
            if backend.application_name in alive and classify(backend.query) == target:
                return alive[backend.application_name], backend
        looks += 1
        if looks % 20 == 0 and done():
            return None
        time.sleep(0.002)
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
    misses: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    began = time.monotonic()
    try:
        while sum(kills.values()) < config.kills:
            # Alternate, ending on a rebuild: the last one killed is left for the beat to re-send.
            target = ("rebuild", "evaluation")[(config.kills - sum(kills.values())) % 2]
            mark = time.monotonic()
            deadline = mark + 60
            while not any(worker.alive and worker.ready() for worker in slots):
                assert time.monotonic() < deadline, "no worker became ready within 60 s"
                time.sleep(0.05)
            spent["waiting for a ready worker"] += time.monotonic() - mark
            mark = time.monotonic()
            if target == "rebuild":
                done = aimed_rebuild_done(pipeline, load.edit(LONGEST_REBUILD))
            else:
                done = aimed_batch_done(pipeline, load.workspace_id, load.ballast_change())
            found = watch_for(pipeline, slots, target, done)
            spent["making and catching the work"] += time.monotonic() - mark
            if found is None:
                misses[target] += 1
                assert sum(misses.values()) <= 5 * config.kills, f"could not catch work in flight: {dict(misses)}"
                continue
            victim, backend = found
            victim.kill()
            kills[target] += 1
            states[backend.state] += 1
            slots[slots.index(victim)] = new_worker()
        load_seconds = time.monotonic() - began
        load.stop_edits()
        time.sleep(2)  # changes keep arriving after the last kill, too
    finally:
        load.stop()
    for worker in slots:
        worker.wait_ready()
    left = backlog(pipeline, load.workspace_id)

    figures = {
        "kills survived": sum(kills.values()),
        "kills mid-rebuild": kills["rebuild"],
        "kills mid-evaluation": kills["evaluation"],
        "kills inside a statement / between statements": f"{states['active']} / {states['idle in transaction']}",
        "aims missed (the work ran between two looks)": sum(misses.values()),
        "seconds under load and kills": round(load_seconds, 1),
        **{f"seconds {what}": round(value, 1) for what, value in spent.items()},
        "left for the beat": ", ".join(f"{value} {name}" for name, value in left.items()),
    }
    figures |= recover(pipeline, load.workspace_id)
    figures |= check_outcomes(pipeline, load, redeliveries_allowed=True)
    report("worker_killed", figures)
