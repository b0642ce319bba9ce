"""Incremental rebuilds: the database stamps contact changes, a rebuild compares only what
changed since the last one (and what time may have flipped), and ends where a full one would.

Two ways to compute one thing: an incremental rebuild, and the compiled predicate over every
contact at the rebuild's instant.  Contacts change behind the service's back (plain SQL, so no
pending bits: only the stamps know), through it (pending, evaluated or not), and time passes,
with or without ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, update

from contact_segments import service
from contact_segments.rules import compile_predicate
from contact_segments.service import UnitOfWork
from contact_segments.storage import (
    TRACKED_FIELDS,
    Contact,
    Membership,
    PendingChange,
    Workspace,
    change_stamps,
    make_session_factory,
    queries,
)
from tests.support.workspaces import workspace_with_segments

DAY = 86_400
START = 1_780_000_000

RULES = {
    "promotion": {"in": ["promotion", {"var": "tags"}]},
    "country MY": {"==": [{"var": "country"}, "MY"]},
    "created <7d": {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]},
    "inactive >30d": {
        "and": [
            {"!!": [{"var": "last_incoming_message_at"}]},
            {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
        ]
    },
    "vip": {">=": [{"var": "custom_fields.score"}, 50]},
}
CONTACTS = 12


@pytest.fixture
def workspace(engine: Engine) -> tuple[UnitOfWork, dict[str, int]]:
    return workspace_with_segments(engine, RULES, now=START)


# --------------------------------------------------------------------------- the property


@dataclass(frozen=True)
class Change:
    """New values for some of a contact's fields."""

    contact: int
    values: dict


times = st.one_of(st.none(), st.integers(START - 40 * DAY, START + 20 * DAY))
changes = st.builds(
    Change,
    st.integers(0, CONTACTS - 1),
    st.fixed_dictionaries(
        {},
        optional={
            "tags": st.sampled_from([[], ["promotion"], ["vip"], ["promotion", "vip"]]),
            "country": st.sampled_from([None, "MY", "SG"]),
            "created_at": times,
            "last_incoming_message_at": times,
            "custom_fields": st.sampled_from([{}, {"score": 10}, {"score": 50}, {"score": "90"}]),
        },
    ),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("in sql"), changes),  # behind the service's back: only the stamp records it
        st.tuples(st.just("stored"), changes),  # stored through the service, left pending
        st.tuples(st.just("evaluate"), st.none()),  # the pending changes evaluated
        st.tuples(st.just("time"), st.sampled_from([1, 3600, DAY, 3 * DAY, 8 * DAY])),
        st.tuples(st.just("tick"), st.none()),
        st.tuples(st.just("rebuild"), st.none()),
    ),
    max_size=12,
).map(lambda s: [*s, ("rebuild", None)])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_an_incremental_rebuild_ends_where_evaluating_everyone_does(workspace, plan) -> None:
    uow, ids = workspace
    now = _reset(uow, ids)
    for action, argument in plan:
        match action:
            case "in sql":
                _change_in_sql(uow, argument)
            case "stored":
                _store(uow, argument, now)
            case "evaluate":
                service.evaluate_pending(UnitOfWork(uow.session_factory), "ws", now=now)
            case "time":
                now += argument
            case "tick":
                service.tick(UnitOfWork(uow.session_factory), "ws", now=now)
            case "rebuild":
                at = max(now, _last_tick(uow))
                for segment_id in ids.values():
                    result = service.rebuild_segment(
                        UnitOfWork(uow.session_factory), "ws", segment_id, now=now, incremental=True
                    )
                    assert not result.stale
                for name, rule in RULES.items():
                    assert _members(uow, ids[name]) == _matching(uow, rule, at), (name, plan)


def test_only_contacts_changed_since_the_build_are_compared(workspace) -> None:
    """Memberships edited behind the engine's back (drift) stay as they are for an incremental
    rebuild of unchanged contacts, and are repaired by a full one: the incremental one really
    compares only what changed."""
    uow, ids = workspace
    _reset(uow, ids)
    promotion = ids["promotion"]
    with uow:
        uow.session.execute(delete(Membership).where(Membership.segment_id == promotion, Membership.contact_id == "c00"))
        uow.commit()
    _change_in_sql(uow, Change(1, {"tags": ["promotion"]}))
    _change_in_sql(uow, Change(3, {"tags": []}))

    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START, incremental=True)
    assert (result.entered, result.exited) == (1, 1)  # c01 in, c03 out; the drift of c00 unseen
    assert "c00" not in _members(uow, promotion)

    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START)
    assert (result.entered, result.exited) == (1, 0)
    assert _members(uow, promotion) == _matching(uow, RULES["promotion"], START)

    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START, incremental=True)
    assert (result.entered, result.exited) == (0, 0)


def test_with_the_clock_set_back_the_rebuild_compares_everyone(workspace) -> None:
    uow, ids = workspace
    _reset(uow, ids)
    promotion = ids["promotion"]
    service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START + 100)
    with uow:
        uow.session.execute(delete(Membership).where(Membership.segment_id == promotion, Membership.contact_id == "c00"))
        uow.commit()
    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START + 50, incremental=True)
    assert (result.entered, result.exited) == (1, 0)  # the drift of c00 found: everyone was compared


def test_after_an_edit_the_rebuild_compares_everyone(workspace) -> None:
    uow, ids = workspace
    _reset(uow, ids)
    segment_id = ids["country MY"]
    service.edit_segment(uow, "ws", segment_id, rule=service.RuleInput(rule={"==": [{"var": "country"}, "SG"]}), now=START)
    expected = _matching(uow, {"==": [{"var": "country"}, "SG"]}, START)
    assert expected  # the fixture's contacts include some in SG
    assert _members(uow, segment_id) == expected
    # Asked again for the same version (a redelivered command): nothing changed, nothing to do.
    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", segment_id, now=START, incremental=True)
    assert (result.entered, result.exited, result.member_count) == (0, 0, len(expected))


