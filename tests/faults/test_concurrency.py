"""Edits and ticks racing contact changes, on PostgreSQL: several processes, each with its own
engine and inline dispatch (the follow-up work of a change runs in the process that made it),
all on one workspace at once:

* two *changers* store snapshots of the same contacts (tags and country flipping; the versions
  come from one shared counter, so their stores interleave in every order) and record incoming
  messages, which move ``last_incoming_message_at``;
* an *editor* moves segments from rule to rule (each edit a rebuild, racing the evaluations);
* a *ticker* applies time-based flips every few milliseconds, on a clock that runs an hour per
  second, so contacts cross the defaults' 7- and 30-day thresholds while all this goes on.

When they stop, one last tick at the final instant; then memberships must equal ground truth at
that instant (by the SQL compiler and by the Python predicate) and every contact's events per
segment must alternate, starting with "entered".

The other concurrency guarantees (20 processes creating segments at 490 existing end with exactly
500; 20 creating one name end with one segment; a delete racing an evaluation does not
deadlock) are proven in ``tests/integration/test_segments_service.py``
(``test_20_concurrent_creators_cannot_pass_500``,
``test_20_concurrent_creators_of_one_name_leave_one``,
``test_deleting_a_segment_while_a_contact_is_evaluated_does_not_deadlock``).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from contact_segments import service
from contact_segments.rules import compile_predicate, rule_to_sql
from contact_segments.service import InlineDispatcher, RuleInput, UnitOfWork
from contact_segments.service import contacts as contacts_module
from contact_segments.storage import (
    Contact,
    Membership,
    MembershipEvent,
    contact_view_columns,
    make_engine,
    make_session_factory,
)
from contact_segments.storage import queries as q
from tests.support.locks import waiting_on_locks

from .conftest import POSTGRESQL_ONLY
from .harness import report

T0 = 1_750_000_000.0
DAY = 86_400.0
SPEED = 3_600.0  #: simulated seconds per real second
WORKSPACE = "ws-race"
CONTACTS = 60
SECONDS = float(os.environ.get("SEGMENTS_FAULT_RACE_SECONDS") or 8)

pytestmark = pytest.mark.timeout(300 + 5 * SECONDS)

PROMOTION = {"in": ["promotion", {"var": "tags"}]}
MALAYSIA = {"==": [{"var": "country"}, "MY"]}
RECENT = {"and": [{"!!": [{"var": "created_at"}]}, {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]}]}
QUIET = {
    "and": [
        {"!!": [{"var": "last_incoming_message_at"}]},
        {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
    ]
}
EDITABLE = {
    "Promotion": [PROMOTION, {"and": [PROMOTION, MALAYSIA]}, {"or": [PROMOTION, MALAYSIA]}],
    "Recent in Malaysia": [{"and": [RECENT, MALAYSIA]}, RECENT, {"and": [RECENT, PROMOTION]}],
    "Quiet or VIP": [{"or": [QUIET, {"in": ["vip", {"var": "tags"}]}]}, QUIET, {"and": [QUIET, {"!": [MALAYSIA]}]}],
}


class Clock:
    """Simulated time: ``T0`` when the race starts, then an hour per real second."""

    def __init__(self, start: float) -> None:
        self.start = start

    def __call__(self) -> float:
        return T0 + max(0.0, time.time() - self.start) * SPEED


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def born(contact: int) -> float:
    """Each contact turns 7 days old at its own instant of the race (or never during it)."""
    return T0 - 7 * DAY + (contact % 12) * SECONDS * SPEED / 10


def last_heard(contact: int) -> float:
    """And crosses 30 days of silence at its own instant, unless a message comes first."""
    return T0 - 30 * DAY + (contact % 9) * SECONDS * SPEED / 8


def _uow(db_url: str, clock: Clock) -> tuple[Engine, UnitOfWork]:
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    return engine, UnitOfWork(factory, InlineDispatcher(factory, clock=clock))


def changer(db_url: str, start: float, seed: int, counter: Any, results: Any) -> None:
    engine, uow = _uow(db_url, Clock(start))
    clock, rng, sent, done = uow.dispatcher.clock, random.Random(seed), {}, 0  # type: ignore[union-attr]
    try:
        while time.time() < start + SECONDS:
            number = rng.randrange(CONTACTS)
            contact_id = f"c{number:03d}"
            if contact_id in sent and rng.random() < 0.15:
                service.record_message(uow, WORKSPACE, contact_id, direction="incoming", at=clock())
                continue
            with counter.get_lock():
                counter.value += 1
                version = counter.value
            snapshot = {
                "id": contact_id,
                "version": version,
                "tags": rng.sample(["promotion", "vip", "b2b"], rng.randint(0, 2)),
                "country": rng.choice(["MY", "SG", None]),
                "created_at": iso(born(number)),
                "last_incoming_message_at": iso(last_heard(number)),
            }
            service.upsert_contacts(uow, WORKSPACE, [snapshot], now=clock())
            sent[contact_id] = max(version, sent.get(contact_id, 0))
            done += 1
        results.put(("changer", sent, done))
    except BaseException as error:
        results.put(("error", f"{type(error).__name__}: {error}"[:3000], 0))
    finally:
        engine.dispose()


def editor(db_url: str, start: float, segment_ids: dict[str, int], results: Any) -> None:
    engine, uow = _uow(db_url, Clock(start))
    clock, rng, done = uow.dispatcher.clock, random.Random(7), 0  # type: ignore[union-attr]
    variant = dict.fromkeys(EDITABLE, 0)
    try:
        while time.time() < start + SECONDS:
            name = rng.choice(list(EDITABLE))
            variant[name] = (variant[name] + 1) % len(EDITABLE[name])
            rule = EDITABLE[name][variant[name]]
            service.edit_segment(uow, WORKSPACE, segment_ids[name], rule=RuleInput(rule=rule), now=clock())
            done += 1
            time.sleep(0.05)
        results.put(("editor", {}, done))
    except BaseException as error:
        results.put(("error", f"{type(error).__name__}: {error}"[:3000], 0))
    finally:
        engine.dispose()


def ticker(db_url: str, start: float, results: Any) -> None:
    engine, uow = _uow(db_url, Clock(start))
    clock, done, flips = uow.dispatcher.clock, 0, 0  # type: ignore[union-attr]
    try:
        while time.time() < start + SECONDS:
            result = service.tick(uow, WORKSPACE, now=clock())
            done += 1
            flips += result.entered + result.exited
            time.sleep(0.02)
        results.put(("ticker", {"flips": flips}, done))
    except BaseException as error:
        results.put(("error", f"{type(error).__name__}: {error}"[:3000], 0))
    finally:
        engine.dispose()


@POSTGRESQL_ONLY
def test_edits_and_ticks_racing_contact_changes_end_at_ground_truth(engine: Engine, db_url: str) -> None:
    factory = make_session_factory(engine)
    setup = UnitOfWork(factory, InlineDispatcher(factory, clock=lambda: T0))
    service.create_workspace(setup, WORKSPACE, now=T0)  # the five defaults, two of them time-based
    segment_ids = {
        name: service.create_segment(setup, WORKSPACE, name=name, rule=RuleInput(rule=rules[0]), now=T0).id
        for name, rules in EDITABLE.items()
    }
    engine.dispose()  # no pooled connection crosses the fork

    context = multiprocessing.get_context("fork")
    counter, results = context.Value("q", 0), context.Queue()
    start = time.time() + 0.5
    processes = [
        context.Process(target=changer, args=(db_url, start, 1, counter, results)),
        context.Process(target=changer, args=(db_url, start, 2, counter, results)),
        context.Process(target=editor, args=(db_url, start, segment_ids, results)),
        context.Process(target=ticker, args=(db_url, start, results)),
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=SECONDS + 120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [detail for kind, detail, _ in outcomes if kind == "error"]
    assert errors == [], errors

    newest: dict[str, int] = {}
    for kind, detail, _ in outcomes:
        if kind == "changer":
            for contact_id, version in detail.items():
                newest[contact_id] = max(version, newest.get(contact_id, 0))
    final = Clock(start)()
    last = service.tick(UnitOfWork(factory), WORKSPACE, now=final)  # the final instant's flips

    with factory() as session:
        stored = dict(session.execute(select(Contact.id, Contact.version)).tuples().all())
        assert stored == newest, "a contact does not hold its newest snapshot"
        views = q.load_contact_views(session, WORKSPACE, stored)
        members: dict[int, set[str]] = defaultdict(set)
        for segment_id, contact_id in session.execute(select(Membership.segment_id, Membership.contact_id)).tuples():
            members[segment_id].add(contact_id)
        checked = 0
        for segment in q.list_segments(session, WORKSPACE):
            condition = rule_to_sql(segment.rule, contact_view_columns(), now=final)
            by_sql = set(session.scalars(select(Contact.id).where(Contact.workspace_id == WORKSPACE, condition)))
            predicate = compile_predicate(segment.rule)
            by_python = {cid for cid, view in views.items() if predicate({**view, "now": final})}
            assert by_sql == by_python, f"the compilers disagree on {segment.name!r}"
            assert members[segment.id] == by_python, (
                f"{segment.name!r} (rule v{segment.rule_version}) at the final instant: "
                f"members too many {sorted(members[segment.id] - by_python)}, missing {sorted(by_python - members[segment.id])}"
            )
            checked += 1
        streams: dict[tuple[int, str], list[str]] = defaultdict(list)
        rows = session.execute(
            select(MembershipEvent.segment_id, MembershipEvent.contact_id, MembershipEvent.kind)
            .where(MembershipEvent.kind != "built")
            .order_by(MembershipEvent.seq)
        ).tuples()
        for segment_id, contact_id, kind in rows:
            streams[(segment_id, contact_id)].append(kind)
    for (segment_id, contact_id), kinds in streams.items():
        assert kinds == ["entered", "exited"] * (len(kinds) // 2) + ["entered"] * (len(kinds) % 2), (segment_id, contact_id)
        assert (kinds[-1] == "entered") == (contact_id in members[segment_id]), (segment_id, contact_id)
    assert all((s, c) in streams for s, contacts in members.items() for c in contacts), "a member entered unannounced"

    counts = {kind: done for kind, _, done in outcomes if kind != "changer"}
    ticks = next(detail for kind, detail, _ in outcomes if kind == "ticker")
    report(
        "concurrency",
        {
            "processes": len(processes),
            "contact changes and messages": sum(done for kind, _, done in outcomes if kind == "changer"),
            "segment edits": counts["editor"],
            "ticks": counts["ticker"] + 1,
            "time-based flips applied by ticks": ticks["flips"] + last.entered + last.exited,
            "segments checked": checked,
            "events checked": sum(len(kinds) for kinds in streams.values()),
        },
    )


@POSTGRESQL_ONLY
def test_an_edit_waits_for_an_evaluation_still_on_the_old_rule(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race above, made deterministic: an evaluation has read the segment's rule and is
    about to write by it when the rule is edited.  The edit must wait for it; otherwise the
    rebuild for the new rule looks at the contact first (a member, matching: nothing to do),
    then the evaluation removes it by the old rule, and a contact that matches the new rule
    stays out for good (until a sweep)."""
    engine = make_engine(db_url, connect_args={"application_name": "segments-edit-race"})
    factory = make_session_factory(engine)
    uow = UnitOfWork(factory, InlineDispatcher(factory, clock=lambda: T0))
    service.create_workspace(uow, WORKSPACE, now=T0)
    segment = service.create_segment(uow, WORKSPACE, name="Promotion", rule=RuleInput(rule=PROMOTION), now=T0)
    service.upsert_contacts(uow, WORKSPACE, [{"id": "c1", "version": 1, "tags": ["promotion"], "country": "MY"}], now=T0)
    bare = UnitOfWork(factory)  # no follow-up work: the test runs the evaluation itself
    service.upsert_contacts(bare, WORKSPACE, [{"id": "c1", "version": 2, "tags": [], "country": "MY"}], now=T0)

    read, resume = threading.Event(), threading.Event()
    real = contacts_module.workspace_segments

    def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        segments = real(*args, **kwargs)
        read.set()
        resume.wait(timeout=30)
        return segments

    monkeypatch.setattr(contacts_module, "workspace_segments", read_then_wait)
    errors: list[BaseException] = []

    def run(work: Any) -> threading.Thread:
        def guarded() -> None:
            try:
                work()
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=guarded)
        thread.start()
        return thread

    evaluation = run(lambda: service.evaluate_pending(UnitOfWork(factory), WORKSPACE, now=T0))
    try:
        assert read.wait(timeout=30)
        edit = run(lambda: service.edit_segment(uow, WORKSPACE, segment.id, rule=RuleInput(rule=MALAYSIA), now=T0))
        waiting_on_locks(engine, "segments-edit-race", timeout=5)  # the edit queues behind the evaluation (or, unfixed, is done)
        resume.set()
        evaluation.join(timeout=30)
        edit.join(timeout=30)
        assert errors == []
        with factory() as session:
            members = set(session.scalars(select(Membership.contact_id).where(Membership.segment_id == segment.id)))
            kinds = list(
                session.scalars(
                    select(MembershipEvent.kind)
                    .where(MembershipEvent.segment_id == segment.id, MembershipEvent.kind != "built")
                    .order_by(MembershipEvent.seq)
                )
            )
        assert members == {"c1"}, "c1 matches the new rule (country MY) but is not a member"
        assert kinds == ["entered", "exited", "entered"]
    finally:
        resume.set()
        engine.dispose()
