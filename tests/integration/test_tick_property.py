"""Two ways to compute time-based membership: the tick's incremental flips, and evaluating every
contact at the tick's instant.  After every tick they must agree, whatever the gaps between
ticks, with contacts placed right at the thresholds."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from contact_segments import service
from contact_segments.rules import compile_predicate
from contact_segments.service import UnitOfWork
from contact_segments.storage import Contact, Membership, MembershipEvent, Workspace, queries
from tests.support.workspaces import workspace_with_segments

DAY = 86_400
START = 1_780_000_000

RULES = {
    "created <7d": {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]},
    "created >=3d": {"<=": [{"var": "created_at"}, {"-": [{"var": "now"}, 3 * DAY]}]},
    "inactive >30d": {
        "and": [
            {"!!": [{"var": "last_incoming_message_at"}]},
            {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
        ]
    },
    "between 1d and 2d ago": {
        "<": [{"-": [{"var": "now"}, 2 * DAY]}, {"var": "created_at"}, {"-": [{"var": "now"}, DAY]}]
    },
    # Null compares as 0: no contact is a member at START, and the null ones are from then on (the
    # first tick's window holds 0, so it reads the nulls too).
    "before now - START": {"<": [{"var": "created_at"}, {"-": [{"var": "now"}, START]}]},
    # An offset beyond what now in SQL takes: the tick reconciles such a segment over everyone.
    "created <7d, and after now - 2e15 s": {
        "and": [
            {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]},
            {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 2 * 10**15]}]},
        ]
    },
}

# Instants around the thresholds: a contact exactly at one, a second either side.
offsets = st.sampled_from([0, 1, -1, DAY, 2 * DAY, 3 * DAY, 7 * DAY, 30 * DAY]).flatmap(
    lambda base: st.sampled_from([base - 1, base, base + 1])
)
timestamps = st.one_of(st.none(), offsets.map(lambda back: START - back), st.integers(START - 40 * DAY, START))
contacts = st.lists(st.tuples(timestamps, timestamps), min_size=1, max_size=25)
gaps = st.lists(st.one_of(st.sampled_from([1, 60, DAY, 3 * DAY]), st.integers(1, 10 * DAY)), min_size=1, max_size=6)


@pytest.fixture
def workspace(engine: Engine) -> tuple[UnitOfWork, dict[str, int]]:
    return workspace_with_segments(engine, RULES, now=START)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(people=contacts, steps=gaps)
def test_ticks_agree_with_evaluating_everyone(workspace, people, steps) -> None:
    uow, ids = workspace
    _reset(uow)  # each example starts with no contacts, no members, the watermark at START
    snapshots = [
        {"id": f"c{n:02d}", "version": _version(), "created_at": _iso(created), "last_incoming_message_at": _iso(seen)}
        for n, (created, seen) in enumerate(people)
    ]
    service.upsert_contacts(uow, "ws", snapshots, now=START)
    now = START
    for gap in steps:
        now += gap
        service.tick(uow, "ws", now=now)
        _assert_members_match(uow, RULES, ids, now)


def _assert_members_match(uow: UnitOfWork, rules: dict[str, Any], ids: dict[str, int], now: float) -> None:
    """Each segment's members are the contacts its rule's Python predicate matches at ``now``."""
    views = _views(uow)
    for name, rule in rules.items():
        predicate = compile_predicate(rule)
        expected = {cid for cid, view in views.items() if predicate({**view, "now": now})}
        assert _members(uow, ids[name]) == expected, (name, now - START)


_counter = iter(range(1, 10**9))


def _version() -> int:
    return next(_counter)  # always newer than what an earlier example stored


def _iso(instant: int | None) -> str | None:
    return None if instant is None else datetime.fromtimestamp(instant, UTC).isoformat()


def _reset(uow: UnitOfWork) -> None:
    with uow:
        uow.session.execute(delete(Membership))
        uow.session.execute(delete(Contact))
        uow.session.execute(Workspace.__table__.update().values(last_tick_at=START))
        uow.commit()


def _views(uow: UnitOfWork) -> dict[str, dict]:
    with uow:
        ids = list(uow.session.scalars(select(Contact.id)))
        return queries.load_contact_views(uow.session, "ws", ids)


def _members(uow: UnitOfWork, segment_id: int) -> set[str]:
    with uow:
        return set(uow.session.scalars(select(Membership.contact_id).where(Membership.segment_id == segment_id)))


def test_a_tick_builds_its_statement_once_for_the_same_segments(engine: Engine) -> None:
    """The tick's SQL is built for a set of segments and kept: later ticks only run it."""
    uow, _ = workspace_with_segments(engine, {"created <7d": RULES["created <7d"]}, now=START)
    _reset(uow)
    cached = importlib.import_module("contact_segments.service.tick")._window_flips
    cached.cache_clear()
    results = [service.tick(uow, "ws", now=START + k * 60) for k in range(1, 5)]
    assert [r.skipped for r in results] == [False] * 4
    assert (cached.cache_info().misses, cached.cache_info().hits) == (1, 3)


def test_a_tick_after_an_edit_compares_with_the_new_rule(engine: Engine) -> None:
    """An edited rule has a new version, so the next tick builds its statement anew: it flips by
    the new rule, and its events name the new version."""
    uow, ids = workspace_with_segments(engine, {"recent": RULES["created <7d"]}, now=START)
    _reset(uow)
    # Under the new rule ("created <3d") c1 is a member at START + 60 and leaves at START + 90.
    service.upsert_contacts(uow, "ws", [{"id": "c1", "version": _version(), "created_at": _iso(START - 3 * DAY + 90)}], now=START)
    service.tick(uow, "ws", now=START + 60)
    three_days = {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 3 * DAY]}]}
    edited = service.edit_segment(uow, "ws", ids["recent"], rule=service.RuleInput(rule=three_days), now=START + 60)
    assert _members(uow, ids["recent"]) == {"c1"}
    result = service.tick(uow, "ws", now=START + 120)
    assert (result.exited, _members(uow, ids["recent"])) == (1, set())
    with uow:
        versions = uow.session.execute(
            select(MembershipEvent.rule_version).where(
                MembershipEvent.segment_id == ids["recent"], MembershipEvent.cause == "time_passed"
            )
        ).scalars().all()
    assert versions == [edited.rule_version] and edited.rule_version > 1


def test_ticks_compare_more_windows_than_one_statement_holds(engine: Engine) -> None:
    """More time-relative segments than one SQLite statement compares (WINDOWS_PER_STATEMENT):
    each still flips exactly when its rule does."""
    from contact_segments.storage.setwise import WINDOWS_PER_STATEMENT

    rules = {
        f"created <{k}h": {">": [{"var": "created_at"}, {"-": [{"var": "now"}, k * 3_600]}]}
        for k in range(1, WINDOWS_PER_STATEMENT + 6)
    }
    uow, ids = workspace_with_segments(engine, rules, now=START)
    _reset(uow)
    people = [{"id": f"c{n:03d}", "version": _version(), "created_at": _iso(START - n * 1_800)} for n in range(0, 240)]
    service.upsert_contacts(uow, "ws", people, now=START)
    for now in (START + 3_600, START + 5 * 3_600, START + 2 * DAY + 1, START + 6 * DAY):
        service.tick(uow, "ws", now=now)
        _assert_members_match(uow, rules, ids, now)
