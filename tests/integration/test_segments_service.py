"""The segments service on SQLite and PostgreSQL: segment operations and their product rules,
snapshots, events, the default registry, members, explain and the tick.

Expectations are computed independently of the code under test: membership with
``contact_segments.rules.apply`` (or plain Python) over the snapshots the test made, events and
memberships by reading the tables directly.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.plugin import create_plugin_manager, hookimpl
from contact_segments.rules import apply
from contact_segments.rules.catalog import STRING_FIELDS, TIMESTAMP_FIELDS
from contact_segments.service import (
    DeliveryFailed,
    DuplicateName,
    EvaluatePending,
    EventView,
    InlineDispatcher,
    InvalidInput,
    LimitReached,
    NotFound,
    RuleInput,
    UnitOfWork,
    create_segment,
    create_workspace,
    delete_contact,
    delete_segment,
    delete_workspace,
    deliver_events,
    edit_segment,
    evaluate_pending,
    explain,
    iter_members,
    list_segments,
    rebuild_segment,
    record_message,
    rename_segment,
    save_as_new,
    seed_defaults,
    segment_view,
    store_snapshots,
    tick,
    upsert_contacts,
)
from contact_segments.service import membership as membership_module
from contact_segments.service.defaults import DefaultRegistry, DefaultSegment, default_registry
from contact_segments.service.settings import Settings
from contact_segments.storage import (
    TRACKED_FIELDS,
    Contact,
    DefaultRegistryEntry,
    DeliveryRequest,
    Membership,
    MembershipEvent,
    PendingChange,
    Segment,
    SegmentChange,
    Workspace,
    make_engine,
    make_session_factory,
    request_delivery,
    take_delivery_request,
)
from tests.support.locks import waiting_on_locks

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
HOUR = 3_600
DAY = 86_400
WS = "ws-1"
LIMIT = 500

POSTGRESQL_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

# The product's default segments (DESIGN.md), as plain Python: what each one means.
DEFAULT_NAMES = [
    "Contacts created <7 days ago",
    "Contacts inactive >30 days",
    "Contacts with tags",
    "Country known",
    "Language known",
]

MALAYSIA = {"==": [{"var": "country"}, "MY"]}
VIP = {"in": ["vip", {"var": "tags"}]}
PRO_PLAN = {"===": [{"var": "custom_fields.plan"}, "pro"]}
MALAYSIA_VIP = {"and": [MALAYSIA, VIP]}


# --------------------------------------------------------------------------- helpers


class Clock:
    """The instant follow-up work runs at; tests move it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def uow(session_factory: sessionmaker[Session], clock: Clock) -> UnitOfWork:
    """Follow-up work (rebuilds, evaluations) runs inline, at ``clock``."""
    return UnitOfWork(session_factory, InlineDispatcher(session_factory, clock=clock))


@pytest.fixture
def bare_uow(session_factory: sessionmaker[Session]) -> UnitOfWork:
    """No dispatcher: follow-up work is not run (the test runs it by hand)."""
    return UnitOfWork(session_factory)


@pytest.fixture
def ws(uow: UnitOfWork) -> str:
    create_workspace(uow, WS, now=NOW)
    return WS


def iso(instant: float | None) -> str | None:
    return None if instant is None else datetime.fromtimestamp(instant, UTC).isoformat()


def snapshot(contact_id: str, version: int = 1, **fields: Any) -> dict[str, Any]:
    """A host snapshot; timestamps given as epoch seconds become ISO-8601 strings."""
    document: dict[str, Any] = {"id": contact_id, "version": version}
    for name, value in fields.items():
        document[name] = iso(value) if name in TIMESTAMP_FIELDS else value
    return document


def make_contacts(count: int, *, seed: int = 1, now: float = NOW, prefix: str = "c") -> list[dict[str, Any]]:
    """Varied snapshots: empty strings, nulls and empty lists included."""
    rng = random.Random(seed)
    contacts = []
    for number in range(count):
        incoming = None if rng.random() < 0.3 else now - rng.uniform(0, 60 * DAY)
        contacts.append(
            snapshot(
                f"{prefix}{number:03d}",
                country=rng.choice(["MY", "MY", "SG", None, ""]),
                language=rng.choice(["en", "ms", None]),
                tags=rng.sample(["vip", "promotion", "b2b"], rng.randint(0, 2)),
                channels=rng.sample(["whatsapp", "email"], rng.randint(0, 2)),
                created_at=now - rng.uniform(0, 14 * DAY),
                last_incoming_message_at=incoming,
                custom_fields={"plan": rng.choice(["free", "pro"]), "orders": rng.randint(0, 20)},
            )
        )
    return contacts


def view(document: dict[str, Any]) -> dict[str, Any]:
    """The evaluation view of a snapshot, built here, not by the code under test."""
    result: dict[str, Any] = {"id": document["id"]}
    result |= {name: document.get(name) for name in STRING_FIELDS}
    result["tags"] = list(document.get("tags") or [])
    result["channels"] = list(document.get("channels") or [])
    result["custom_fields"] = dict(document.get("custom_fields") or {})
    for name in TIMESTAMP_FIELDS:
        value = document.get(name)
        result[name] = None if value is None else datetime.fromisoformat(value).timestamp()
    return result


def matching(rule: Any, documents: Iterable[dict[str, Any]], now: float) -> set[str]:
    """The ids of the snapshots the rule matches at ``now``, by the reference ``apply``."""
    return {d["id"] for d in documents if apply({"!!": [rule]}, {**view(d), "now": now}) is True}


def members(session_factory: sessionmaker[Session], segment_id: int) -> set[str]:
    with session_factory() as session:
        return set(session.scalars(select(Membership.contact_id).where(Membership.segment_id == segment_id)))


@dataclasses.dataclass(frozen=True)
class Event:
    seq: int
    segment_id: int
    contact_id: str | None
    kind: str
    cause: str
    rule_version: int
    member_count: int | None
    occurred_at: float


def events(session_factory: sessionmaker[Session], *, after: int = 0, segment_id: int | None = None) -> list[Event]:
    """The outbox rows with ``seq > after``, in order."""
    statement = select(MembershipEvent).where(MembershipEvent.seq > after).order_by(MembershipEvent.seq)
    if segment_id is not None:
        statement = statement.where(MembershipEvent.segment_id == segment_id)
    with session_factory() as session:
        return [
            Event(e.seq, e.segment_id, e.contact_id, e.kind, e.cause, e.rule_version, e.member_count, e.occurred_at)
            for e in session.scalars(statement)
        ]


def last_seq(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return session.scalar(select(func.coalesce(func.max(MembershipEvent.seq), 0))) or 0


def changes(found: list[Event]) -> list[tuple[str, str | None]]:
    """(kind, contact) of each event, sorted: what changed, with duplicates kept."""
    return sorted((e.kind, e.contact_id) for e in found)


def table_rows(session_factory: sessionmaker[Session]) -> dict[str, Any]:
    """Everything the service writes, to compare before and after a refused operation."""
    with session_factory() as session:
        return {
            "workspaces": sorted(session.execute(select(Workspace.id, Workspace.segment_count)).tuples()),
            "segments": sorted(
                session.execute(select(Segment.id, Segment.name, Segment.rule_version, Segment.updated_at)).tuples()
            ),
            "contacts": sorted(session.execute(select(Contact.id, Contact.version)).tuples()),
            "memberships": sorted(session.execute(select(Membership.segment_id, Membership.contact_id)).tuples()),
            "events": session.scalar(select(func.count()).select_from(MembershipEvent)),
            "segment changes": session.scalar(select(func.count()).select_from(SegmentChange)),
            "registry": sorted(
                session.execute(select(DefaultRegistryEntry.default_key, DefaultRegistryEntry.segment_id)).tuples()
            ),
        }


def segment_ids_by_name(uow: UnitOfWork, workspace_id: str = WS) -> dict[str, int]:
    return {v.name: v.id for v in list_segments(uow, workspace_id)}


def fill_workspace(session_factory: sessionmaker[Session], workspace_id: str, upto: int) -> None:
    """Bring the workspace to ``upto`` segments in one transaction, as the service stores them
    (one row each, the workspace's count kept in step): creating hundreds one by one through the
    service would cost seconds."""
    with session_factory() as session:
        have = session.scalar(select(Workspace.segment_count).where(Workspace.id == workspace_id))
        assert have is not None
        session.add_all(
            Segment(workspace_id=workspace_id, name=f"filler {n}", rule=VIP, created_at=NOW, updated_at=NOW)
            for n in range(have, upto)
        )
        session.execute(update(Workspace).where(Workspace.id == workspace_id).values(segment_count=upto))
        session.commit()


def segment_rows(session_factory: sessionmaker[Session], workspace_id: str = WS) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Segment).where(Segment.workspace_id == workspace_id)) or 0


def slot_count(session_factory: sessionmaker[Session], workspace_id: str = WS) -> int:
    with session_factory() as session:
        return session.scalar(select(Workspace.segment_count).where(Workspace.id == workspace_id)) or 0


# --------------------------------------------------------------------------- create


