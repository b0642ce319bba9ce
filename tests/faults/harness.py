"""What the fault tests share: their configuration, the load, the recovery, and the three outcomes.

A fault test builds a workspace whose segments exist before any contact (so every first build
has no members and every membership change after it is an enter or exit event), runs a load
through the host's hooks (:class:`Load`) while it injects its fault, then stops the load and
recovers as the beat would (:func:`recover`), and checks (:func:`check_outcomes`):

(a) every segment's memberships equal ground truth at the final instant, recomputed
    independently with the SQL compiler (``rule_to_sql`` over ``contacts``) and with the Python
    predicate (``compile_predicate`` over ``load_contact_views``); every contact holds the
    newest snapshot the load sent;
(b) every contact's events per segment alternate entered / exited, starting with entered, and
    the last one matches its membership (none missing), with no event id twice in the outbox;
(c) the outbox drains: every event delivered to the host (the reference host, journalling
    each batch with one fsync: :class:`JournalHost`), the host got no event the outbox does
    not hold, and a contact's events in a segment first reached it in outbox order (a
    redelivery, same id, is at-least-once at work: counted, and allowed where a fault explains
    it).

Figures (kills survived, events checked, events lost, ...) go to stdout and, if
``SEGMENTS_RELIABILITY_REPORT`` names a file, into that JSON file (one key per test), from
which ``docs/RELIABILITY.md`` is refreshed.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
from sqlalchemy import func, select, text

from contact_segments import service
from contact_segments.plugin import hookimpl
from contact_segments.rules import compile_predicate, rule_to_sql
from contact_segments.service import RuleInput, UnitOfWork
from contact_segments.service.maintenance import REBUILD_GRACE_SECONDS, schedule_pending_work
from contact_segments.storage import (
    Contact,
    Membership,
    MembershipEvent,
    PendingChange,
    Segment,
    contact_view_columns,
)
from contact_segments.storage import queries as q
from contact_segments.tasks import CeleryDispatcher, create_celery_app
from tests.support.reference_host import HostRejected, ReferenceHost
from tests.support.workers import Pipeline, Worker, wait_for

REPORT_ENV = "SEGMENTS_RELIABILITY_REPORT"
APPLICATION_PREFIX = f"segments-fault-{os.getpid()}-"
"""The ``application_name`` of this test run's workers' database connections starts so (the
process id keeps another run's connections out of reach of our ``pg_terminate_backend``)."""
FAULT_BROKER_DBS = (11, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
"""The Redis databases a fault-test run may claim, first free first (the end-to-end tests use 15,
``bench/pipeline.py`` 13): see :func:`claim_broker_db`."""
CLAIM_KEY = "segments:fault-tests:broker-db:{}"
"""Where a run records its claim on a Redis database (in database 0)."""
DAY = 86_400.0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class FaultConfig:
    """How hard the fault tests push; the defaults keep ``tests/faults`` to a few minutes on two
    cores, ``tox -e soak`` raises them."""

    kills: int  #: SEGMENTS_FAULT_KILLS: worker SIGKILLs (half mid-rebuild, half mid-evaluation)
    contacts: int  #: SEGMENTS_FAULT_CONTACTS: contacts whose tags and country flip all the time
    ballast: int  #: SEGMENTS_FAULT_BALLAST: quieter contacts that make rebuilds and batches long
    rate: float  #: SEGMENTS_FAULT_RATE: contact changes per second sent through the hooks
    seconds: float  #: SEGMENTS_FAULT_SECONDS: steady load of the Redis and database tests
    redis_restarts: int  #: SEGMENTS_FAULT_REDIS_RESTARTS
    db_kills: int  #: SEGMENTS_FAULT_DB_KILLS: rounds of pg_terminate_backend
    seed: int  #: SEGMENTS_FAULT_SEED

    @property
    def examples(self) -> int | None:
        """SEGMENTS_FAULT_EXAMPLES: Hypothesis examples per property test (None: each test's own)."""
        value = os.environ.get("SEGMENTS_FAULT_EXAMPLES")
        return int(value) if value else None

    @classmethod
    def from_env(cls) -> FaultConfig:
        return cls(
            kills=_env_int("SEGMENTS_FAULT_KILLS", 20),
            contacts=_env_int("SEGMENTS_FAULT_CONTACTS", 200),
            ballast=_env_int("SEGMENTS_FAULT_BALLAST", 1500),
            rate=_env_float("SEGMENTS_FAULT_RATE", 40.0),
            seconds=_env_float("SEGMENTS_FAULT_SECONDS", 10.0),
            redis_restarts=_env_int("SEGMENTS_FAULT_REDIS_RESTARTS", 3),
            db_kills=_env_int("SEGMENTS_FAULT_DB_KILLS", 20),
            seed=_env_int("SEGMENTS_FAULT_SEED", 20261129),
        )


# --------------------------------------------------------------------------- the workspace

PROMOTION = {"in": ["promotion", {"var": "tags"}]}
VIP = {"in": ["vip", {"var": "tags"}]}
MALAYSIA = {"==": [{"var": "country"}, "MY"]}
SINGAPORE = {"==": [{"var": "country"}, "SG"]}
B2B = {"in": ["b2b", {"var": "tags"}]}

EDITABLE: dict[str, list[Any]] = {
    # Each edit moves a segment to its next rule: a rebuild with enter and exit events.
    "Promotion": [PROMOTION, {"and": [PROMOTION, MALAYSIA]}, {"or": [PROMOTION, VIP]}],
    "Malaysia": [MALAYSIA, {"or": [MALAYSIA, SINGAPORE]}],
    "VIP outside Malaysia": [{"and": [VIP, {"!": [MALAYSIA]}]}, VIP],
    # Reads the ballast too: its rebuilds scan every contact (and move the 1 in 20 outside Malaysia).
    "B2B in Malaysia": [{"and": [B2B, MALAYSIA]}, {"and": [B2B, {"!": [SINGAPORE]}]}],
}


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


@dataclass
class Load:
    """The host's side: contact changes and segment edits through the hooks and the service, in
    a thread of its own, at ``rate`` changes per second.

    ``versions`` records the newest version sent of each contact.  A hook call that fails on
    the broker (Redis down) is sent again until it goes through: the snapshot was stored in the
    committed transaction before the message failed, so sending it again is a no-op, as it
    would be for a host that retries.
    """

    pipeline: Pipeline
    config: FaultConfig
    workspace_id: str = field(default_factory=lambda: f"ws-faults-{uuid.uuid4().hex[:8]}")
    versions: dict[str, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[BaseException] = field(default_factory=list)
    segment_ids: dict[str, int] = field(default_factory=dict)
    setup_seconds: float = 0.0
    _variant: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _no_edits: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dispatcher: CeleryDispatcher | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.started = time.time()
        self.hot = [f"hot-{n:04d}" for n in range(self.config.contacts)]
        self.ballast = [f"ballast-{n:05d}" for n in range(self.config.ballast)]

    def uow(self) -> UnitOfWork:
        """A unit of work whose follow-up work goes to the workers (one Celery app, reused)."""
        if self._dispatcher is None:
            self._dispatcher = CeleryDispatcher(create_celery_app(self.pipeline.settings))
        return UnitOfWork(self.pipeline.session_factory, self._dispatcher)

    # -- setting up --------------------------------------------------------------------------

    def setup(self) -> None:
        """The workspace, its five defaults and our segments, all built while it has no contact;
        then the contacts, evaluated; then nothing pending or undelivered."""
        began = time.monotonic()
        service.create_workspace(self.uow(), self.workspace_id, name="Faults", timezone="UTC", now=time.time())
        for name, rules in EDITABLE.items():
            view = service.create_segment(self.uow(), self.workspace_id, name=name, rule=RuleInput(rule=rules[0]), now=time.time())
            self.segment_ids[name] = view.id
            self._variant[name] = 0
        wait_for(lambda: all_built(self.pipeline, self.workspace_id), timeout=60, what="the first builds")
        snapshots = [self._hot_snapshot(contact_id) for contact_id in self.hot]
        snapshots += [self._ballast_snapshot(contact_id) for contact_id in self.ballast]
        for start in range(0, len(snapshots), 500):
            self._save(snapshots[start : start + 500])
        wait_for(lambda: drained(self.pipeline, self.workspace_id), timeout=120, what="the contacts' evaluation")
        self.setup_seconds = round(time.monotonic() - began, 1)

    # -- the changes -------------------------------------------------------------------------

    def _next_version(self, contact_id: str) -> int:
        version = self.versions.get(contact_id, 0) + 1
        self.versions[contact_id] = version
        return version

    def _hot_snapshot(self, contact_id: str) -> dict[str, Any]:
        rng = self.rng
        return {
            "id": contact_id,
            "version": self._next_version(contact_id),
            "tags": rng.sample(["promotion", "vip", "b2b", "lead"], rng.randint(0, 3)),
            "country": rng.choice(["MY", "MY", "SG", "ID", None]),
            "language": rng.choice(["en", "ms", None]),
            # Far from the defaults' 7- and 30-day thresholds: no flip happens while the test runs.
            "created_at": iso(self.started - rng.choice([1, 20]) * DAY),
            "last_incoming_message_at": rng.choice([None, iso(self.started - 2 * DAY), iso(self.started - 60 * DAY)]),
        }

    def _ballast_snapshot(self, contact_id: str) -> dict[str, Any]:
        """Quiet contacts: their tags change ("lead" comes and goes), which every tag segment
        must evaluate, but only their country (fixed per contact: 1 in 20 outside Malaysia)
        decides a membership, so their batches are long and send few events."""
        return {
            "id": contact_id,
            "version": self._next_version(contact_id),
            "tags": ["b2b"] + (["lead"] if self.rng.random() < 0.5 else []),
            "country": "ID" if int(contact_id.rpartition("-")[2]) % 20 == 0 else "MY",
            "created_at": iso(self.started - 20 * DAY),
        }

    def _snapshots(self, make: Callable[[str], dict[str, Any]], contact_ids: list[str]) -> list[dict[str, Any]]:
        with self._lock:  # the load thread and a test's own calls share the versions and the dice
            return [make(contact_id) for contact_id in contact_ids]

    def _save(self, snapshots: list[dict[str, Any]]) -> None:
        self._retrying(
            lambda: self.pipeline.hooks.hook.segments_contacts_saved(workspace_id=self.workspace_id, snapshots=snapshots)
        )
        self._count("changes", len(snapshots))

    def hot_change(self) -> None:
        with self._lock:
            chosen = self.rng.choice(self.hot)
        self._save(self._snapshots(self._hot_snapshot, [chosen]))

    def ballast_change(self, count: int = 500) -> list[str]:
        """A batch of quiet contacts changed: a long evaluation with few membership changes.
        Returns their ids."""
        with self._lock:
            chosen = self.rng.sample(self.ballast, min(count, len(self.ballast)))
        self._save(self._snapshots(self._ballast_snapshot, chosen))
        self._count("ballast batches")
        return chosen

    def edit(self, name: str | None = None) -> int:
        """Move a segment to its next rule (a rebuild follows); return its id."""
        with self._lock:
            name = name or self.rng.choice(list(EDITABLE))
            self._variant[name] = (self._variant[name] + 1) % len(EDITABLE[name])
            rule = EDITABLE[name][self._variant[name]]
        segment_id = self.segment_ids[name]
        self._retrying(
            lambda: service.edit_segment(self.uow(), self.workspace_id, segment_id, rule=RuleInput(rule=rule), now=time.time())
        )
        self._count("edits")
        return segment_id

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def _retrying(self, call: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except (redis.RedisError, kombu.exceptions.OperationalError, OSError) as error:
                self._count("host calls retried")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the broker stayed unreachable for {timeout} s") from error
                time.sleep(0.2)

    # -- running -----------------------------------------------------------------------------

    def start(self, *, edits_per_second: float = 0.5, ballast_every: float = 3.0) -> None:
        def run() -> None:
            interval = 1.0 / self.config.rate
            next_edit = next_ballast = time.monotonic()
            try:
                while not self._stop.is_set():
                    began = time.monotonic()
                    self.hot_change()
                    if edits_per_second and began >= next_edit and not self._no_edits.is_set():
                        self.edit()
                        next_edit = began + 1.0 / edits_per_second
                    if ballast_every and began >= next_ballast:
                        self.ballast_change()
                        next_ballast = began + ballast_every
                    self._stop.wait(max(0.0, interval - (time.monotonic() - began)))
            except BaseException as error:
                self.errors.append(error)

        self._thread = threading.Thread(target=run, name="fault-load", daemon=True)
        self._thread.start()

    def stop_edits(self) -> None:
        """From now on, contact changes only: a rebuild left unfinished stays so."""
        self._no_edits.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        assert not self.errors, f"the load failed: {self.errors[0]!r}"


# --------------------------------------------------------------------------- the broker


def claim_broker_db(redis_url: str) -> int:
    """A Redis database of this run's own: the first of :data:`FAULT_BROKER_DBS` that no other
    live run has claimed.  Two runs on one machine (a developer's and a CI clone's) would
    otherwise flush each other's queues and run each other's tasks."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    try:
        for number in FAULT_BROKER_DBS:
            key = CLAIM_KEY.format(number)
            if client.set(key, os.getpid(), nx=True, ex=6 * 3600) or client.get(key) == str(os.getpid()).encode():
                return number
    finally:
        client.close()
    raise RuntimeError(f"every Redis database of {FAULT_BROKER_DBS} is claimed by another fault-test run")


def reclaim_broker_db(redis_url: str, number: int) -> None:
    """Record the claim again (a Redis restart forgets it: the server keeps nothing)."""
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    try:
        client.set(CLAIM_KEY.format(number), os.getpid(), ex=6 * 3600)
    finally:
        client.close()


def release_broker_db(redis_url: str, number: int) -> None:
    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/0")
    try:
        if client.get(CLAIM_KEY.format(number)) == str(os.getpid()).encode():
            client.delete(CLAIM_KEY.format(number))
    except redis.RedisError:
        pass  # gone with a restart: nothing to release
    finally:
        client.close()


# --------------------------------------------------------------------------- workers


class JournalHost(ReferenceHost):
    """The reference host, writing each delivered batch to its journal with one ``fsync`` rather
    than one per event (an fsync costs ~4 ms here: tens of thousands of events would otherwise
    take minutes to deliver).  What it records, and when, is the same: a batch is in the journal,
    durably, before the hook returns."""

    @hookimpl
    def segments_membership_changed(self, events: list[dict[str, Any]]) -> None:
        with self._locked():
            if self._fail_this_delivery():
                self._append({"type": "delivery_failed", "event_ids": [e["event_id"] for e in events]})
                raise HostRejected(f"reference host told to fail ({len(events)} events refused)")
            with self.journal.open("a", encoding="utf-8") as journal:
                journal.write("".join(json.dumps({"type": "event", **event}) + "\n" for event in events))
                journal.flush()
                os.fsync(journal.fileno())


def start_workers(pipeline: Pipeline, count: int, *, concurrency: int = 2, first: int = 1) -> list[Worker]:
    """``count`` workers started side by side, their connections named ``segments-fault-w<n>``."""
    workers = [
        pipeline.start_worker(concurrency, application_name=f"{APPLICATION_PREFIX}w{first + n}", wait=False)
        for n in range(count)
    ]
    for worker in workers:
        worker.wait_ready()
    return workers


# --------------------------------------------------------------------------- database probes


def all_built(pipeline: Pipeline, workspace_id: str) -> bool:
    with pipeline.session_factory() as session:
        behind = select(func.count()).where(
            Segment.workspace_id == workspace_id, Segment.built_version != Segment.rule_version
        )
        return session.scalar(behind) == 0


def backlog(pipeline: Pipeline, workspace_id: str) -> dict[str, int]:
    """What is left to do: pending contacts, undelivered events, segments not built for their rule."""
    with pipeline.session_factory() as session:
        pending = session.scalar(
            select(func.count()).where(PendingChange.workspace_id == workspace_id)
        )
        undelivered = session.scalar(
            select(func.count()).where(
                MembershipEvent.workspace_id == workspace_id, MembershipEvent.delivered_at.is_(None)
            )
        )
        unbuilt = session.scalar(
            select(func.count()).where(Segment.workspace_id == workspace_id, Segment.built_version != Segment.rule_version)
        )
    return {"pending contacts": pending or 0, "undelivered events": undelivered or 0, "unbuilt segments": unbuilt or 0}


def drained(pipeline: Pipeline, workspace_id: str) -> bool:
    """Nothing pending, nothing undelivered, every segment built for its rule."""
    return not any(backlog(pipeline, workspace_id).values())


@dataclass(frozen=True)
class Backend:
    pid: int
    application_name: str
    state: str
    query: str
    transaction_age: float


def worker_backends(pipeline: Pipeline) -> list[Backend]:
    """The fault-test workers' PostgreSQL backends that are inside a transaction."""
    statement = text(
        "SELECT pid, application_name, state, query, extract(epoch FROM clock_timestamp() - xact_start) "
        "FROM pg_stat_activity WHERE application_name LIKE :prefix AND xact_start IS NOT NULL "
        "AND state IN ('active', 'idle in transaction') AND pid <> pg_backend_pid()"
    )
    with pipeline.session_factory() as session:
        rows = session.execute(statement, {"prefix": APPLICATION_PREFIX + "%"}).all()
    return [Backend(pid, name, state, query, float(age or 0)) for pid, name, state, query, age in rows]


def classify(query: str) -> str | None:
    """What a worker's transaction is doing, from its current (or last) statement: "rebuild",
    "evaluation", or None when the statement does not tell."""
    sql = " ".join(query.split()).lower()
    if "with diff as" in sql or "coalesce(matches.id" in sql or "set built_version" in sql:
        return "rebuild"
    if "from segments" in sql and "for update" in sql and "for share" not in sql:
        return "rebuild"  # a rebuild batch locking its segment
    if "with taken as materialized" in sql:  # pending_changes.take
        return "evaluation"
    return None


# --------------------------------------------------------------------------- recovery


def recover(pipeline: Pipeline, workspace_id: str, *, timeout: float = 300) -> dict[str, Any]:
    """Send what the database says is due (:func:`schedule_pending_work`), as the beat would,
    until the workspace is drained twice in a row with the broker's queue empty.

    The beat re-sends an unfinished rebuild once it has been due for ``REBUILD_GRACE_SECONDS``;
    each call here passes an instant that far ahead, as a beat running that much later would.
    """
    uow = UnitOfWork(pipeline.session_factory, CeleryDispatcher(create_celery_app(pipeline.settings)))
    began = time.monotonic()
    rounds = sent = 0
    calm = 0
    while True:
        sent += schedule_pending_work(uow, now=time.time() + REBUILD_GRACE_SECONDS + 1)
        rounds += 1
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not quiet(pipeline, workspace_id):
            time.sleep(0.1)
        calm = calm + 1 if quiet(pipeline, workspace_id) else 0
        if calm >= 2:
            return {"recovery seconds": round(time.monotonic() - began, 1), "beat rounds": rounds, "commands re-sent": sent}
        if time.monotonic() - began > timeout:
            left = backlog(pipeline, workspace_id) | {"queued messages": pipeline.broker.llen("celery")}
            raise AssertionError(f"not drained {timeout} s after the load stopped ({rounds} beat rounds): {left}")


def quiet(pipeline: Pipeline, workspace_id: str) -> bool:
    return pipeline.broker.llen("celery") == 0 and drained(pipeline, workspace_id)


# --------------------------------------------------------------------------- the outcomes


def check_outcomes(pipeline: Pipeline, load: Load, *, redeliveries_allowed: bool) -> dict[str, Any]:
    """Assert the three outcomes; return their figures."""
    workspace_id = load.workspace_id
    figures: dict[str, Any] = {}
    at = time.time()
    with pipeline.session_factory() as session:
        segments = q.list_segments(session, workspace_id)
        stored_versions = dict(
            session.execute(select(Contact.id, Contact.version).where(Contact.workspace_id == workspace_id)).tuples().all()
        )
        views = q.load_contact_views(session, workspace_id, stored_versions)
        members: dict[int, set[str]] = defaultdict(set)
        for segment_id, contact_id in session.execute(
            select(Membership.segment_id, Membership.contact_id).where(Membership.workspace_id == workspace_id)
        ).tuples():
            members[segment_id].add(contact_id)
        by_sql = {}
        for segment in segments:
            condition = rule_to_sql(segment.rule, contact_view_columns(), now=at)
            by_sql[segment.id] = set(
                session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, condition))
            )
        outbox = session.execute(
            select(
                MembershipEvent.seq,
                MembershipEvent.event_id,
                MembershipEvent.segment_id,
                MembershipEvent.contact_id,
                MembershipEvent.kind,
                MembershipEvent.member_count,
                MembershipEvent.delivered_at,
            )
            .where(MembershipEvent.workspace_id == workspace_id)
            .order_by(MembershipEvent.seq)
        ).all()

    # (a) memberships equal ground truth, by the SQL compiler and by the Python predicate.
    assert stored_versions == load.versions, "a contact does not hold the newest snapshot sent"
    for segment in segments:
        predicate = compile_predicate(segment.rule)
        by_python = {cid for cid, view in views.items() if predicate({**view, "now": at})}
        assert by_sql[segment.id] == by_python, f"the compilers disagree on segment {segment.name!r}"
        stored = members.get(segment.id, set())
        assert stored == by_python, (
            f"segment {segment.name!r}: {len(stored - by_python)} members too many "
            f"(e.g. {sorted(stored - by_python)[:5]}), {len(by_python - stored)} missing (e.g. {sorted(by_python - stored)[:5]})"
        )
    figures["segments checked"] = len(segments)
    figures["memberships checked"] = sum(len(m) for m in members.values())

    # (b) per contact and segment, events alternate entered/exited from entered; the last matches.
    ids = [row.event_id for row in outbox]
    assert len(ids) == len(set(ids)), "an event id appears twice in the outbox"
    builds = [row for row in outbox if row.kind == "built"]
    assert all(row.member_count == 0 for row in builds), "a first build had members (contacts came first)"
    streams: dict[tuple[int, str], list[str]] = defaultdict(list)
    for row in outbox:
        if row.kind != "built":
            streams[(row.segment_id, row.contact_id)].append(row.kind)
    lost = 0
    for (segment_id, contact_id), kinds in streams.items():
        expected = ["entered", "exited"] * (len(kinds) // 2) + ["entered"] * (len(kinds) % 2)
        assert kinds == expected, f"segment {segment_id}, contact {contact_id}: events {kinds}"
        if (kinds[-1] == "entered") != (contact_id in members.get(segment_id, set())):
            lost += 1
    for segment_id, contacts in members.items():  # a member with no event at all entered unannounced
        lost += sum((segment_id, contact_id) not in streams for contact_id in contacts)
    figures["events checked"] = sum(len(kinds) for kinds in streams.values())

    # (c) the outbox drained into the host: every event, once per delivery, in order per contact.
    undelivered = sum(row.delivered_at is None for row in outbox)
    journal = [event for event in pipeline.host.events() if event["workspace_id"] == workspace_id]
    by_id = {row.event_id: row for row in outbox}
    received = Counter(event["event_id"] for event in journal)
    foreign = set(received) - set(by_id)
    assert not foreign, f"the host got {len(foreign)} events the outbox does not hold"
    for event in journal:
        row = by_id[event["event_id"]]
        assert (event["segment_id"], event["contact_id"], event["kind"]) == (row.segment_id, row.contact_id, row.kind)
    missing = set(by_id) - set(received)
    lost += len(missing) + undelivered
    redelivered = sum(received.values()) - len(received)
    first_seen: dict[tuple[int, str | None], int] = {}
    delivered_once: set[str] = set()
    for event in journal:  # first deliveries of a contact's events in a segment come in outbox order
        if event["event_id"] in delivered_once:
            continue
        delivered_once.add(event["event_id"])
        key = (event["segment_id"], event["contact_id"])
        assert event["seq"] > first_seen.get(key, 0), f"segment {key[0]}, contact {key[1]}: events out of order"
        first_seen[key] = event["seq"]
    figures["events lost"] = lost
    figures["events delivered"] = len(received)
    figures["events redelivered (same id)"] = redelivered
    assert lost == 0, f"{lost} events lost ({len(missing)} never delivered, {undelivered} undelivered)"
    if not redeliveries_allowed:
        assert redelivered == 0, f"{redelivered} events were delivered twice with no fault that explains it"
    figures["contact changes sent"] = load.counts["changes"]
    figures["segment edits"] = load.counts["edits"]
    figures["host calls retried"] = load.counts["host calls retried"]
    figures["setup seconds"] = load.setup_seconds
    return figures


# --------------------------------------------------------------------------- figures


def report(test: str, figures: dict[str, Any]) -> None:
    """Print the figures; add them to the JSON file ``$SEGMENTS_RELIABILITY_REPORT`` if set (under
    the key ``test``, next to what other tests wrote there; replaced whole, never half-written)."""
    print(f"\nreliability figures of {test}:")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    try:
        document = json.loads(path.read_text("utf-8")) if path.exists() else {}
    except ValueError:
        document = {}
    document = document if isinstance(document, dict) else {}
    document[test] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", "utf-8")
    partial.replace(path)


__all__ = [
    "APPLICATION_PREFIX",
    "FAULT_BROKER_DBS",
    "Backend",
    "FaultConfig",
    "JournalHost",
    "Load",
    "backlog",
    "claim_broker_db",
    "reclaim_broker_db",
    "release_broker_db",
    "check_outcomes",
    "classify",
    "drained",
    "recover",
    "report",
    "start_workers",
    "worker_backends",
]
