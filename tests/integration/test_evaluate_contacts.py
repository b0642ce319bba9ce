"""Evaluating changed contacts gives what the Python predicate gives, pair by pair.

:func:`~contact_segments.service.membership.evaluate_contacts` re-evaluates a batch of changed
contacts with the compiled predicates and writes the difference (on PostgreSQL in one
statement that derives the events from the rows it changed).  The property: for generated
rules, contact sets, changed fields and arbitrary (often wrong) starting memberships, every
(segment, contact) pair the change concerns ends as the predicate says of the stored view,
every other pair is left as it was, and there is exactly one event per pair that moved, in
contact id order, then segment id; whether or not the memberships are read before the write.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, delete, event, insert, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.rules import compile_predicate
from contact_segments.service.membership import READ_FIRST_ABOVE, compiled_segment, evaluate_contacts
from contact_segments.service.snapshots import load_snapshot
from contact_segments.storage import (
    TRACKED_FIELDS,
    Contact,
    EventCause,
    Membership,
    MembershipEvent,
    Segment,
    Workspace,
    ensure_workspace,
    load_contact_views,
    make_session_factory,
    upsert_contacts,
)
from tests.support.segment_strategies import NOWS, contact_sets, seeded_rules

EXAMPLES = int(os.environ.get("SEGMENTS_SQL_EXAMPLES", 60))
CONTACTS: Table = Contact.__table__  # type: ignore[assignment]
MEMBERSHIPS: Table = Membership.__table__  # type: ignore[assignment]
EVENTS: Table = MembershipEvent.__table__  # type: ignore[assignment]
_workspaces = itertools.count()


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    now = draw(st.sampled_from(NOWS))
    contacts = draw(contact_sets(now, max_size=6).filter(bool))
    rules = draw(st.lists(seeded_rules(contacts), min_size=1, max_size=4))
    ids = [c["id"] for c in contacts]
    pairs = [(s, c) for s in range(len(rules)) for c in ids]
    return {
        "now": now,
        "contacts": contacts,
        "rules": rules,
        # which contacts are evaluated, each with the fields that changed (None: all, a new contact)
        "changed": draw(
            st.dictionaries(
                st.sampled_from(ids), st.none() | st.frozensets(st.sampled_from(TRACKED_FIELDS), max_size=3), min_size=1
            )
        ),
        "members": draw(st.sets(st.sampled_from(pairs))) if pairs else set(),  # (rule index, contact id)
        "read_first": draw(st.sampled_from([None, False, True])),  # by cost, never, always
    }


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def _setup(session: Session, scenario: dict[str, Any]) -> tuple[str, list[Segment]]:
    workspace_id = f"ev{next(_workspaces)}"
    now = scenario["now"]
    ensure_workspace(session, workspace_id, name=workspace_id, now=now)
    upsert_contacts(session, workspace_id, [load_snapshot(c) for c in scenario["contacts"]], now=now)
    segments = [
        Segment(workspace_id=workspace_id, name=f"s{i}", rule=rule, rule_version=1, created_at=now, updated_at=now)
        for i, rule in enumerate(scenario["rules"])
    ]
    session.add_all(segments)
    session.flush()
    for index, contact_id in sorted(scenario["members"]):
        session.execute(
            insert(MEMBERSHIPS).values(
                segment_id=segments[index].id, contact_id=contact_id, workspace_id=workspace_id, since=now
            )
        )
    return workspace_id, segments


def _drop(session: Session, workspace_id: str) -> None:
    session.execute(delete(CONTACTS).where(CONTACTS.c.workspace_id == workspace_id))
    session.execute(delete(Workspace.__table__).where(Workspace.__table__.c.id == workspace_id))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=scenarios())
def test_evaluating_changed_contacts_agrees_with_the_python_predicate(
    sessions: sessionmaker[Session], scenario: dict[str, Any]
) -> None:
    now = scenario["now"]
    with sessions() as session:
        workspace_id, segments = _setup(session, scenario)
        try:
            views = load_contact_views(session, workspace_id, [c["id"] for c in scenario["contacts"]])
            before = {(s.id, c) for s in segments for c in views if (segments.index(s), c) in scenario["members"]}
            expected = set(before)
            for segment in segments:
                predicate, reads = compile_predicate(segment.rule), compiled_segment(segment).reads
                for contact_id, fields in scenario["changed"].items():
                    if fields is not None and not (reads & fields):
                        continue  # the change concerns no field this segment reads
                    if predicate({**views[contact_id], "now": now}):
                        expected.add((segment.id, contact_id))
                    else:
                        expected.discard((segment.id, contact_id))
            note(f"rules={scenario['rules']} changed={scenario['changed']} read_first={scenario['read_first']}")

            diff = evaluate_contacts(
                session, workspace_id, scenario["changed"], now=now, cause=EventCause.CONTACT_CHANGED,
                segments=segments, changed=scenario["changed"], read_first=scenario["read_first"],
            )  # fmt: skip

            after = set(
                session.execute(
                    select(MEMBERSHIPS.c.segment_id, MEMBERSHIPS.c.contact_id).where(
                        MEMBERSHIPS.c.workspace_id == workspace_id
                    )
                ).tuples()
            )
            assert after == expected
            assert sorted(diff.entered) == sorted(expected - before)
            assert sorted(diff.exited) == sorted(before - expected)
            events = session.execute(
                select(EVENTS.c.contact_id, EVENTS.c.segment_id, EVENTS.c.kind, EVENTS.c.rule_version)
                .where(EVENTS.c.workspace_id == workspace_id)
                .order_by(EVENTS.c.seq)
            ).all()
            moved = sorted(
                [(c, s, "entered", 1) for s, c in expected - before] + [(c, s, "exited", 1) for s, c in before - expected],
                key=lambda e: (e[0].encode("utf-8"), e[1]),  # contact ids in byte (C collation) order
            )
            assert [tuple(e) for e in events] == moved
        finally:
            session.rollback()
            _drop(session, workspace_id)
            session.commit()


def test_the_memberships_are_read_first_only_when_the_pairs_outnumber_the_contacts(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    """Two contacts and six segments: a change of every field considers 12 pairs, more than
    ``READ_FIRST_ABOVE`` per contact, and reads the memberships first; a change of the one
    field a single segment reads considers 2, and goes straight to the write."""
    scenario = {
        "now": NOWS[0],
        "contacts": [{"id": "a", "version": 1, "country": "MY"}, {"id": "b", "version": 1}],
        "rules": [{"!!": [{"var": "country"}]}] + [{"!!": [{"var": "language"}]}] * 5,
        "members": set(),
    }
    statements: list[str] = []

    def capture(*args: Any) -> None:
        statements.append(args[2])  # before_cursor_execute's statement

    with sessions() as session:
        workspace_id, segments = _setup(session, scenario)
        assert 12 > READ_FIRST_ABOVE * 2 > 2
        try:
            reads = []
            for changed in ({"a": None, "b": None}, {"a": frozenset({"country"}), "b": frozenset({"country"})}):
                statements.clear()
                event.listen(engine, "before_cursor_execute", capture)
                try:
                    evaluate_contacts(
                        session, workspace_id, changed, now=scenario["now"], cause=EventCause.CONTACT_CHANGED,
                        segments=segments, changed=changed,
                    )  # fmt: skip
                finally:
                    event.remove(engine, "before_cursor_execute", capture)
                reads.append(any(s.lstrip().startswith("SELECT") and "FROM memberships" in s for s in statements))
            assert reads == [True, False]
        finally:
            session.rollback()
            _drop(session, workspace_id)
            session.commit()