def test_create_builds_members_with_one_built_event_and_no_entries(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(40)
    upsert_contacts(uow, ws, contacts, now=NOW)
    expected = matching(MALAYSIA_VIP, contacts, NOW)
    assert 0 < len(expected) < len(contacts)
    before = last_seq(session_factory)

    created = create_segment(uow, ws, name="Malaysian VIPs", rule=RuleInput(rule=MALAYSIA_VIP), now=NOW)

    assert members(session_factory, created.id) == expected
    assert (created.member_count, created.filter_count, created.rule_version) == (len(expected), 2, 1)
    assert not created.is_default
    assert [(e.segment_id, e.contact_id, e.kind, e.cause, e.member_count) for e in events(session_factory, after=before)] == [
        (created.id, None, "built", "built", len(expected))
    ]
    listed = {v.id: v for v in list_segments(uow, ws)}[created.id]
    assert (listed.name, listed.member_count, listed.filter_count) == ("Malaysian VIPs", len(expected), 2)


def test_create_from_conditions(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    contacts = make_contacts(40)
    upsert_contacts(uow, ws, contacts, now=NOW)
    conditions = {
        "op": "and",
        "conditions": [
            {"category": "contact_field", "field": "country", "operator": "is_equal_to", "value": "MY"},
            {"category": "contact_tag", "field": "tags", "operator": "has_any_of", "value": ["vip", "b2b"]},
        ],
    }
    created = create_segment(uow, ws, name="MY vip or b2b", rule=RuleInput(conditions=conditions), now=NOW)

    expected = {c["id"] for c in contacts if c["country"] == "MY" and {"vip", "b2b"} & set(c["tags"])}
    assert expected
    assert members(session_factory, created.id) == expected
    assert created.conditions == conditions
    assert created.filter_count == 2
    assert matching(created.rule, contacts, NOW) == expected  # the stored JSONLogic means the same


def test_first_build_in_batches_writes_one_built_event(
    uow: UnitOfWork, bare_uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(25)
    upsert_contacts(uow, ws, contacts, now=NOW)
    created = create_segment(bare_uow, ws, name="VIP", rule=RuleInput(rule=VIP), now=NOW)  # not built yet
    assert members(session_factory, created.id) == set()
    before = last_seq(session_factory)

    result = rebuild_segment(bare_uow, ws, created.id, rule_version=1, now=NOW, first_build=True, batch_size=4)

    expected = matching(VIP, contacts, NOW)
    assert members(session_factory, created.id) == expected
    assert (result.entered, result.exited, result.member_count, result.stale) == (len(expected), 0, len(expected), False)
    assert [(e.kind, e.contact_id, e.member_count) for e in events(session_factory, after=before)] == [
        ("built", None, len(expected))
    ]


# --------------------------------------------------------------------------- edit, save as, rename, delete


def test_edit_writes_rule_edited_events_exactly_once_per_change(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(40)
    upsert_contacts(uow, ws, contacts, now=NOW)
    segment = create_segment(uow, ws, name="Edited", rule=RuleInput(rule=MALAYSIA), now=NOW)
    old, new = matching(MALAYSIA, contacts, NOW), matching(VIP, contacts, NOW)
    assert old - new and new - old
    before = last_seq(session_factory)

    edited = edit_segment(uow, ws, segment.id, rule=RuleInput(rule=VIP), now=NOW + 60)

    assert (edited.id, edited.rule_version, edited.rule) == (segment.id, 2, VIP)
    found = events(session_factory, after=before)
    assert changes(found) == sorted([("entered", c) for c in new - old] + [("exited", c) for c in old - new])
    assert {(e.segment_id, e.cause, e.rule_version) for e in found} == {(segment.id, "rule_edited", 2)}
    assert members(session_factory, segment.id) == new

    # The same rule again changes nothing; a rule that reads differently but selects the same
    # contacts (the editor's spelling) is a new version, with no membership change to report.
    before = last_seq(session_factory)
    assert edit_segment(uow, ws, segment.id, rule=RuleInput(rule=VIP), now=NOW + 120).rule_version == 2
    same = {"op": "and", "conditions": [{"category": "contact_tag", "operator": "has_any_of", "value": ["vip"]}]}
    assert edit_segment(uow, ws, segment.id, rule=RuleInput(conditions=same), now=NOW + 120).rule_version == 3
    assert events(session_factory, after=before) == []
    assert members(session_factory, segment.id) == new

    # And back: the reverse changes, once each, under the next version.
    edit_segment(uow, ws, segment.id, rule=RuleInput(rule=MALAYSIA), now=NOW + 180)
    found = events(session_factory, after=before)
    assert changes(found) == sorted([("exited", c) for c in new - old] + [("entered", c) for c in old - new])
    assert {e.rule_version for e in found} == {4}
    assert members(session_factory, segment.id) == old


def test_a_stale_or_repeated_rebuild_is_a_no_op(
    uow: UnitOfWork, bare_uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(30)
    upsert_contacts(uow, ws, contacts, now=NOW)
    segment = create_segment(uow, ws, name="Moving", rule=RuleInput(rule=MALAYSIA), now=NOW)
    edit_segment(bare_uow, ws, segment.id, rule=RuleInput(rule=VIP), now=NOW)  # version 2, not rebuilt
    edit_segment(bare_uow, ws, segment.id, rule=RuleInput(rule=PRO_PLAN), now=NOW)  # version 3, not rebuilt
    before = last_seq(session_factory)

    stale = rebuild_segment(bare_uow, ws, segment.id, rule_version=2, now=NOW, batch_size=5)
    assert stale.stale
    assert events(session_factory, after=before) == []
    assert members(session_factory, segment.id) == matching(MALAYSIA, contacts, NOW)

    result = rebuild_segment(bare_uow, ws, segment.id, rule_version=3, now=NOW, batch_size=5)
    old, new = matching(MALAYSIA, contacts, NOW), matching(PRO_PLAN, contacts, NOW)
    assert not result.stale and (result.entered, result.exited) == (len(new - old), len(old - new))
    assert changes(events(session_factory, after=before)) == sorted(
        [("entered", c) for c in new - old] + [("exited", c) for c in old - new]
    )
    assert members(session_factory, segment.id) == new

    before = last_seq(session_factory)
    again = rebuild_segment(bare_uow, ws, segment.id, rule_version=3, now=NOW, batch_size=5)
    assert (again.entered, again.exited, again.member_count) == (0, 0, len(new))
    assert events(session_factory, after=before) == []


def test_save_as_new_leaves_the_original_untouched(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(30)
    upsert_contacts(uow, ws, contacts, now=NOW)
    original = create_segment(uow, ws, name="Original", rule=RuleInput(rule=MALAYSIA), description="d", now=NOW)
    original_members = members(session_factory, original.id)
    before = last_seq(session_factory)

    copy = save_as_new(uow, ws, original.id, name="Copy", rule=RuleInput(rule=VIP), now=NOW + 60)

    assert copy.id != original.id
    assert (copy.name, copy.rule, copy.rule_version, copy.description) == ("Copy", VIP, 1, "d")
    assert members(session_factory, copy.id) == matching(VIP, contacts, NOW)
    assert segment_view(uow, ws, original.id) == original
    assert members(session_factory, original.id) == original_members
    assert [(e.segment_id, e.kind) for e in events(session_factory, after=before)] == [(copy.id, "built")]

    unchanged = save_as_new(uow, ws, original.id, name="Same rule", rule=None, now=NOW + 60)
    assert unchanged.rule == MALAYSIA and members(session_factory, unchanged.id) == original_members

    state = table_rows(session_factory)
    with pytest.raises(DuplicateName):
        save_as_new(uow, ws, original.id, name=" copy ", rule=RuleInput(rule=PRO_PLAN), now=NOW)
    with pytest.raises(NotFound):
        save_as_new(uow, ws, 999_999, name="Other", rule=None, now=NOW)
    assert table_rows(session_factory) == state


def test_rename_keeps_the_id_rule_and_members(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    contacts = make_contacts(30)
    upsert_contacts(uow, ws, contacts, now=NOW)
    segment = create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW)
    before_members = members(session_factory, segment.id)
    before = last_seq(session_factory)

    renamed = rename_segment(uow, ws, segment.id, name="  Malaysians\t", now=NOW + 60)
    assert (renamed.id, renamed.name, renamed.rule, renamed.rule_version) == (segment.id, "Malaysians", MALAYSIA, 1)
    assert rename_segment(uow, ws, segment.id, name="MALAYSIANS", now=NOW + 60).name == "MALAYSIANS"  # itself
    assert members(session_factory, segment.id) == before_members
    assert events(session_factory, after=before) == []
    assert segment_ids_by_name(uow)["MALAYSIANS"] == segment.id

    state = table_rows(session_factory)
    with pytest.raises(DuplicateName):
        rename_segment(uow, ws, segment.id, name=" country KNOWN ", now=NOW)
    with pytest.raises(InvalidInput):
        rename_segment(uow, ws, segment.id, name="  ", now=NOW)
    with pytest.raises(NotFound):
        rename_segment(uow, ws, 999_999, name="Nobody", now=NOW)
    with pytest.raises(NotFound):
        rename_segment(uow, "no-such-workspace", segment.id, name="Elsewhere", now=NOW)
    assert table_rows(session_factory) == state


def test_delete_removes_memberships_undelivered_events_and_frees_the_slot(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(30)
    upsert_contacts(uow, ws, contacts, now=NOW)
    doomed = create_segment(uow, ws, name="Doomed", rule=RuleInput(rule=MALAYSIA), now=NOW)
    kept = create_segment(uow, ws, name="Kept", rule=RuleInput(rule=VIP), now=NOW)
    deliver_events(uow, ws, lambda batch: None, now=NOW)  # everything so far is delivered
    edit_segment(uow, ws, doomed.id, rule=RuleInput(rule=PRO_PLAN), now=NOW)  # undelivered events
    with session_factory() as session:
        undelivered = select(func.count()).where(
            MembershipEvent.segment_id == doomed.id, MembershipEvent.delivered_at.is_(None)
        )
        assert session.scalar(undelivered)
    kept_members, kept_events = members(session_factory, kept.id), events(session_factory, segment_id=kept.id)
    slots = slot_count(session_factory)

    delete_segment(uow, ws, doomed.id, now=NOW)

    assert members(session_factory, doomed.id) == set()
    with session_factory() as session:
        assert session.scalar(undelivered) == 0
        assert session.get(Segment, doomed.id) is None
    assert members(session_factory, kept.id) == kept_members
    assert events(session_factory, segment_id=kept.id) == kept_events
    assert slot_count(session_factory) == slots - 1 == segment_rows(session_factory)
    assert doomed.id not in segment_ids_by_name(uow).values()
    for operation in (
        lambda: segment_view(uow, ws, doomed.id),
        lambda: delete_segment(uow, ws, doomed.id, now=NOW),
        lambda: rename_segment(uow, ws, doomed.id, name="Back", now=NOW),
        lambda: edit_segment(uow, ws, doomed.id, rule=RuleInput(rule=VIP), now=NOW),
        lambda: list(iter_members(uow, ws, doomed.id)),
    ):
        with pytest.raises(NotFound):
            operation()
    assert rebuild_segment(uow, ws, doomed.id, rule_version=2, now=NOW).stale  # pending work stops

    again = create_segment(uow, ws, name="Doomed", rule=RuleInput(rule=MALAYSIA), now=NOW)
    assert again.id > kept.id  # a deleted segment's id is never reused


def test_segment_notifications_reach_the_host_once_in_order_even_after_it_failed(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    """Segment changes are an outbox like membership events: written with the change,
    delivered in order, again (the same ones, with the same unique ids) after the host raised,
    and a deleted segment's notification outlives the segment.  They go before the events of the same delivery, so a
    segment's "created" reaches the host before its "built"."""
    deliver_events(uow, ws, lambda batch: None, notify=lambda *change: None, now=NOW)  # the defaults'
    segment = create_segment(uow, ws, name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    rename_segment(uow, ws, segment.id, name="Very important", now=NOW)
    edit_segment(uow, ws, segment.id, rule=RuleInput(rule=MALAYSIA), now=NOW)
    delete_segment(uow, ws, segment.id, now=NOW)
    expected = [
        (ws, {"id": segment.id, "name": "VIP", "rule_version": 1}, "created"),
        (ws, {"id": segment.id, "name": "Very important", "rule_version": 1}, "renamed"),
        (ws, {"id": segment.id, "name": "Very important", "rule_version": 2}, "edited"),
        (ws, {"id": segment.id, "name": "Very important", "rule_version": 2}, "deleted"),
    ]
    told: list[Any] = []

    def failing(*change: Any) -> None:
        told.append(change)
        if len(told) == 2:
            raise RuntimeError("the host is down")

    with pytest.raises(DeliveryFailed):
        deliver_events(uow, ws, None, notify=failing, now=NOW)
    assert [c[:3] for c in told] == expected[:2]
    first_ids = [c[3] for c in told]
    told.clear()
    deliver_events(uow, ws, None, notify=lambda *c: told.append(c), now=NOW)
    assert [c[:3] for c in told] == expected  # the first two again: at least once
    ids = [c[3] for c in told]
    assert ids[:2] == first_ids and len(set(ids)) == 4 and all(isinstance(i, str) and i for i in ids)
    told.clear()
    deliver_events(uow, ws, None, notify=lambda *c: told.append(c), now=NOW)
    assert told == []

    other = create_segment(uow, ws, name="Other", rule=RuleInput(rule=VIP), now=NOW)  # built inline
    order: list[str] = []
    deliver_events(
        uow, ws, lambda batch: order.extend(e.kind for e in batch), notify=lambda *c: order.append(c[2]), now=NOW
    )
    assert order[:2] == ["created", "built"] and other.id


OUTBOXES = ("membership_events", "segment_changes")


def outbox_fetch(statement: str, table: str) -> bool:
    """Whether ``statement`` is a delivery's fetch of the undelivered rows of ``table``."""
    return f"FROM {table}" in statement and f"ORDER BY {table}.seq" in statement and "delivered_at IS NULL" in statement


@POSTGRESQL_ONLY
@pytest.mark.parametrize("written", ["events", "notification"])
def test_a_delivery_that_finds_another_running_leaves_it_a_request(
    db_url: str, uow: UnitOfWork, ws: str, written: str
) -> None:
    """One deliverer per workspace: a delivery sent for new rows finds another one holding the
    lock, which fetched both outboxes before the rows were committed.  It returns at once,
    having left a request; the one holding the lock takes it when it lets go and delivers the
    rows, instead of leaving them to the beat's next recovery."""
    deliver_events(uow, ws, lambda batch: None, notify=lambda *change: None, now=NOW)  # the defaults'
    holder_engine, second_engine = make_engine(db_url), make_engine(db_url)
    second = UnitOfWork(make_session_factory(second_engine))
    came: list[int] = []
    fetched: list[str] = []

    def meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if came:
            return
        fetched.extend(table for table in OUTBOXES if outbox_fetch(statement, table))
        # The rows come once the holder has fetched the outbox they go to, and found nothing:
        # events after its fetch of events; a notification after its fetch of notifications,
        # which follows one of events.
        wanted = ["membership_events"] if written == "events" else ["membership_events", "segment_changes"]
        if fetched[-len(wanted) :] == wanted:
            if written == "events":
                upsert_contacts(uow, ws, [snapshot("late", country="MY")], now=NOW)
            else:
                create_segment(uow, ws, name="Late", rule=RuleInput(rule=VIP), now=NOW)
            told: list[Any] = []
            came.append(deliver_events(second, ws, told.extend, notify=lambda *c: told.append(c), now=NOW))
            assert told == []
            with second.session_factory() as session:  # what it left (the writes' own deliveries, hookless, none)
                assert session.get(DeliveryRequest, ws) is not None

    event.listen(holder_engine, "after_cursor_execute", meanwhile)
    heard: list[Any] = []
    try:
        handed = deliver_events(
            UnitOfWork(make_session_factory(holder_engine)), ws, heard.extend, notify=lambda *c: heard.append(c), now=NOW
        )
        with second.session_factory() as session:
            assert not take_delivery_request(session, ws)  # taken
    finally:
        holder_engine.dispose()
        second_engine.dispose()
    assert came == [0]
    if written == "events":
        assert handed == len(heard) > 0 and {e.contact_id for e in heard} == {"late"}
    else:
        assert [item[2] if isinstance(item, tuple) else item.kind for item in heard] == ["created", "built"]


@POSTGRESQL_ONLY
def test_a_host_that_saves_a_contact_while_it_receives_events_gets_those_events_too(
    session_factory: sessionmaker[Session], clock: Clock, ws: str
) -> None:
    """Inline, a host's hook that saves a contact through the engine runs a delivery while the
    one calling the hook holds the lock: that delivery returns at once, and the one holding the
    lock delivers the new events (a delivery that waited for the lock would wait for itself)."""
    received: list[EventView] = []
    echoed: list[str] = []

    def deliver(batch: list[EventView]) -> None:
        received.extend(batch)
        if not echoed:
            echoed.append("echo")
            upsert_contacts(inline.fresh(), ws, [snapshot("echo", country="MY")], now=NOW)

    inline = UnitOfWork(session_factory, InlineDispatcher(session_factory, clock=clock, deliver=deliver))
    upsert_contacts(inline, ws, [snapshot("first", country="MY")], now=NOW)
    assert echoed and {"first", "echo"} <= {e.contact_id for e in received}
    with session_factory() as session:
        assert session.scalar(select(func.count()).where(MembershipEvent.delivered_at.is_(None))) == 0


@POSTGRESQL_ONLY
def test_a_delivery_without_hooks_leaves_requests_to_one_that_delivers(
    session_factory: sessionmaker[Session], uow: UnitOfWork, ws: str
) -> None:
    """A delivery with neither hook (the CLI's, with no broker) hands nothing, so it must not take
    a request left for a deliverer that hands what the request came for."""
    with session_factory() as session:
        request_delivery(session, ws)
        session.commit()
    assert deliver_events(uow, ws, None, now=NOW) == 0
    with session_factory() as session:
        assert take_delivery_request(session, ws)


@POSTGRESQL_ONLY
def test_a_host_that_deletes_a_segment_while_told_of_a_change_is_not_kept_waiting(
    session_factory: sessionmaker[Session], uow: UnitOfWork, ws: str
) -> None:
    """A notification hook that deletes a segment with undelivered events: the deletion takes
    the events, and the delivery calling the hook holds no lock on them (it would wait for
    itself, with no timeout)."""
    doomed = create_segment(uow, ws, name="Doomed", rule=RuleInput(rule=VIP), now=NOW)
    upsert_contacts(uow, ws, [snapshot("someone", tags=["vip"])], now=NOW)  # an undelivered event of Doomed's
    heard: list[str] = []

    def notify(workspace_id: str, segment: dict[str, Any], change: str, change_id: str) -> None:
        heard.append(change)
        if segment["id"] == doomed.id and change == "created":
            delete_segment(uow.fresh(), ws, doomed.id, now=NOW)

    delivering = threading.Thread(target=lambda: deliver_events(uow, ws, lambda batch: None, notify=notify, now=NOW), daemon=True)
    delivering.start()
    delivering.join(timeout=30)
    assert not delivering.is_alive(), "the hook's deletion waited for the delivery calling it"
    assert heard[-2:] == ["created", "deleted"]
    with session_factory() as session:
        assert session.scalar(select(func.count()).where(MembershipEvent.segment_id == doomed.id)) == 0


@POSTGRESQL_ONLY
def test_a_segment_created_during_a_delivery_is_announced_before_its_built_event(
    db_url: str, uow: UnitOfWork, ws: str
) -> None:
    """A segment created and built while a delivery fetches its first batch, between its fetch
    of one outbox and of the other: its "created" notification still reaches the host before
    its "built" event."""
    deliver_events(uow, ws, lambda batch: None, notify=lambda *change: None, now=NOW)  # the defaults'
    deliverer_engine = make_engine(db_url)
    created: list[str] = []

    def meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if any(outbox_fetch(statement, table) for table in OUTBOXES) and not created:
            created.append(create_segment(uow, ws, name="Meanwhile", rule=RuleInput(rule=VIP), now=NOW).name)  # built inline

    event.listen(deliverer_engine, "after_cursor_execute", meanwhile)
    heard: list[str] = []
    try:
        deliver_events(
            UnitOfWork(make_session_factory(deliverer_engine)), ws,
            lambda batch: heard.extend(e.kind for e in batch), notify=lambda *change: heard.append(change[2]), now=NOW,
        )  # fmt: skip
    finally:
        deliverer_engine.dispose()
    assert created and heard == ["created", "built"]


def test_a_host_hook_that_leaves_out_the_change_id_still_hears_of_segment_changes(db_url: str) -> None:
    """``change_id`` came later: a host implementation written before it keeps working."""
    heard: list[tuple[str, str, str]] = []

    class EarlierHost:
        @hookimpl
        def segments_segment_changed(self, workspace_id: str, segment: dict[str, Any], change: str) -> None:
            heard.append((workspace_id, segment["name"], change))

    hooks = create_plugin_manager(Settings(database_url=db_url), plugins=(EarlierHost(),))  # embedded: inline
    hooks.hook.segments_workspace_created(workspace_id="ws-hooks", name="Hooks", timezone="UTC")
    engine = make_engine(db_url)
    create_segment(UnitOfWork(make_session_factory(engine)), "ws-hooks", name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    engine.dispose()
    hooks.hook.segments_contact_saved(workspace_id="ws-hooks", snapshot=snapshot("c1", 1, tags=["vip"]))  # delivers
    assert heard == [("ws-hooks", "VIP", "created")]


def test_deleting_a_workspace_takes_everything_in_it_and_nothing_else(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    create_workspace(uow, "ws-2", now=NOW)
    for workspace_id in (ws, "ws-2"):
        upsert_contacts(uow, workspace_id, make_contacts(10), now=NOW)
        create_segment(uow, workspace_id, name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    with session_factory() as session:  # everything below exists in both, undelivered
        assert {r[0] for r in session.execute(select(SegmentChange.workspace_id))} == {ws, "ws-2"}
        for workspace_id in (ws, "ws-2"):
            request_delivery(session, workspace_id)
        session.commit()
    create_workspace(uow, "ws-3", now=NOW)
    delete_workspace(uow, "ws-3")
    kept = table_rows(session_factory)

    delete_workspace(uow, ws)

    with session_factory() as session:
        for model in (Contact, Segment, Membership, MembershipEvent, SegmentChange, DefaultRegistryEntry, DeliveryRequest):
            assert session.scalar(select(func.count()).select_from(model).where(model.workspace_id == ws)) == 0, model
        assert session.get(Workspace, ws) is None
        assert session.scalar(select(func.count()).select_from(SegmentChange)) > 0  # ws-2's
        assert session.get(DeliveryRequest, "ws-2") is not None
    with pytest.raises(NotFound):
        delete_workspace(uow, ws)
    delete_workspace(uow, ws, missing_ok=True)
    assert table_rows(session_factory)["workspaces"] == [r for r in kept["workspaces"] if r[0] != ws]


def test_a_segment_of_another_workspace_is_not_found(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    create_workspace(uow, "ws-2", now=NOW)
    theirs = create_segment(uow, "ws-2", name="Theirs", rule=RuleInput(rule=VIP), now=NOW)
    state = table_rows(session_factory)
    for operation in (
        lambda: segment_view(uow, ws, theirs.id),
        lambda: delete_segment(uow, ws, theirs.id, now=NOW),
        lambda: rename_segment(uow, ws, theirs.id, name="Mine", now=NOW),
        lambda: edit_segment(uow, ws, theirs.id, rule=RuleInput(rule=MALAYSIA), now=NOW),
        lambda: list(iter_members(uow, ws, "not-a-number")),
    ):
        with pytest.raises(NotFound):
            operation()
    assert table_rows(session_factory) == state


# --------------------------------------------------------------------------- names and the limit


def test_names_are_unique_trimmed_and_case_insensitively(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    create_segment(uow, ws, name="  VIP Customers ", rule=RuleInput(rule=VIP), now=NOW)
    assert "VIP Customers" in segment_ids_by_name(uow)
    create_segment(uow, ws, name="Straße", rule=RuleInput(rule=VIP), now=NOW)
    create_segment(uow, ws, name="Café", rule=RuleInput(rule=VIP), now=NOW)
    state = table_rows(session_factory)

    for taken in ["VIP Customers", "vip customers", " VIP CUSTOMERS", "Vip Customers\t", "STRASSE", "CAFÉ",
                  unicodedata.normalize("NFD", "Café"), "country known"]:  # fmt: skip
        with pytest.raises(DuplicateName):
            create_segment(uow, ws, name=taken, rule=RuleInput(rule=MALAYSIA), now=NOW)
    assert table_rows(session_factory) == state

    create_segment(uow, ws, name="VIP Customers 2", rule=RuleInput(rule=VIP), now=NOW)
    create_workspace(uow, "ws-2", now=NOW)
    create_segment(uow, "ws-2", name="vip customers", rule=RuleInput(rule=VIP), now=NOW)  # another workspace


def test_bad_names_are_refused_and_nothing_is_written(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    state = table_rows(session_factory)
    bad = ["", "   ", "\t\n", "x" * 101, "a\nb", "a\x00b", "a\x1bb", "a\x7fb", "a\x85b", "a\u2028b", 42, None]
    for name in bad:
        with pytest.raises(InvalidInput):
            create_segment(uow, ws, name=name, rule=RuleInput(rule=VIP), now=NOW)  # type: ignore[arg-type]
    assert table_rows(session_factory) == state

    longest = create_segment(uow, ws, name="  " + "y" * 100 + "  ", rule=RuleInput(rule=VIP), now=NOW)
    assert longest.name == "y" * 100
    decomposed = create_segment(uow, ws, name=unicodedata.normalize("NFD", "Crème"), rule=RuleInput(rule=VIP), now=NOW)
    assert decomposed.name == "Crème"  # stored composed (NFC)


def test_bad_rules_are_refused_and_nothing_is_written(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    state = table_rows(session_factory)
    for given in [
        RuleInput(rule={"==": [{"var": "nope"}, 1]}),  # unknown field
        RuleInput(rule={"reduce": [[1], {"+": [1, 1]}, 0]}),  # valid JSONLogic, not a segment rule
        RuleInput(rule=VIP, conditions={"op": "and", "conditions": []}),  # both
        RuleInput(),  # neither
        RuleInput(conditions={"op": "xor", "conditions": []}),
    ]:
        with pytest.raises(InvalidInput):
            create_segment(uow, ws, name="Bad", rule=given, now=NOW)
    segment = segment_ids_by_name(uow)["Country known"]
    with pytest.raises(InvalidInput) as refused:
        edit_segment(uow, ws, segment, rule=RuleInput(rule={"and": [VIP, {"==": [{"var": "nope"}, 1]}]}), now=NOW)
    assert any("nope" in str(message) for message in refused.value.messages.values())
    with pytest.raises(NotFound):
        create_segment(uow, "no-such-workspace", name="Lost", rule=RuleInput(rule=VIP), now=NOW)
    assert table_rows(session_factory) == state


def test_a_workspace_holds_at_most_500_segments(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    fill_workspace(session_factory, ws, LIMIT - 3)
    for n in range(3):  # the last three through the service
        create_segment(uow, ws, name=f"last {n}", rule=RuleInput(rule=VIP), now=NOW)
    assert segment_rows(session_factory) == slot_count(session_factory) == LIMIT
    state = table_rows(session_factory)

    with pytest.raises(LimitReached, match="500"):
        create_segment(uow, ws, name="one too many", rule=RuleInput(rule=VIP), now=NOW)
    with pytest.raises(LimitReached):
        save_as_new(uow, ws, segment_ids_by_name(uow)["last 0"], name="a copy", rule=None, now=NOW)
    assert table_rows(session_factory) == state

    delete_segment(uow, ws, segment_ids_by_name(uow)["last 1"], now=NOW)
    create_segment(uow, ws, name="one too many", rule=RuleInput(rule=VIP), now=NOW)
    assert segment_rows(session_factory) == slot_count(session_factory) == LIMIT
    with pytest.raises(LimitReached):
        create_segment(uow, ws, name="and another", rule=RuleInput(rule=VIP), now=NOW)


def _create_in_a_process(db_url: str, name: str, barrier: Any, results: Any) -> None:
    """One concurrent creator: its own engine, released with the others by the barrier."""
    engine = make_engine(db_url)
    try:
        factory = make_session_factory(engine)
        uow = UnitOfWork(factory, InlineDispatcher(factory, clock=lambda: NOW))
        barrier.wait(timeout=60)
        try:
            results.put(("created", create_segment(uow, WS, name=name, rule=RuleInput(rule=VIP), now=NOW).id))
        except LimitReached:
            results.put(("limit", name))
        except DuplicateName:
            results.put(("duplicate", name))
    except BaseException as error:  # reported to the test, not lost in the child
        results.put(("error", repr(error)))
    finally:
        engine.dispose()


def run_creators(engine: Engine, names: list[str]) -> Counter[str]:
    """Create a segment per name, each in a process of its own, all released at once."""
    engine.dispose()  # no pooled connection crosses the fork
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(names)), context.Queue()
    db_url = engine.url.render_as_string(hide_password=False)
    processes = [context.Process(target=_create_in_a_process, args=(db_url, name, barrier, results)) for name in names]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [o for o in outcomes if o[0] == "error"] == []
    return Counter(kind for kind, _ in outcomes)


@POSTGRESQL_ONLY
def test_20_concurrent_creators_cannot_pass_500(
    engine: Engine, uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    fill_workspace(session_factory, ws, LIMIT - 10)
    outcomes = run_creators(engine, [f"concurrent {n}" for n in range(20)])
    assert outcomes == Counter(created=10, limit=10)
    assert segment_rows(session_factory) == slot_count(session_factory) == LIMIT


@POSTGRESQL_ONLY
def test_20_concurrent_creators_of_one_name_leave_one(
    engine: Engine, uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    spellings = ["Weekend buyers", "weekend buyers", " WEEKEND BUYERS", "Weekend Buyers\t"]
    outcomes = run_creators(engine, [spellings[n % 4] for n in range(20)])
    assert outcomes == Counter(created=1, duplicate=19)
    with session_factory() as session:
        same = select(func.count()).where(Segment.workspace_id == ws, func.lower(Segment.name) == "weekend buyers")
        assert session.scalar(same) == 1
    assert segment_rows(session_factory) == slot_count(session_factory) == len(DEFAULT_NAMES) + 1


class PausedEvaluation:
    """``evaluate_pending`` in a thread of its own, paused just after it took its pending changes
    (PostgreSQL: the rows it took stay held) until :meth:`resume`; other work in threads too,
    errors collected.  Connections are named ``segments-race-test``, to see who waits."""

    APPLICATION = "segments-race-test"

    def __init__(self, db_url: str, ws: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from contact_segments.service import contacts as contacts_module

        self.engine = make_engine(db_url, connect_args={"application_name": self.APPLICATION})
        self.factory = make_session_factory(self.engine)
        self.ws = ws
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._taken, self._resume = threading.Event(), threading.Event()
        real_take = contacts_module.pending_changes.take

        def take_then_wait(*args: Any, **kwargs: Any) -> Any:
            pending = real_take(*args, **kwargs)
            if not self._taken.is_set():  # only the first evaluation pauses
                self._taken.set()
                self._resume.wait(timeout=30)
            return pending

        monkeypatch.setattr(contacts_module.pending_changes, "take", take_then_wait)

    def start(self) -> None:
        self.run(lambda: evaluate_pending(UnitOfWork(self.factory), self.ws, now=NOW))
        assert self._taken.wait(timeout=30)

    def run(self, work: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                work()
            except BaseException as error:
                self.errors.append(error)

        thread = threading.Thread(target=guarded)
        self.threads.append(thread)
        thread.start()

    def waiting_on_locks(self, expected: int = 1, *, timeout: float = 10) -> int:
        """How many of our connections wait for a lock, once that is ``expected`` (or ``timeout``)."""
        return waiting_on_locks(self.engine, self.APPLICATION, expected=expected, timeout=timeout)

    def finish(self) -> None:
        self._resume.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.engine.dispose()
        assert self.errors == []


@pytest.fixture
def paused_evaluation(db_url: str, ws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PausedEvaluation]:
    race = PausedEvaluation(db_url, ws, monkeypatch)
    try:
        yield race
    finally:
        race._resume.set()
        race.engine.dispose()


@POSTGRESQL_ONLY
def test_deleting_a_segment_while_a_contact_is_evaluated_does_not_deadlock(
    paused_evaluation: PausedEvaluation, ws: str
) -> None:
    """An evaluation holds the workspace's share lock, then touches the segment; a delete must
    take its locks in the same order, or the two deadlock and one of them fails."""
    race = paused_evaluation
    uow = UnitOfWork(race.factory, InlineDispatcher(race.factory, clock=lambda: NOW))
    segment = create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW)
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", country="MY")], now=NOW)  # pending, not evaluated

    race.start()
    race.run(lambda: delete_segment(UnitOfWork(race.factory), ws, segment.id, now=NOW))
    assert race.waiting_on_locks() == 1  # the delete waits for the evaluation
    race.finish()
    with race.factory() as session:
        assert session.get(Segment, segment.id) is None
        assert session.scalar(select(func.count()).where(Membership.segment_id == segment.id)) == 0


@POSTGRESQL_ONLY
def test_a_snapshot_stored_during_its_contacts_evaluation_waits_and_is_evaluated_after(
    paused_evaluation: PausedEvaluation, ws: str
) -> None:
    """The pending row an evaluation took serialises the contact: a newer snapshot's store waits
    for the evaluation to commit, another evaluation meanwhile finds nothing to take, and the
    next one evaluates the newer snapshot against the memberships the first one wrote."""
    race = paused_evaluation
    malaysia = create_segment(UnitOfWork(race.factory), ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)

    race.start()  # evaluates version 1 (Malaysia): paused before it writes
    race.run(lambda: upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 2, country="SG")], now=NOW))
    assert race.waiting_on_locks() == 1  # the store waits for the evaluation
    assert not evaluate_pending(UnitOfWork(race.factory), ws, now=NOW)  # nothing to take meanwhile
    race.finish()

    with race.factory() as session:
        assert session.scalar(select(PendingChange.mask).where(PendingChange.contact_id == "c1"))
    evaluate_pending(UnitOfWork(race.factory), ws, now=NOW)
    assert [(e.kind, e.contact_id) for e in events(race.factory, segment_id=malaysia)] == [("entered", "c1"), ("exited", "c1")]
    with race.factory() as session:
        assert session.scalar(select(func.count()).where(Membership.segment_id == malaysia)) == 0


@POSTGRESQL_ONLY
def test_a_message_recorded_during_its_contacts_evaluation_waits_for_it(paused_evaluation: PausedEvaluation, ws: str) -> None:
    race = paused_evaluation
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)
    race.start()
    race.run(lambda: record_message(UnitOfWork(race.factory), ws, "c1", direction="incoming", at=NOW))
    assert race.waiting_on_locks() == 1
    race.finish()
    with race.factory() as session:
        mask = session.scalar(select(PendingChange.mask).where(PendingChange.contact_id == "c1"))
    assert mask == 1 << TRACKED_FIELDS.index("last_incoming_message_at")  # marked after the evaluation


@POSTGRESQL_ONLY
def test_a_snapshot_changing_no_field_does_not_wait_for_an_evaluation(paused_evaluation: PausedEvaluation, ws: str) -> None:
    """Nothing to mark pending, so nothing to wait for: the evaluation's result holds for it too."""
    race = paused_evaluation
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)
    race.start()
    assert upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 2, country="MY")], now=NOW) == ["c1"]
    race.finish()


@POSTGRESQL_ONLY
def test_deleting_a_contact_waits_for_a_tick(paused_evaluation: PausedEvaluation, ws: str) -> None:
    """A tick locks the workspace row; a deletion share-locks it first, as an evaluation does, so
    it cannot commit between the tick's read of the contact and the tick's write."""
    race = paused_evaluation
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)
    with race.engine.connect() as ticking:
        ticking.execute(select(Workspace.id).where(Workspace.id == ws).with_for_update())  # as open_tick_window
        race.run(lambda: delete_contact(UnitOfWork(race.factory), ws, "c1", now=NOW))
        assert race.waiting_on_locks() == 1
        ticking.rollback()
    race.finish()
    with race.factory() as session:
        assert session.get(Contact, (ws, "c1")) is None


@POSTGRESQL_ONLY
@pytest.mark.parametrize("writer", ["evaluation", "rebuild"])
def test_other_membership_writers_wait_for_a_tick(paused_evaluation: PausedEvaluation, ws: str, writer: str) -> None:
    """A tick writes its flips without ``ON CONFLICT``, as their only writer (it holds the
    workspace row): an evaluation and a rebuild batch share-lock the row first, so they wait
    for it, as a deletion does (above)."""
    race = paused_evaluation
    malaysia = create_segment(UnitOfWork(race.factory), ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)
    uow = UnitOfWork(race.factory)
    with uow:
        store_snapshots(uow, ws, [snapshot("c1", 2, country="SG")], now=NOW)  # pending, not yet evaluated
        uow.commit()
    work = {
        "evaluation": lambda: evaluate_pending(UnitOfWork(race.factory), ws, now=NOW),
        "rebuild": lambda: rebuild_segment(UnitOfWork(race.factory), ws, malaysia, now=NOW),
    }[writer]
    with race.engine.connect() as ticking:
        ticking.execute(select(Workspace.id).where(Workspace.id == ws).with_for_update())  # as open_tick_window
        race.run(work)
        assert race.waiting_on_locks() == 1
        ticking.rollback()
    race.finish()
    with race.factory() as session:
        assert session.get(Membership, (malaysia, "c1")) is None  # the writer ran after, and took c1 out


@POSTGRESQL_ONLY
def test_deleting_a_contact_during_its_evaluation_waits_and_removes_what_it_wrote(
    paused_evaluation: PausedEvaluation, ws: str
) -> None:
    race = paused_evaluation
    malaysia = create_segment(UnitOfWork(race.factory), ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    upsert_contacts(UnitOfWork(race.factory), ws, [snapshot("c1", 1, country="MY")], now=NOW)

    race.start()
    race.run(lambda: delete_contact(UnitOfWork(race.factory), ws, "c1", now=NOW))
    assert race.waiting_on_locks() == 1  # the deletion waits for the evaluation
    race.finish()

    assert [(e.kind, e.contact_id) for e in events(race.factory, segment_id=malaysia)] == [("entered", "c1"), ("exited", "c1")]
    with race.factory() as session:
        assert session.scalar(select(func.count()).where(Membership.contact_id == "c1")) == 0
        assert session.scalar(select(func.count()).select_from(PendingChange)) == 0


# --------------------------------------------------------------------------- contacts


def test_stale_and_duplicate_snapshots_are_no_ops(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    ids = segment_ids_by_name(uow)
    malaysia = create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    first = snapshot("c1", 2, country="MY", tags=["vip"], created_at=NOW - DAY)
    assert upsert_contacts(uow, ws, [first], now=NOW) == ["c1"]
    entered = {e.segment_id for e in events(session_factory) if e.kind == "entered"}
    assert entered == {malaysia, ids["Country known"], ids["Contacts with tags"], ids["Contacts created <7 days ago"]}
    state, before = table_rows(session_factory), last_seq(session_factory)

    assert upsert_contacts(uow, ws, [first], now=NOW + 60) == []  # the same again
    assert upsert_contacts(uow, ws, [{**first, "country": "SG", "tags": []}], now=NOW + 60) == []  # same version
    assert upsert_contacts(uow, ws, [snapshot("c1", 1, country=None)], now=NOW + 60) == []  # older
    assert table_rows(session_factory) == state
    assert events(session_factory, after=before) == []
    with session_factory() as session:
        stored = session.get_one(Contact, (ws, "c1"))
        assert (stored.country, stored.tags, stored.updated_at) == ("MY", ["vip"], NOW)

    # In one batch the newest version wins, whatever the order; a stale one beside it changes nothing.
    newer = snapshot("c1", 4, country="SG", tags=["vip"], created_at=NOW - DAY)
    assert upsert_contacts(uow, ws, [newer, snapshot("c1", 3, country=None)], now=NOW + 120) == ["c1"]
    assert [(e.segment_id, e.kind, e.cause) for e in events(session_factory, after=before)] == [
        (malaysia, "exited", "contact_changed")
    ]


def counting_predicates(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Count each segment's predicate calls during contact evaluations."""
    calls: Counter[int] = Counter()
    real = membership_module.compiled_segment

    def counted(segment: Segment) -> Any:
        compiled = real(segment)

        def predicate(data: Any) -> bool:
            calls[compiled.id] += 1
            return compiled.predicate(data)

        return dataclasses.replace(compiled, predicate=predicate)

    monkeypatch.setattr(membership_module, "compiled_segment", counted)
    return calls


def test_a_change_re_evaluates_only_the_segments_that_read_a_changed_field(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW)
    create_segment(uow, ws, name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    create_segment(uow, ws, name="Pro plan", rule=RuleInput(rule=PRO_PLAN), now=NOW)
    create_segment(uow, ws, name="Everyone", rule=RuleInput(conditions={"op": "and", "conditions": []}), now=NOW)
    ids = segment_ids_by_name(uow)
    calls = counting_predicates(monkeypatch)
    reads = {  # which segments read which field, by their meaning
        "tags": {ids["VIP"], ids["Contacts with tags"]},
        "country": {ids["Malaysia"], ids["Country known"]},
        "custom_fields": {ids["Pro plan"]},
    }

    base = snapshot("c1", 1, country="MY", tags=[], created_at=NOW - 30 * DAY, custom_fields={"plan": "pro", "n": 1})
    upsert_contacts(uow, ws, [base], now=NOW)
    assert calls == dict.fromkeys(ids.values(), 1)  # a new contact: every segment, "Everyone" included
    everyone = members(session_factory, ids["Everyone"])
    assert everyone == {"c1"}

    current = dict(base)

    def change(version: int, **fields: Any) -> tuple[set[int], list[tuple[int, str]]]:
        """Store the next snapshot with ``fields`` changed: (segments evaluated, events)."""
        calls.clear()
        before = last_seq(session_factory)
        current.update(fields, version=version)
        upsert_contacts(uow, ws, [current], now=NOW)
        return set(calls), sorted((e.segment_id, e.kind) for e in events(session_factory, after=before))

    assert change(2, tags=["vip"]) == (reads["tags"], sorted([(ids["VIP"], "entered"), (ids["Contacts with tags"], "entered")]))
    assert change(3, custom_fields={"plan": "pro", "n": 2}) == (reads["custom_fields"], [])
    assert change(4, custom_fields={"plan": "free", "n": 2}) == (reads["custom_fields"], [(ids["Pro plan"], "exited")])
    assert change(5) == (set(), [])  # a new version that changes nothing evaluates nothing
    assert change(6, country="SG", tags=[]) == (
        reads["country"] | reads["tags"],
        sorted([(ids["Malaysia"], "exited"), (ids["VIP"], "exited"), (ids["Contacts with tags"], "exited")]),
    )

    # Observable without counting, too: a membership dropped behind the service's back is only
    # repaired by a change to a field the segment reads.
    with session_factory() as session:
        session.execute(delete(Membership).where(Membership.segment_id == ids["Country known"]))
        session.commit()
    assert change(7, tags=["b2b"])[0] == reads["tags"]
    assert members(session_factory, ids["Country known"]) == set()
    assert change(8, country="ID")[1] == [(ids["Country known"], "entered")]
    assert members(session_factory, ids["Country known"]) == {"c1"}


def test_a_burst_of_changes_is_evaluated_once_on_the_newest_snapshot(
    uow: UnitOfWork, bare_uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    malaysia = create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    vip = create_segment(uow, ws, name="VIP", rule=RuleInput(rule=VIP), now=NOW).id
    upsert_contacts(uow, ws, [snapshot("c1", 1, country="SG")], now=NOW)
    before = last_seq(session_factory)

    upsert_contacts(bare_uow, ws, [snapshot("c1", 2, country="MY", tags=["vip"])], now=NOW)  # stored, not evaluated
    upsert_contacts(bare_uow, ws, [snapshot("c1", 3, country="SG", tags=["vip"])], now=NOW)
    assert events(session_factory, after=before) == []
    evaluate_pending(uow, ws, now=NOW)
    evaluate_pending(uow, ws, now=NOW)  # nothing pending any more

    ids = segment_ids_by_name(uow)
    assert sorted((e.segment_id, e.kind) for e in events(session_factory, after=before)) == sorted(
        [(vip, "entered"), (ids["Contacts with tags"], "entered")]
    )
    assert members(session_factory, malaysia) == set()


class Workers:
    """A dispatcher that runs work elsewhere (``runs_elsewhere``), as the Celery one sends it to
    workers: each EvaluatePending it gets is evaluated at once, by another "worker" (its own
    transaction), in batches of ``limit``; ``taken`` lists each evaluation's contacts as it
    commits, and ``pending_seen`` how many pending rows a new evaluation found first."""

    runs_elsewhere = True

    def __init__(self, factory: sessionmaker[Session], limit: int) -> None:
        self.factory, self.limit = factory, limit
        self.taken: list[list[str]] = []
        self.pending_seen: list[int] = []

    def dispatch(self, commands: Iterable[Any]) -> None:
        for command in commands:
            if isinstance(command, EvaluatePending):
                with self.factory() as session:
                    self.pending_seen.append(session.scalar(select(func.count()).select_from(PendingChange)) or 0)
                diff = evaluate_pending(UnitOfWork(self.factory, self), command.workspace_id, now=NOW, limit=self.limit)
                self.taken.append(sorted({contact_id for _, contact_id in diff.entered}))


@POSTGRESQL_ONLY
def test_a_burst_is_evaluated_by_as_many_workers_as_take_it(
    bare_uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    """An evaluation that takes a full batch announces the next one before it evaluates its
    own, so another worker takes the next batch (skipping the locked rows) meanwhile: here each
    "worker" starts while every earlier one still holds its batch, and they commit innermost
    first.  Every contact is evaluated once."""
    malaysia = create_segment(bare_uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW).id
    upsert_contacts(bare_uow, ws, [snapshot(f"c{i}", country="MY") for i in range(7)], now=NOW)  # pending
    workers = Workers(session_factory, limit=3)

    workers.dispatch([EvaluatePending(ws)])

    assert workers.pending_seen == [7, 7, 7]  # nobody had committed when the next one started
    assert workers.taken == [["c6"], ["c3", "c4", "c5"], ["c0", "c1", "c2"]]
    assert members(session_factory, malaysia) == {f"c{i}" for i in range(7)}
    entered = [e.contact_id for e in events(session_factory, segment_id=malaysia) if e.kind == "entered"]
    assert sorted(entered) == [f"c{i}" for i in range(7)]


@pytest.mark.parametrize(
    ("backend", "elsewhere"),
    [("sqlite", False), pytest.param("postgresql", False, marks=pytest.mark.postgres), ("sqlite", True)],
    indirect=["backend"],
)
def test_the_next_batch_waits_for_the_commit_inline_or_on_sqlite(
    elsewhere: bool, bare_uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    """In one process the next evaluation must wait for this one's transaction, and on SQLite,
    which runs one writer at a time, another worker could only wait for it: the announcement
    comes after the commit."""
    upsert_contacts(bare_uow, ws, [snapshot(f"c{i}", country="MY") for i in range(7)], now=NOW)
    workers = Workers(session_factory, limit=3)
    workers.runs_elsewhere = elsewhere

    evaluate_pending(UnitOfWork(session_factory, workers), ws, now=NOW, limit=3)

    assert workers.pending_seen == [4, 1]  # each after the one before it committed
    assert workers.taken == [["c6"], ["c3", "c4", "c5"]]


def test_deleting_a_contact_exits_every_segment(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    contacts = make_contacts(20)
    upsert_contacts(uow, ws, contacts, now=NOW)
    create_segment(uow, ws, name="Malaysia", rule=RuleInput(rule=MALAYSIA), now=NOW)
    segments = {v.id: v.rule for v in list_segments(uow, ws)}
    victim = max(contacts, key=lambda c: sum(c["id"] in matching(r, [c], NOW) for r in segments.values()))
    in_segments = {sid for sid, rule in segments.items() if matching(rule, [victim], NOW)}
    assert len(in_segments) >= 3
    others = {sid: members(session_factory, sid) - {victim["id"]} for sid in segments}
    before = last_seq(session_factory)

    diff = delete_contact(uow, ws, victim["id"], now=NOW + 60)

    assert sorted(diff.exited) == sorted((sid, victim["id"]) for sid in in_segments)
    found = events(session_factory, after=before)
    assert sorted((e.segment_id, e.contact_id, e.kind, e.cause) for e in found) == sorted(
        (sid, victim["id"], "exited", "contact_deleted") for sid in in_segments
    )
    assert {sid: members(session_factory, sid) for sid in segments} == others
    with session_factory() as session:
        assert session.get(Contact, (ws, victim["id"])) is None
    with pytest.raises(NotFound):
        delete_contact(uow, ws, victim["id"], now=NOW)
    with pytest.raises(NotFound):
        delete_contact(uow, "no-such-workspace", contacts[0]["id"], now=NOW)

    # A stale save arriving after the deletion (a host's retry) does not bring the contact back;
    # a newer one (restored in the host) does, and it enters its segments again.
    assert upsert_contacts(uow, ws, [victim], now=NOW + 120) == []
    assert {sid: members(session_factory, sid) for sid in segments} == others
    assert events(session_factory, after=before)[len(found):] == []
    assert upsert_contacts(uow, ws, [{**victim, "version": victim["version"] + 1}], now=NOW + 180) == [victim["id"]]
    assert {sid for sid in segments if victim["id"] in members(session_factory, sid)} == in_segments

    # It may come back, as a new contact.
    upsert_contacts(uow, ws, [victim], now=NOW + 120)
    assert {sid for sid in segments if victim["id"] in members(session_factory, sid)} == in_segments


# --------------------------------------------------------------------------- the default registry


def test_every_workspace_starts_with_the_five_defaults_and_seeding_is_idempotent(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    defaults = list_segments(uow, ws)
    assert [v.name for v in defaults] == DEFAULT_NAMES
    assert all(v.is_default and v.filter_count == 1 for v in defaults)
    state, before = table_rows(session_factory), last_seq(session_factory)

    create_workspace(uow, ws, now=NOW + 60)
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW + 60) == []
        assert seed_defaults(uow, ws, "UTC", now=NOW + 60, registry=default_registry()) == []
        uow.commit()
    assert table_rows(session_factory) == state
    assert events(session_factory, after=before) == []


def test_defaults_are_ordinary_segments_and_never_come_back(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    ids = segment_ids_by_name(uow)
    delete_segment(uow, ws, ids["Country known"], now=NOW)
    rename_segment(uow, ws, ids["Language known"], name="Speaks something", now=NOW)
    edit_segment(uow, ws, ids["Contacts with tags"], rule=RuleInput(rule=VIP), now=NOW)
    state = table_rows(session_factory)

    create_workspace(uow, ws, now=NOW + 60)
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW + 60) == []
        uow.commit()

    assert table_rows(session_factory) == state
    names = segment_ids_by_name(uow)
    assert "Country known" not in names and "Language known" not in names
    assert segment_view(uow, ws, ids["Contacts with tags"]).rule == VIP


def registry_v2(*extra: DefaultSegment) -> DefaultRegistry:
    shipped = default_registry()
    return DefaultRegistry(version=shipped.version + 1, segments=shipped.segments + extra)


def test_a_default_added_by_a_later_registry_reaches_an_existing_workspace_once(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    contacts = make_contacts(30)
    upsert_contacts(uow, ws, contacts, now=NOW)
    delete_segment(uow, ws, segment_ids_by_name(uow)["Country known"], now=NOW)
    registry = registry_v2(DefaultSegment("vip", "VIP contacts", VIP, None))
    before = last_seq(session_factory)

    with uow:
        created = seed_defaults(uow, ws, "UTC", now=NOW, registry=registry)
        uow.commit()  # the first build follows

    assert len(created) == 1
    new = segment_view(uow, ws, created[0])
    assert (new.name, new.is_default, new.rule) == ("VIP contacts", True, VIP)
    assert members(session_factory, new.id) == matching(VIP, contacts, NOW)
    assert [(e.segment_id, e.kind, e.member_count) for e in events(session_factory, after=before)] == [
        (new.id, "built", new.member_count)
    ]
    with session_factory() as session:
        entry = session.get_one(DefaultRegistryEntry, (ws, "vip"))
        assert (entry.registry_version, entry.segment_id) == (registry.version, new.id)

    state = table_rows(session_factory)
    create_workspace(uow, ws, now=NOW)
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW, registry=registry) == []
        uow.commit()
    assert table_rows(session_factory) == state
    assert "Country known" not in segment_ids_by_name(uow)


def test_a_new_default_whose_name_is_taken_is_not_created(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    mine = create_segment(uow, ws, name="vip CONTACTS", rule=RuleInput(rule=MALAYSIA), now=NOW)
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW, registry=registry_v2(DefaultSegment("vip", "VIP contacts", VIP, None))) == []
        uow.commit()
    assert segment_view(uow, ws, mine.id) == mine
    assert segment_rows(session_factory) == len(DEFAULT_NAMES) + 1


def test_a_new_default_waits_for_room_in_a_full_workspace(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    fill_workspace(session_factory, ws, LIMIT)
    registry = registry_v2(DefaultSegment("vip", "VIP contacts", VIP, None))
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW, registry=registry) == []  # no room: no error either
        uow.commit()
    assert segment_rows(session_factory) == slot_count(session_factory) == LIMIT

    delete_segment(uow, ws, segment_ids_by_name(uow)["filler 7"], now=NOW)
    with uow:
        assert len(seed_defaults(uow, ws, "UTC", now=NOW, registry=registry)) == 1
        uow.commit()
    with uow:
        assert seed_defaults(uow, ws, "UTC", now=NOW, registry=registry) == []
        uow.commit()
    assert "VIP contacts" in segment_ids_by_name(uow)
    assert segment_rows(session_factory) == LIMIT


# --------------------------------------------------------------------------- members and explain


def test_members_are_streamed_in_batches_in_a_stable_order(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    ids = [f"c{n:03d}" for n in range(20)] + ["C-1", "a", "Z", "é1", "c10", "c2"]
    shuffled = random.Random(3).sample(ids, len(ids))
    contacts = [snapshot(i, tags=["vip"] if n % 5 else []) for n, i in enumerate(shuffled)]
    upsert_contacts(uow, ws, contacts, now=NOW)
    segment = create_segment(uow, ws, name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    expected = sorted(matching(VIP, contacts, NOW))
    assert len(expected) > 8

    for size in (1, 4, 1000):
        batches = list(iter_members(uow, ws, segment.id, batch_size=size))
        assert [len(b) for b in batches] == [len(expected[i : i + size]) for i in range(0, len(expected), size)]
        assert [c for b in batches for c in b] == expected


def test_explain_shows_each_node_value_the_fields_read_and_the_verdict(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str
) -> None:
    rule = {"and": [MALAYSIA, {"or": [VIP, {">": [{"var": "custom_fields.orders"}, 10]}]}]}
    upsert_contacts(
        uow,
        ws,
        [
            snapshot("in", country="MY", tags=[], custom_fields={"orders": 12}, created_at=NOW - 2 * DAY),
            snapshot("out", country="SG", tags=["vip"], custom_fields={}),
        ],
        now=NOW,
    )
    segment = create_segment(uow, ws, name="Explained", rule=RuleInput(rule=rule), now=NOW)

    report = explain(uow, ws, segment.id, "in", now=NOW)
    assert (report["segment_id"], report["segment"], report["contact_id"], report["now"]) == (segment.id, "Explained", "in", NOW)
    assert (report["matches"], report["member"]) == (True, True)
    assert report["fields"] == {"country": "MY", "tags": [], "custom_fields.orders": 12}
    tree = report["tree"]
    assert (tree["path"], tree["op"], tree["value"]) == ("$", "and", True)
    country, either = tree["args"]
    assert (country["path"], country["op"], country["value"]) == ("$.and[0]", "==", True)
    assert country["args"] == [
        {"path": "$.and[0].==[0]", "op": "var", "field": "country", "value": "MY"},
        {"path": "$.and[0].==[1]", "literal": "MY", "value": "MY"},
    ]
    assert (either["op"], either["value"]) == ("or", True)
    tagged, orders = either["args"]
    assert (tagged["path"], tagged["op"], tagged["value"]) == ("$.and[1].or[0]", "in", False)
    assert tagged["args"][1] == {"path": "$.and[1].or[0].in[1]", "op": "var", "field": "tags", "value": []}
    assert (orders["op"], orders["value"], orders["args"][0]["value"]) == (">", True, 12)

    report = explain(uow, ws, segment.id, "out", now=NOW)
    assert (report["matches"], report["member"]) == (False, False)
    assert report["tree"]["value"] is False and report["tree"]["args"][0]["value"] is False
    assert report["fields"] == {"country": "SG", "tags": ["vip"], "custom_fields.orders": None}

    # Time-relative: the verdict is at the given instant; membership is what is stored.
    recent = segment_ids_by_name(uow)["Contacts created <7 days ago"]
    now_report, later = explain(uow, ws, recent, "in", now=NOW), explain(uow, ws, recent, "in", now=NOW + 8 * DAY)
    assert (now_report["matches"], later["matches"], later["member"]) == (True, False, True)
    assert later["fields"] == {"created_at": NOW - 2 * DAY, "now": NOW + 8 * DAY}

    for bad in [(segment.id, "nobody"), (999_999, "in"), ("x", "in")]:
        with pytest.raises(NotFound):
            explain(uow, ws, *bad, now=NOW)


# --------------------------------------------------------------------------- time


def stored(instant: float) -> float:
    """The instant as a snapshot carries it (ISO-8601, to the microsecond), read back."""
    return datetime.fromisoformat(iso(instant) or "").timestamp()


def recent(created_at: float | None, now: float) -> bool:
    """ "Contacts created <7 days ago", by its meaning."""
    return created_at is not None and created_at > now - 7 * DAY


def inactive(last_incoming: float | None, now: float) -> bool:
    """ "Contacts inactive >30 days", by its meaning: never having written is not inactivity."""
    return last_incoming is not None and last_incoming < now - 30 * DAY


def test_the_tick_moves_contacts_at_their_thresholds_never_before_and_once(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str, clock: Clock
) -> None:
    ticks = [NOW + n * 6 * HOUR for n in range(1, 33)]  # every 6 hours for 8 days
    created = {  # each turns 7 days old this many hours after the workspace's creation (and first tick)
        f"r{n:02d}": stored(NOW - 7 * DAY + hours * HOUR)
        for n, hours in enumerate([-1, 0, 0.5, 5.999, 6, 6.001, 30, 47.5, 48, 120, 150.25, 167.9])
    } | {"never": None, "old": NOW - 30 * DAY}
    last_incoming = {  # each has been silent for 30 days this many hours after
        f"i{n:02d}": stored(NOW - 30 * DAY + hours * HOUR) for n, hours in enumerate([-1, 0, 3, 6, 6.5, 50, 191.99, 500])
    } | {"silent": None}
    contacts = [snapshot(c, created_at=t) for c, t in created.items()]
    contacts += [snapshot(c, last_incoming_message_at=t) for c, t in last_incoming.items()]
    upsert_contacts(uow, ws, contacts, now=NOW)
    ids = segment_ids_by_name(uow)
    recent_id, inactive_id = ids["Contacts created <7 days ago"], ids["Contacts inactive >30 days"]
    arrived = dict.fromkeys(created, NOW)
    start = last_seq(session_factory)

    for at in ticks:
        if at == NOW + 2 * DAY + 6 * HOUR:  # a contact arrives between two ticks, an hour before its mark
            clock.now = arrived["late"] = at - 5 * HOUR
            created["late"] = stored(clock.now - 7 * DAY + HOUR)
            upsert_contacts(uow, ws, [snapshot("late", created_at=created["late"])], now=clock.now)
            assert "late" in members(session_factory, recent_id)
        clock.now = at
        tick(uow, ws, now=at)
        assert members(session_factory, recent_id) == {c for c, t in created.items() if recent(t, at)}
        assert members(session_factory, inactive_id) == {c for c, t in last_incoming.items() if inactive(t, at)}

    timed = [e for e in events(session_factory, after=start) if e.cause == "time_passed"]
    assert max(Counter((e.segment_id, e.contact_id) for e in timed).values()) == 1  # no flip applied twice
    leaves_at = {  # a member leaves at the first tick at or after its mark, never before
        c: min(at for at in ticks if at > arrived[c] and not recent(t, at))
        for c, t in created.items()
        if recent(t, arrived[c]) and not recent(t, ticks[-1])
    }
    assert {"r04", "r06", "r08", "late"} <= leaves_at.keys()  # r04 and r08 turn 7 days old on a tick
    assert {e.contact_id: e.occurred_at for e in timed if e.segment_id == recent_id} == leaves_at
    assert {e.kind for e in timed if e.segment_id == recent_id} == {"exited"}
    enters_at = {  # and enters "inactive" at the first tick strictly after its mark
        c: min(at for at in ticks if inactive(t, at)) for c, t in last_incoming.items() if not inactive(t, NOW) and inactive(t, ticks[-1])
    }
    assert {"i01", "i03", "i06"} <= enters_at.keys()
    assert {e.contact_id: e.occurred_at for e in timed if e.segment_id == inactive_id} == enters_at
    assert {e.kind for e in timed if e.segment_id == inactive_id} == {"entered"}


def test_a_tick_after_a_gap_catches_up_exactly(uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str) -> None:
    marks = {f"m{n}": NOW + days * DAY for n, days in enumerate([0.5, 1, 2.99, 3, 3.01, 4, 5.9, 6, 6.01, 9])}
    upsert_contacts(uow, ws, [snapshot(c, created_at=t - 7 * DAY) for c, t in marks.items()], now=NOW)
    recent_id = segment_ids_by_name(uow)["Contacts created <7 days ago"]
    assert members(session_factory, recent_id) == set(marks)

    exited_at: dict[float, set[str]] = {}
    for day in (1, 2, 3, 6, 7):  # the beats of days 4 and 5 were missed
        at = NOW + day * DAY
        before = last_seq(session_factory)
        result = tick(uow, ws, now=at)
        found = events(session_factory, after=before)
        assert {e.kind for e in found} <= {"exited"} and result.exited == len(found)
        assert result.candidates == result.exited  # the window held just the contacts that crossed
        exited_at[day] = {e.contact_id for e in found if e.contact_id is not None}

    assert exited_at == {
        1: {"m0", "m1"},
        2: set(),
        3: {"m2", "m3"},
        6: {"m4", "m5", "m6", "m7"},  # exactly the marks in (day 3, day 6]
        7: {"m8"},
    }
    assert members(session_factory, recent_id) == {"m9"}

    before = last_seq(session_factory)
    assert tick(uow, ws, now=NOW + 7 * DAY).skipped  # the same instant again
    assert tick(uow, ws, now=NOW + 5 * DAY).skipped  # the past
    assert events(session_factory, after=before) == []


def test_work_done_with_a_clock_behind_the_last_tick_does_not_undo_its_flips(
    uow: UnitOfWork, session_factory: sessionmaker[Session], ws: str, clock: Clock
) -> None:
    upsert_contacts(uow, ws, [snapshot("c1", created_at=NOW - DAY), snapshot("c2", created_at=NOW + 7.5 * DAY)], now=NOW)
    tick(uow, ws, now=NOW + 8 * DAY)  # c1 turned 7 days old
    ids = segment_ids_by_name(uow)
    recent_rule = segment_view(uow, ws, ids["Contacts created <7 days ago"]).rule
    assert members(session_factory, ids["Contacts created <7 days ago"]) == {"c2"}

    clock.now = NOW  # a worker whose clock (or --now) lags the tick
    copy = create_segment(uow, ws, name="Recent copy", rule=RuleInput(rule=recent_rule), now=NOW)
    edited = edit_segment(uow, ws, ids["Country known"], rule=RuleInput(rule=recent_rule), now=NOW)
    rebuild_segment(uow, ws, ids["Contacts created <7 days ago"], now=NOW)
    for segment_id in (copy.id, edited.id, ids["Contacts created <7 days ago"]):
        assert members(session_factory, segment_id) == {"c2"}

    upsert_contacts(uow, ws, [snapshot("c1", 2, created_at=NOW - DAY + 1)], now=NOW)  # evaluated at the tick's instant
    tick(uow, ws, now=NOW + 8 * DAY + 60)
    for segment_id in (copy.id, edited.id, ids["Contacts created <7 days ago"]):
        assert members(session_factory, segment_id) == {"c2"}
