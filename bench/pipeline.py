"""How fast, and how soon, do contact changes become membership events on real Celery workers?

A real Redis broker, ONE worker subprocess at ``--concurrency 2`` (prefork), PostgreSQL in a
schema of the benchmark's own (``--schema``, via ``search_path``; dropped and recreated, never
another schema), a workspace of ``--contacts`` contacts (default 100,000, bulk-loaded set-wise,
nothing pending) and 50 segments (the five defaults and 45 more: tags, fields, custom fields,
AND/OR groups, time-relative rules), their memberships built before anything is timed.

Every change is a new version of a contact's snapshot that toggles its ``promotion`` tag and
bumps a custom field, so it flips at least one segment ("Tagged promotion") and yields at least
one event.  Within a phase each contact changes once, so each event names its change.

It reports, per repetition and as the median of ``--repeat``:

* **throughput** - contact changes per second, end to end: from the first hook call to the
  last event in the outbox.  The host calls ``segments_contacts_saved`` with batches of
  ``--batch`` snapshots, as a platform does for a bulk action or an import (one process saving
  contacts one by one cannot produce thousands of changes per second; a platform reaching that
  rate does it through bulk operations or many request processes, and either way the engine
  sees many stores per evaluation task).  The host's own time is shown beside.
* **baseline** - the same changes, stored the same way (same batches, same validation and
  upsert), but with coalescing off: one Celery message per change, each evaluating exactly its
  contact (a task ``bench.evaluate_contact`` registered on the same app in the same worker: it
  takes the contact's pending bits and runs the same ``evaluate_contacts`` as the engine).
  Its measured rate is the plain one-change-per-task Celery pipeline on this machine.
* **latency** - changes at a steady ``--rate`` (200/s) for ``--seconds``, each one
  ``segments_contact_saved`` hook call (a contact saved in a request), made by ``--threads``
  host threads (a platform's request workers) and timestamped with ``time.time()`` just before
  the call; its event's time is when the row entered the outbox, from a column the benchmark
  adds to its own schema (``bench_inserted_at DEFAULT clock_timestamp()``).  PostgreSQL runs on
  this machine, so both are the same system clock (CLOCK_REALTIME).  p50 and p99 over the
  changes of a repetition, then the median of those.  (``occurred_at``, the instant the
  evaluation started, and the hook call's own duration are shown beside.)
* **CPU per change** - the CPU time of the host (this process), the worker (its process
  group) and the PostgreSQL processes serving both (by ``application_name``), from /proc,
  over each phase including the deliveries; and the rate 2 cores would give at that cost.
  On a shared machine wall-clock rates move with everyone else's load; these do not much.
* **Celery alone** - one no-op task per change (it only counts itself in Redis): what the
  broker and the worker cost before any work.

The worker runs with ``--loglevel=warning`` (at ``info`` Celery logs two lines per task, which
would slow the baseline most).  Its log is in the temp directory, named after the schema.
No beat runs; if nothing moves for 15 s (a message lost, e.g. to a Redis restart) the
benchmark sends what the beat would (``segments.schedule_pending_work``) and says so.

Connections: ``--db`` / ``$SEGMENTS_BENCH_DATABASE_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and ``--broker`` /
``$SEGMENTS_BENCH_BROKER_URL`` (default ``redis://127.0.0.1:6379/13``: a Redis database of the
benchmark's own; only the keys Celery and the coalescer use there are deleted, before and after).
If either is unreachable it says so and exits 0 (skipped).  A run holds advisory locks on its
schema and broker, so a second run stops instead of disturbing it.  The worker and the schema
are removed on exit, whatever happens short of SIGKILL (``--keep`` keeps the schema).

Run: ``python bench/pipeline.py [--contacts N] [--repeat R]`` (``tox -e bench``).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgscratch import (
    COUNTRIES,
    LANGUAGES,
    LIFECYCLES,
    PLANS,
    TAGS,
    execute,
    generate_contacts,
    reset_schema,
    schema_url,
    vacuum,
)
from sqlalchemy import Engine, delete, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER = "redis://127.0.0.1:6379/13"
DB_ENV = "SEGMENTS_BENCH_DATABASE_URL"
BROKER_ENV = "SEGMENTS_BENCH_BROKER_URL"
WORKSPACE = "bench-pipeline"
READY = "BENCH-WORKER-READY"
NOOP_COUNTER = "segments:bench:noop"
DAY = 86_400.0
WORKER_START_TIMEOUT = 90.0
NUDGE_AFTER = 15.0
DRAIN_TIMEOUT = 120.0
"""Seconds without progress (events, pending contacts, deliveries) before giving up."""



def _var(name: str) -> dict[str, Any]:
    return {"var": name}


def _tagged(tag: str) -> dict[str, Any]:
    return {"in": [tag, _var("tags")]}


def _ago(field_name: str, op: str, seconds: float) -> dict[str, Any]:
    return {"and": [{"!!": [_var(field_name)]}, {op: [_var(field_name), {"-": [_var("now"), seconds]}]}]}


def custom_segments() -> dict[str, Any]:
    """45 segments besides the five defaults: what a busy workspace keeps."""
    rules: dict[str, Any] = {}
    rules |= {f"Tagged {tag}": _tagged(tag) for tag in TAGS}
    rules |= {f"Country {c}": {"==": [_var("country"), c]} for c in COUNTRIES}
    rules |= {f"Language {lang}": {"==": [_var("language"), lang]} for lang in LANGUAGES}
    rules |= {f"Lifecycle {stage}": {"==": [_var("lifecycle"), stage]} for stage in LIFECYCLES}
    rules |= {f"Plan {plan}": {"==": [_var("custom_fields.plan"), plan]} for plan in PLANS}
    rules |= {f"Orders over {n}": {">": [_var("custom_fields.orders"), n]} for n in (5, 10, 20, 30)}
    rules |= {
        "MY promotion": {"and": [{"==": [_var("country"), "MY"]}, _tagged("promotion")]},
        "English promotion or VIP": {"and": [{"or": [_tagged("promotion"), _tagged("vip")]}, {"==": [_var("language"), "en"]}]},
        "Pro customers": {"and": [{"==": [_var("lifecycle"), "customer"]}, {"==": [_var("custom_fields.plan"), "pro"]}]},
        "Big VIPs": {"and": [_tagged("vip"), {">": [_var("custom_fields.orders"), 20]}]},
        "WhatsApp, not churning": {"and": [{"in": ["whatsapp", _var("channels")]}, {"!": _tagged("churn-risk")}]},
        "Created <30 days ago": _ago("created_at", ">", 30 * DAY),
        "Active in the last 7 days": _ago("last_incoming_message_at", ">", 7 * DAY),
        "Email known": {"!!": [_var("email")]},
        "Phone known": {"!!": [_var("phone")]},
        "Assigned": {"!!": [_var("assignee")]},
        "Open conversations": {"==": [_var("conversation_status"), "open"]},
        "Last on WhatsApp": {"==": [_var("last_interacted_channel"), "whatsapp"]},
        "SG/ID newsletter": {"and": [_tagged("newsletter"), {"in": [_var("country"), ["SG", "ID"]]}]},
        "B2B enterprise": {"and": [_tagged("b2b"), {"==": [_var("custom_fields.plan"), "enterprise"]}]},
    }
    return rules


class Skip(Exception):
    """A service the benchmark needs is unreachable."""


# --------------------------------------------------------------------------- the worker side


def run_worker(concurrency: int) -> None:
    """The worker subprocess: ``segments worker`` plus the baseline's one task.

    Same app factory, settings (from the environment), tasks and delivery settings as
    ``segments worker``; the only additions are ``bench.evaluate_contact`` and, to show what
    Celery itself costs here, ``bench.noop`` (counts itself in Redis, nothing else).
    """
    from celery.signals import worker_ready

    from contact_segments.service.settings import Settings
    from contact_segments.tasks import create_celery_app
    from contact_segments.tasks.tasks import RETRYING

    app = create_celery_app(Settings.from_env())
    runtime = app.segments_runtime

    @app.task(name="bench.evaluate_contact", **RETRYING)
    def evaluate_contact(self: Any, workspace_id: str, contact_id: str) -> None:
        evaluate_one(runtime.uow(), workspace_id, contact_id, now=time.time())

    @app.task(name="bench.noop", **RETRYING)
    def noop(self: Any, _contact_id: str) -> None:
        runtime.dispatcher.coalescer.client.incr(NOOP_COUNTER)

    @worker_ready.connect
    def _ready(**_: Any) -> None:
        print(READY, file=sys.stderr, flush=True)

    app.worker_main(["worker", f"--concurrency={concurrency}", "--loglevel=warning"])


def evaluate_one(uow: Any, workspace_id: str, contact_id: str, *, now: float) -> None:
    """The baseline's task body: ``evaluate_pending`` for exactly one contact.

    Takes the contact's pending change (deletes its row, held until the commit), re-evaluates
    the segments that read the changed fields, writes memberships and events, schedules
    delivery: the engine's own steps, without batching.
    """
    from contact_segments.service.commands import DeliverEvents
    from contact_segments.service.contacts import EVERY_FIELD
    from contact_segments.service.membership import evaluate_contacts
    from contact_segments.service.segments import evaluation_instant
    from contact_segments.storage import EventCause, PendingChange, pending_changes

    with uow:
        now = evaluation_instant(uow, workspace_id, now)
        mask = uow.session.scalar(
            delete(PendingChange)
            .where(PendingChange.workspace_id == workspace_id, PendingChange.contact_id == contact_id)
            .returning(PendingChange.mask)
        )
        if not mask:
            return
        fields = pending_changes.fields_of(mask)
        diff = evaluate_contacts(
            uow.session,
            workspace_id,
            [contact_id],
            now=now,
            cause=EventCause.CONTACT_CHANGED,
            changed={contact_id: None if fields == EVERY_FIELD else fields},
        )
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log: Path
    concurrency: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--run-worker", f"--concurrency={self.concurrency}"]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while READY not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None:
                raise SystemExit(f"the worker exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start within {WORKER_START_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its process group (its pool children) if needed."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


# --------------------------------------------------------------------------- database and broker


BROKER_KEY_PATTERNS = (
    "celery",  # the queue
    "celery\x06\x16*",  # its priority sub-queues
    "unacked*",  # reserved messages (unacked, unacked_index, unacked_mutex)
    "_kombu.binding*",  # exchange bindings (and their bookkeeping)
    "segments:queued:*",  # the coalescer's keys
    NOOP_COUNTER,
)


def clear_broker(broker: str) -> None:
    """Delete the keys Celery and the coalescer use, in the benchmark's Redis database only."""
    import redis

    client = redis.Redis.from_url(broker)
    try:
        for pattern in BROKER_KEY_PATTERNS:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def check_services(db: str, broker: str) -> None:
    import redis

    from contact_segments.storage import make_engine

    engine = make_engine(db, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise Skip(f"PostgreSQL is unreachable at {db} ({reason})") from None
    finally:
        engine.dispose()
    client = redis.Redis.from_url(broker, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        raise Skip(f"Redis is unreachable at {broker} ({error})") from None
    finally:
        client.close()


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def setup(engine: Engine, count: int, now: float) -> int:
    """Schema, workspace, 50 segments, ``count`` contacts, memberships built; returns the segment count."""
    from contact_segments import service
    from contact_segments.service import RuleInput, UnitOfWork
    from contact_segments.storage import EventCause, migrate

    migrate(engine)
    # Instrumentation, in the benchmark's own schema: when each event row entered the outbox.
    execute(engine, "ALTER TABLE membership_events ADD COLUMN bench_inserted_at double precision "
                    "DEFAULT extract(epoch FROM clock_timestamp())")  # fmt: skip
    uow = UnitOfWork.for_engine(engine)  # no dispatcher: the builds below are ours, untimed
    service.create_workspace(uow, WORKSPACE, name="Pipeline benchmark", now=now - 400 * DAY)
    for name, rule in custom_segments().items():
        service.create_segment(uow, WORKSPACE, name=name, rule=RuleInput(rule=rule), now=now - 400 * DAY)
    with engine.begin() as connection:
        generate_contacts(connection, WORKSPACE, count, now)
    vacuum(engine, "contacts")
    segments = [(s.id, s.rule_version) for s in service.list_segments(UnitOfWork.for_engine(engine), WORKSPACE)]
    for segment_id, version in segments:
        service.rebuild_segment(
            UnitOfWork.for_engine(engine), WORKSPACE, segment_id, rule_version=version, now=time.time(),
            cause=EventCause.RULE_EDITED, first_build=True,
        )  # fmt: skip
    execute(engine, "UPDATE membership_events SET delivered_at = :now", now=time.time())  # the "built" events
    vacuum(engine, "contacts", "memberships", "membership_events")
    return len(segments)


# --------------------------------------------------------------------------- CPU accounting

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(process group, CPU seconds) of a process, from /proc (``schedstat``'s nanoseconds where
    the kernel keeps them, else ``stat``'s clock ticks); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        cpu = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return int(fields[2]), cpu


@dataclass
class CpuMeter:
    """CPU seconds used by the host (this process), the worker (its process group) and the
    PostgreSQL server processes serving the benchmark's connections (by ``application_name``).

    Wall-clock rates on a shared machine move with everyone else's load; CPU per change does not
    (much), and shows where the time goes.
    """

    engine: Engine
    application_name: str
    worker: WorkerProcess | None = None

    def sample(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far, by party and process id."""
        sample: dict[str, dict[int, float]] = {"host": {0: time.process_time()}, "worker": {}, "postgres": {}}
        if self.worker is not None and self.worker.process is not None:
            group = self.worker.process.pid
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and (found := _proc_cpu(int(entry.name))) and found[0] == group:
                    sample["worker"][int(entry.name)] = found[1]
        with self.engine.connect() as connection:
            pids = connection.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": self.application_name}
            ).scalars().all()
        for pid in pids:
            if found := _proc_cpu(pid):
                sample["postgres"][pid] = found[1]
        return sample

    @staticmethod
    def per_change(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], changes: int) -> dict[str, float]:
        """Microseconds of CPU per change, by party (a process that ended in between is missed;
        the pools keep theirs open)."""
        return {
            party: sum(cpu - before[party].get(pid, 0.0) for pid, cpu in processes.items()) / changes * 1e6
            for party, processes in after.items()
        }


# --------------------------------------------------------------------------- the host side


def iso(instant: float | None) -> str | None:
    return None if instant is None else datetime.fromtimestamp(instant, UTC).isoformat()


def new_snapshots(engine: Engine, ids: list[str]) -> list[dict[str, Any]]:
    """The next version of each contact, as the host sends it: ``promotion`` toggled, one more order."""
    from contact_segments.storage import make_session_factory
    from contact_segments.storage import queries as q

    with make_session_factory(engine)() as session:
        views = q.load_contact_views(session, WORKSPACE, ids)
        versions = q.contact_versions(session, WORKSPACE, ids)
    snapshots = []
    for contact_id in ids:
        view: dict[str, Any] = dict(views[contact_id])
        tags = view["tags"]
        view["tags"] = [t for t in tags if t != "promotion"] if "promotion" in tags else [*tags, "promotion"]
        view["custom_fields"] = {**view["custom_fields"], "orders": int(view["custom_fields"].get("orders", 0)) + 1}
        for name in ("created_at", "last_incoming_message_at", "last_outgoing_message_at"):
            view[name] = iso(view[name])
        view["version"] = versions[contact_id] + 1
        snapshots.append({k: v for k, v in view.items() if v is not None})
    return snapshots


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def last_seq(engine: Engine) -> int:
    return scalar(engine, "SELECT coalesce(max(seq), 0) FROM membership_events") or 0


@dataclass
class PhaseEvents:
    first_at: dict[str, float]  # contact -> when its first event of the phase entered the outbox
    first_occurred: dict[str, float]  # contact -> occurred_at of that event
    last_at: float  # when the phase's last event entered the outbox
    events: int


def wait_for_events(run: Run, after_seq: int, ids: Iterable[str], *, what: str) -> PhaseEvents:
    """Poll until every contact in ``ids`` has an event after ``after_seq`` and nothing is pending."""
    engine = run.engine
    wanted = set(ids)
    progress, since = (-1, -1), time.monotonic()
    while True:
        with engine.connect() as connection:
            seen = connection.execute(
                text("SELECT count(DISTINCT contact_id) FROM membership_events "
                     "WHERE workspace_id = :ws AND seq > :seq AND contact_id = ANY(:ids)"),
                {"ws": WORKSPACE, "seq": after_seq, "ids": list(wanted)},
            ).scalar()  # fmt: skip
            pending = connection.execute(
                text("SELECT count(*) FROM pending_changes WHERE workspace_id = :ws"), {"ws": WORKSPACE}
            ).scalar()
        if seen == len(wanted) and pending == 0:
            break
        if (seen, pending) != progress:
            progress, since = (seen, pending), time.monotonic()
        run.check(f"{what} ({seen} of {len(wanted)} contacts with events, {pending} pending)", time.monotonic() - since)
        time.sleep(0.05)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT contact_id, bench_inserted_at, occurred_at FROM membership_events "
                 "WHERE workspace_id = :ws AND seq > :seq ORDER BY seq"),
            {"ws": WORKSPACE, "seq": after_seq},
        ).all()  # fmt: skip
    first_at: dict[str, float] = {}
    first_occurred: dict[str, float] = {}
    for contact_id, inserted_at, occurred_at in rows:
        if contact_id in wanted and contact_id not in first_at:
            first_at[contact_id], first_occurred[contact_id] = inserted_at, occurred_at
    return PhaseEvents(first_at, first_occurred, max(inserted for _, inserted, _ in rows), len(rows))


def wait_delivered(run: Run) -> None:
    """Let the phase's deliveries finish, so they do not run into the next phase's timing."""
    progress, since = -1, time.monotonic()
    while undelivered := scalar(run.engine, "SELECT count(*) FROM membership_events WHERE delivered_at IS NULL"):
        if undelivered != progress:
            progress, since = undelivered, time.monotonic()
        run.check(f"delivery ({undelivered} events undelivered)", time.monotonic() - since)
        time.sleep(0.1)


@dataclass
class Rates:
    label: str
    rates: list[float] = field(default_factory=list)
    host_rates: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)  # microseconds per change, by party

    def cpu_median(self, party: str) -> float:
        return statistics.median(sample[party] for sample in self.cpu)


class Host:
    """The host: its plugin manager (the engine over Celery) and, for the baseline, a plain sender."""

    def __init__(self, db: str, broker: str) -> None:
        from contact_segments.plugin import create_plugin_manager
        from contact_segments.service.settings import Settings
        from contact_segments.storage import make_engine, make_session_factory
        from contact_segments.tasks import create_celery_app

        settings = Settings(database_url=db, broker_url=broker)
        self.hooks = create_plugin_manager(settings)
        self.app = create_celery_app(settings)
        self.engine = make_engine(db)
        self.session_factory = make_session_factory(self.engine)
        self.broker_errors = 0

    def call(self, function: Any, **kwargs: Any) -> None:
        """Call a hook (or send a message) as a host would, riding out the broker going away: the
        store has committed by the time the enqueue fails, and the beat's re-sending (which the
        benchmark stands in for) evaluates the change later; the report counts these."""
        import kombu.exceptions
        import redis

        try:
            function(**kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError):
            self.broker_errors += 1
            time.sleep(0.2)

    def save(self, snapshot: dict[str, Any]) -> None:
        self.call(self.hooks.hook.segments_contact_saved, workspace_id=WORKSPACE, snapshot=snapshot)

    def save_batches(self, snapshots: list[dict[str, Any]], batch: int) -> None:
        for part in batched(snapshots, batch):
            self.call(self.hooks.hook.segments_contacts_saved, workspace_id=WORKSPACE, snapshots=part)

    def save_batches_one_task_each(self, snapshots: list[dict[str, Any]], batch: int) -> None:
        """The baseline: the same validation and upsert, then one message per stored change."""
        from contact_segments import service
        from contact_segments.service import UnitOfWork

        for part in batched(snapshots, batch):
            stored = service.upsert_contacts(UnitOfWork(self.session_factory), WORKSPACE, part, now=time.time())
            for contact_id in stored:
                self.call(self.app.send_task, name="bench.evaluate_contact", args=[WORKSPACE, contact_id])

    def close(self) -> None:
        self.engine.dispose()
        engine = self.hooks.get_plugin("engine")
        if engine is not None and "session_factory" in engine.__dict__:
            engine.session_factory.kw["bind"].dispose()


@dataclass
class Run:
    """What the phases share: the benchmark's database, the host, the worker, the broker."""

    engine: Engine
    host: Host
    worker: WorkerProcess
    broker: str
    meter: CpuMeter
    nudged: int = 0  # times the beat's re-sending of lost work was needed
    nudged_here: int = 0

    def check(self, what: str, waited: float) -> None:
        """Stop with a diagnosis if the worker died, or if ``what`` has waited too long.

        After :data:`NUDGE_AFTER` seconds without progress, it does what the beat does every
        30 s and the benchmark runs no beat for: send ``segments.schedule_pending_work``, which
        re-sends the work a lost message left undone (a Redis restart loses queued messages).
        """
        process = self.worker.process
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what}: the worker exited with {process.returncode}:\n{self.worker.tail()}")
        if waited > NUDGE_AFTER * (self.nudged_here + 1) and waited <= DRAIN_TIMEOUT:
            print(f"  no progress for {waited:.0f} s ({what}): re-sending pending work, as the beat would; "
                  "this repetition's figures include the wait", flush=True)  # fmt: skip
            self.host.call(self.host.app.send_task, name="segments.schedule_pending_work")
            self.nudged += 1
            self.nudged_here += 1
        if waited < 1:
            self.nudged_here = 0
        if waited > DRAIN_TIMEOUT:
            import redis

            client = redis.Redis.from_url(self.broker)
            try:
                queued, unacked = client.llen("celery"), client.hlen("unacked")
            finally:
                client.close()
            raise SystemExit(f"{what}: nothing happened for {DRAIN_TIMEOUT:.0f} s ({queued} messages queued, "
                             f"{unacked} unacknowledged); the worker's log: {self.worker.log}")  # fmt: skip


def throughput_phase(run: Run, ids: list[str], batch: int, *, baseline: bool, figure: Rates) -> None:
    engine, host, meter = run.engine, run.host, run.meter
    snapshots = new_snapshots(engine, ids)
    after = last_seq(engine)
    cpu = meter.sample()
    started = time.time()
    if baseline:
        host.save_batches_one_task_each(snapshots, batch)
    else:
        host.save_batches(snapshots, batch)
    host_done = time.time()
    events = wait_for_events(run, after, ids, what=figure.label)
    figure.rates.append(len(ids) / (events.last_at - started))
    figure.host_rates.append(len(ids) / (host_done - started))
    figure.events.append(events.events)
    wait_delivered(run)  # the CPU figures include delivering the events
    figure.cpu.append(meter.per_change(cpu, meter.sample(), len(ids)))


def celery_floor(run: Run, count: int) -> float | None:
    """One no-op task per change, ``count`` of them: Celery's own rate here (sent to done).
    None if the broker went away meanwhile (its counter went with it)."""
    import redis

    client = redis.Redis.from_url(run.broker)
    try:
        client.delete(NOOP_COUNTER)
        started = time.perf_counter()
        for n in range(count):
            run.host.app.send_task("bench.noop", args=[f"c{n:08d}"])
        progress, since = 0, time.monotonic()
        while (done := int(client.get(NOOP_COUNTER) or 0)) < count:
            if done != progress:
                progress, since = done, time.monotonic()
            if time.monotonic() - since > NUDGE_AFTER:
                return None  # lost messages: nothing to re-send for these
            run.check(f"no-op tasks ({done} of {count} done)", 0)
            time.sleep(0.01)
        return count / (time.perf_counter() - started)
    except redis.exceptions.RedisError:
        return None
    finally:
        client.close()


@dataclass
class Latencies:
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    p50_occurred: list[float] = field(default_factory=list)
    p99_occurred: list[float] = field(default_factory=list)
    achieved: list[float] = field(default_factory=list)
    maximum: list[float] = field(default_factory=list)
    hook_p50: list[float] = field(default_factory=list)  # how long the host's hook call took
    hook_p99: list[float] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_phase(run: Run, ids: list[str], rate: float, threads: int, figure: Latencies) -> None:
    """``len(ids)`` single saves at a steady ``rate``, from ``threads`` request threads.

    Change ``n`` is due at ``start + n / rate``; thread ``n % threads`` makes it, so each thread
    has ``threads / rate`` seconds per call (a host's request workers, each saving one contact).
    A call that starts late is timed from when it started: the latency is the engine's, not the
    benchmark's queueing.
    """
    engine, host = run.engine, run.host
    snapshots = new_snapshots(engine, ids)
    after = last_seq(engine)
    called: dict[str, float] = {}
    durations: list[float] = []
    errors: list[BaseException] = []
    start = time.perf_counter() + 0.05

    def request_thread(first: int) -> None:
        try:
            for n in range(first, len(snapshots), threads):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                snapshot = snapshots[n]
                began = time.perf_counter()
                called[snapshot["id"]] = time.time()
                host.save(snapshot)
                durations.append(time.perf_counter() - began)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    pool = [threading.Thread(target=request_thread, args=(k,), daemon=True) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - start
    events = wait_for_events(run, after, ids, what="latency")
    latencies = [events.first_at[c] - t for c, t in called.items()]
    from_occurred = [events.first_occurred[c] - t for c, t in called.items()]
    figure.p50.append(percentile(latencies, 0.50))
    figure.p99.append(percentile(latencies, 0.99))
    figure.p50_occurred.append(percentile(from_occurred, 0.50))
    figure.p99_occurred.append(percentile(from_occurred, 0.99))
    figure.maximum.append(max(latencies))
    figure.achieved.append(len(ids) / elapsed)
    figure.hook_p50.append(percentile(durations, 0.50))
    figure.hook_p99.append(percentile(durations, 0.99))
    wait_delivered(run)


def check_memberships(engine: Engine) -> int:
    """Every segment that time cannot change holds exactly the contacts its rule's SQL matches
    (``service.preview_rule``: would enter / would exit both 0).  Returns how many were checked."""
    from contact_segments import service
    from contact_segments.rules.analysis import depends_on_now
    from contact_segments.service import RuleInput, UnitOfWork

    checked = 0
    for segment in service.list_segments(UnitOfWork.for_engine(engine), WORKSPACE):
        if depends_on_now(segment.rule):
            continue  # no beat runs here, so these may lag the clock by design
        preview = service.preview_rule(
            UnitOfWork.for_engine(engine), WORKSPACE, RuleInput(rule=segment.rule), segment_id=segment.id, now=time.time()
        )
        if preview["would_enter"] or preview["would_exit"]:
            raise SystemExit(f"segment {segment.name!r}: {preview['would_enter']} contacts missing and "
                             f"{preview['would_exit']} too many after the run")  # fmt: skip
        checked += 1
    return checked


# --------------------------------------------------------------------------- main


def terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exclusive(db: str, *resources: str) -> Iterator[None]:
    """Hold PostgreSQL advisory locks on ``resources`` (a schema, a Redis database) for the run,
    so a second run started meanwhile stops instead of dropping this one's schema or taking its
    messages."""
    from contact_segments.storage import make_engine

    engine = make_engine(db, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            for resource in resources:
                key = f"contact-segments bench {resource}"
                if not connection.scalar(text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key}):
                    raise SystemExit(f"another benchmark run is using {resource}; wait for it, or give this one "
                                     "another --schema / --broker")  # fmt: skip
            connection.commit()
            yield
    finally:
        engine.dispose()  # closing the session releases the locks


@contextmanager
def cleanup(db: str, schema: str, broker: str, keep: bool) -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        clear_broker(broker)
        if not keep:
            reset_schema(db, schema, create=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get(DB_ENV) or DEFAULT_DB, help=f"database URL (${DB_ENV})")
    parser.add_argument("--broker", default=os.environ.get(BROKER_ENV) or DEFAULT_BROKER, help=f"Redis URL (${BROKER_ENV})")
    parser.add_argument("--schema", default="bench_pipeline", help="schema to (re)create and work in")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=20_000, help="changes per throughput repetition")
    parser.add_argument("--baseline-changes", type=int, default=600, help="changes per baseline repetition")
    parser.add_argument("--batch", type=int, default=500, help="snapshots per segments_contacts_saved call")
    parser.add_argument("--rate", type=float, default=200.0, help="changes per second in the latency phase")
    parser.add_argument("--threads", type=int, default=16, help="host request threads in the latency phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each latency repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per figure (the median is shown)")
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's pool size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards (to inspect it)")
    parser.add_argument("--run-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_worker:
        run_worker(args.concurrency)
        return
    if not args.schema.isidentifier():
        parser.error("--schema must be a plain identifier")
    signal.signal(signal.SIGTERM, terminate)  # so the cleanup below runs on a kill too

    try:
        check_services(args.db, args.broker)
    except Skip as reason:
        print(f"pipeline benchmark skipped: {reason}")
        return

    n = args.contacts
    changes = min(args.changes, n)
    baseline_changes = min(args.baseline_changes, n)
    latency_changes = min(int(args.rate * args.seconds), n)
    db = schema_url(args.db, args.schema)
    log = Path(tempfile.gettempdir()) / f"{args.schema}-worker.log"
    rng = random.Random(args.seed)

    from contact_segments.storage import make_engine

    with exclusive(args.db, f"schema {args.schema}", f"broker {args.broker}"), \
            cleanup(args.db, args.schema, args.broker, args.keep) as workers:  # fmt: skip
        clear_broker(args.broker)
        reset_schema(args.db, args.schema)
        engine = make_engine(db, pool_size=2)
        started = time.perf_counter()
        segment_count = setup(engine, n, time.time())
        print(f"{n:,} contacts, {segment_count} segments, memberships built in "
              f"{time.perf_counter() - started:.1f} s (schema {args.schema!r}, broker {args.broker})")  # fmt: skip

        env = {**os.environ, "SEGMENTS_DATABASE_URL": db, "SEGMENTS_BROKER_URL": args.broker}
        env.pop("SEGMENTS_HOST_PLUGINS", None)
        worker = WorkerProcess(env, log, args.concurrency)
        workers.append(worker)
        worker.start()
        host = Host(db, args.broker)
        run = Run(engine, host, worker, args.broker, CpuMeter(engine, args.schema, worker))
        try:
            everyone = [f"c{k:08d}" for k in range(1, n + 1)]
            pick = lambda k: sorted(rng.sample(everyone, k))  # noqa: E731

            # Warm-up (untimed): connections, compiled rules and imports in both pool processes.
            for baseline in (False, True):
                throughput_phase(run, pick(min(500, n)), args.batch, baseline=baseline, figure=Rates("warm-up"))

            pipeline = Rates("pipeline (coalesced)")
            plain = Rates("baseline (one task per change)")
            noop_rates: list[float] = []
            latency = Latencies()
            for rep in range(args.repeat):
                order = (False, True) if rep % 2 == 0 else (True, False)
                for baseline in order:
                    figure, count = (plain, baseline_changes) if baseline else (pipeline, changes)
                    throughput_phase(run, pick(count), args.batch, baseline=baseline, figure=figure)
                if (floor := celery_floor(run, max(baseline_changes, 1000))) is not None:
                    noop_rates.append(floor)
                latency_phase(run, pick(latency_changes), args.rate, args.threads, latency)
                print(f"repetition {rep + 1}: pipeline {pipeline.rates[-1]:,.0f}/s, baseline {plain.rates[-1]:,.0f}/s, "
                      f"latency p50 {latency.p50[-1] * 1000:.0f} ms p99 {latency.p99[-1] * 1000:.0f} ms", flush=True)  # fmt: skip
            checked = check_memberships(engine)
            print(f"memberships checked against each rule's SQL: {checked} segments right")
        finally:
            host.close()
            engine.dispose()

    report(args, n, segment_count, changes, baseline_changes, pipeline, plain, noop_rates, latency, run.nudged)
    if host.broker_errors:
        print(f"  WARNING: {host.broker_errors} host call(s) failed to enqueue (the broker went away; stores had "
              "committed): the repetitions concerned are disturbed")  # fmt: skip


def report(args: Any, n: int, segments: int, changes: int, baseline_changes: int,
           pipeline: Rates, plain: Rates, noop: list[float], latency: Latencies, nudged: int) -> None:  # fmt: skip
    med = statistics.median
    rate, base = med(pipeline.rates), med(plain.rates)
    p50, p99 = med(latency.p50), med(latency.p99)
    ratio = rate / base
    print(f"\nmedians of {args.repeat} repetitions; {n:,} contacts, {segments} segments, one worker "
          f"--concurrency {args.concurrency}, host batches of {args.batch}")  # fmt: skip
    print(f"{'figure':<48}{'measured':>12}{'target':>14}")
    rows = [
        (f"throughput, pipeline ({changes:,} changes)", f"{rate:,.0f}/s", ">= 5,000/s", rate >= 5000),
        (f"throughput, baseline ({baseline_changes:,} changes)", f"{base:,.0f}/s", "", None),
        ("pipeline / baseline", f"{ratio:,.1f}x", ">= 10x", ratio >= 10),
        ("(Celery alone: one no-op task per change)", f"{med(noop):,.0f}/s" if noop else "lost", "", None),
        (f"latency p50 at {args.rate:.0f}/s ({args.threads} host threads)", f"{p50 * 1000:,.0f} ms", "", None),
        (f"latency p99 at {args.rate:.0f}/s", f"{p99 * 1000:,.0f} ms", "<= 500 ms", p99 <= 0.5),
    ]
    for label, shown, target, ok in rows:
        verdict = "" if ok is None else (" ok" if ok else " MISSED")
        print(f"{label:<48}{shown:>12}{target:>14}{verdict}")

    parties = ("host", "worker", "postgres")
    print(f"\n{'CPU per change (us), stored to delivered':<44}" + "".join(f"{p:>9}" for p in parties)
          + f"{'total':>9}{'ceiling: all':>14}{'engine':>10}")  # fmt: skip
    totals = {}
    for figure in (pipeline, plain):
        cpu = [figure.cpu_median(party) for party in parties]
        totals[figure.label] = total = sum(cpu)
        engine = cpu[1] + cpu[2]
        print(f"{figure.label:<44}" + "".join(f"{v:>9,.0f}" for v in cpu)
              + f"{total:>9,.0f}{2e6 / total:>12,.0f}/s{2e6 / engine:>8,.0f}/s")  # fmt: skip
    print(f"{'baseline / pipeline':<44}{'':>27}{totals[plain.label] / totals[pipeline.label]:>9,.1f}x")
    print("  (ceiling: the rate 2 cores would give if they did nothing else: all three parties, or the engine's two\n"
          "   alone, the host's calls running elsewhere as they do in production)")  # fmt: skip

    def fmt(values: list[float], scale: float = 1.0, unit: str = "", digits: int = 0) -> str:
        return ", ".join(f"{v * scale:,.{digits}f}{unit}" for v in values)

    print(f"\n  pipeline samples: {fmt(pipeline.rates, unit='/s')}; the host's calls alone: "
          f"{fmt(pipeline.host_rates, unit='/s')}; events: {fmt(pipeline.events)}")  # fmt: skip
    print(f"  baseline samples: {fmt(plain.rates, unit='/s')}; the host's calls alone: "
          f"{fmt(plain.host_rates, unit='/s')}; events: {fmt(plain.events)}")  # fmt: skip
    print(f"  latency p50: {fmt(latency.p50, 1000, ' ms')}; p99: {fmt(latency.p99, 1000, ' ms')}; "
          f"max: {fmt(latency.maximum, 1000, ' ms')}; rate achieved: {fmt(latency.achieved, unit='/s')}")  # fmt: skip
    print(f"  the hook call itself (validate, store, enqueue; in the host's thread): "
          f"p50 {fmt(latency.hook_p50, 1000, ' ms', 1)}; p99 {fmt(latency.hook_p99, 1000, ' ms', 1)}")  # fmt: skip
    print(f"  to occurred_at (the evaluation's start) instead of the outbox insert: "
          f"p50 {fmt(latency.p50_occurred, 1000, ' ms')}; p99 {fmt(latency.p99_occurred, 1000, ' ms')}")  # fmt: skip
    print("  (an event's outbox time is its row's insertion, clock_timestamp(), in the transaction that"
          " then commits: add one commit, a few ms)")  # fmt: skip
    if med(latency.achieved) < 0.95 * args.rate:
        print(f"  WARNING: the host reached {med(latency.achieved):,.0f} saves/s, not {args.rate:,.0f}: the machine "
              "is too busy (or give it more --threads)")  # fmt: skip
    if nudged:
        print(f"  WARNING: {nudged} time(s) no progress for {NUDGE_AFTER:.0f} s: lost messages (a Redis restart?) were "
              "re-sent, as the beat would; the repetitions concerned include that wait")  # fmt: skip


if __name__ == "__main__":
    main()