# --------------------------------------------------------------------------- the stamps


@pytest.mark.parametrize("field", TRACKED_FIELDS)
def test_the_database_stamps_a_change_of_any_view_field_and_nothing_else(engine: Engine, field: str) -> None:
    factory = make_session_factory(engine)
    uow = UnitOfWork(factory)
    service.create_workspace(uow, "ws", now=START)
    service.upsert_contacts(uow, "ws", [{"id": "c", "version": 1}], now=START)
    value = {
        "channels": ["whatsapp"], "tags": ["x"], "custom_fields": {"a": 1},
        "created_at": 1.0, "last_incoming_message_at": 1.0, "last_outgoing_message_at": 1.0,
    }.get(field, "x")  # fmt: skip
    with uow:
        before = _stamp(uow)
        mark = change_stamps.watermark(uow.session, "ws")
        uow.commit()
    with uow:
        uow.session.execute(update(Contact).where(Contact.id == "c").values(changed_mask=0, updated_at=START + 1))
        uow.commit()
    assert _stamp(uow) == before  # bookkeeping columns do not stamp
    with uow:
        uow.session.execute(update(Contact).where(Contact.id == "c").values({field: value}))
        uow.commit()
    after = _stamp(uow)
    assert after >= mark and after != before


def test_the_migration_stamps_the_columns_of_the_models() -> None:
    stamped = import_module("contact_segments.storage.migrations.versions.0005_change_stamps").VIEW_COLUMNS
    assert stamped == ("version", *TRACKED_FIELDS)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_change_committed_after_the_rebuild_read_is_compared_next_time(workspace, engine: Engine) -> None:
    """A transaction that wrote a contact before the rebuild looked, but committed after it had
    read: the rebuild could not see the change, and its watermark still covers it.  (SQLite runs
    one writer at a time, so there this interleaving cannot happen.)"""
    uow, ids = workspace
    _reset(uow, ids)
    promotion = ids["promotion"]
    with engine.connect() as writer:
        writer.execute(update(Contact).where(Contact.id == "c04").values(tags=["promotion"], version=Contact.version + 1))
        result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START, incremental=True)
        assert (result.entered, result.exited) == (0, 0)  # not visible yet
        writer.commit()
    assert "c04" not in _members(uow, promotion)
    result = service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", promotion, now=START, incremental=True)
    assert (result.entered, result.exited) == (1, 0)
    assert "c04" in _members(uow, promotion)


# --------------------------------------------------------------------------- helpers

_versions_counter = iter(range(1_000, 10**9))


def _reset(uow: UnitOfWork, ids: dict[str, int]) -> float:
    """Fresh contacts (some of each kind), everything built from scratch; returns the instant."""
    with uow:
        uow.session.execute(delete(Membership))
        uow.session.execute(delete(Contact))
        uow.session.execute(update(Workspace).values(last_tick_at=START))
        uow.commit()
    snapshots = []
    for n in range(CONTACTS):
        snapshots.append(
            {
                "id": f"c{n:02d}",
                "version": next(_versions_counter),
                "tags": ["promotion"] if n % 3 == 0 else [],
                "country": ["MY", "SG", None][n % 3],
                "created_at": START - n * DAY,
                "last_incoming_message_at": START - 5 * n * DAY if n % 4 else None,
                "custom_fields": {"score": 10 * n},
            }
        )
    with uow:
        queries.upsert_contacts(uow.session, "ws", snapshots, now=START)
        uow.session.execute(delete(PendingChange))
        uow.commit()
    for segment_id in ids.values():
        service.rebuild_segment(UnitOfWork(uow.session_factory), "ws", segment_id, now=START)
    return START


def _change_in_sql(uow: UnitOfWork, change: Change) -> None:
    with uow:
        contact_id = f"c{change.contact:02d}"
        uow.session.execute(
            update(Contact).where(Contact.id == contact_id).values(version=Contact.version + 1, **change.values)
        )
        uow.commit()


def _store(uow: UnitOfWork, change: Change, now: float) -> None:
    contact_id = f"c{change.contact:02d}"
    plain = UnitOfWork(uow.session_factory)  # no dispatcher: the change is left pending
    with plain:
        view = dict(queries.load_contact_views(plain.session, "ws", [contact_id])[contact_id])
        view["version"] = queries.contact_versions(plain.session, "ws", [contact_id])[contact_id] + 1
        view.update(change.values)
        service.store_snapshots(plain, "ws", [view], now=now)
        plain.commit()


def _matching(uow: UnitOfWork, rule: dict, now: float) -> set[str]:
    predicate = compile_predicate(rule)
    with uow:
        ids = list(uow.session.scalars(select(Contact.id)))
        views = queries.load_contact_views(uow.session, "ws", ids)
    return {cid for cid, view in views.items() if predicate({**view, "now": now})}


def _members(uow: UnitOfWork, segment_id: int) -> set[str]:
    with uow:
        return set(uow.session.scalars(select(Membership.contact_id).where(Membership.segment_id == segment_id)))


def _last_tick(uow: UnitOfWork) -> float:
    with uow:
        return uow.session.scalar(select(Workspace.last_tick_at)) or START


def _stamp(uow: UnitOfWork) -> int:
    with uow:
        return uow.session.scalar(select(Contact.change_stamp).where(Contact.id == "c"))

