"""Duplicate and out-of-order deliveries, on SQLite and PostgreSQL (no workers: follow-up work
runs inline, as in the embedded default).

A host's snapshots reach us late, twice, or in the wrong order (a retried request, a queue
without ordering).  Whatever the order, the state must be the one the newest versions give, and
the events must be exactly the membership changes between the states actually stored: a stale
or duplicate snapshot changes nothing and sends nothing.  The same holds for our own commands
delivered twice (an evaluation, a rebuild, a delivery run again).

The expectation is computed independently, by a model: the newest version of each contact seen
so far, evaluated with the reference ``apply`` over a view built here from the test's own
snapshots.  After every host call the outbox must hold exactly the model's membership diff.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments import service
from contact_segments.rules import apply
from contact_segments.rules.catalog import STRING_FIELDS, TIMESTAMP_FIELDS
from contact_segments.service import EventView, InlineDispatcher, RuleInput, UnitOfWork
from contact_segments.storage import Contact, Membership, MembershipEvent, Segment

from .harness import FaultConfig, report

FIGURES: Counter[str] = Counter()

NOW = 1_750_000_000.0
DAY = 86_400.0

RULES = {
    "Promotion in Malaysia": {"and": [{"in": ["promotion", {"var": "tags"}]}, {"==": [{"var": "country"}, "MY"]}]},
    "VIP or Singapore": {"or": [{"in": ["vip", {"var": "tags"}]}, {"==": [{"var": "country"}, "SG"]}]},
    "Pro plan": {"===": [{"var": "custom_fields.plan"}, "pro"]},
    "Many orders": {">=": [{"var": "custom_fields.orders"}, 3]},
}


def iso(instant: float | None) -> str | None:
    return None if instant is None else datetime.fromtimestamp(instant, UTC).isoformat()


def view(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's evaluation view, built here, not by the code under test."""
    result: dict[str, Any] = {"id": snapshot["id"]}
    result |= {name: snapshot.get(name) for name in STRING_FIELDS}
    result["tags"] = list(snapshot.get("tags") or [])
    result["channels"] = list(snapshot.get("channels") or [])
    result["custom_fields"] = dict(snapshot.get("custom_fields") or {})
    for name in TIMESTAMP_FIELDS:
        value = snapshot.get(name)
        result[name] = None if value is None else datetime.fromisoformat(value).timestamp()
    return result


@st.composite
def snapshot_contents(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "tags": draw(st.lists(st.sampled_from(["promotion", "vip", "b2b"]), unique=True, max_size=3)),
        "country": draw(st.sampled_from(["MY", "SG", "", None])),
        "language": draw(st.sampled_from(["en", None])),
        "created_at": iso(NOW - draw(st.sampled_from([1, 6.9, 7.1, 30])) * DAY),
        "last_incoming_message_at": iso(draw(st.sampled_from([None, NOW - DAY, NOW - 31 * DAY]))),
        "custom_fields": draw(
            st.fixed_dictionaries(
                {}, optional={"plan": st.sampled_from(["free", "pro"]), "orders": st.integers(0, 5)}
            )
        ),
    }


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Host calls (batches of snapshots): every version of every contact, most of them twice,
    in a shuffled order, cut into batches of 1 to 4."""
    contacts = draw(st.integers(1, 5))
    snapshots = [
        {"id": f"c{n}", "version": version, **draw(snapshot_contents())}
        for n in range(contacts)
        for version in range(1, draw(st.integers(1, 4)) + 1)
    ]
    sent = snapshots + [s for s in snapshots if draw(st.booleans())]  # duplicates
    sent = draw(st.permutations(sent))
    batches, start = [], 0
    while start < len(sent):
        size = draw(st.integers(1, 4))
        batches.append(sent[start : start + size])
        start += size
    return batches


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if FIGURES:
        report("duplicate_and_out_of_order_deliveries", dict(FIGURES))


class Host:
    """The events delivered to the host, in delivery order."""

    def __init__(self) -> None:
        self.events: list[EventView] = []

    def __call__(self, events: list[EventView]) -> None:
        self.events.extend(events)


def membership(session_factory: sessionmaker[Session], workspace_id: str) -> set[tuple[int, str]]:
    with session_factory() as session:
        rows = session.execute(
            select(Membership.segment_id, Membership.contact_id).where(Membership.workspace_id == workspace_id)
        )
        return set(rows.tuples().all())


def expected_membership(segments: dict[int, Any], newest: dict[str, dict[str, Any]]) -> set[tuple[int, str]]:
    return {
        (segment_id, contact_id)
        for segment_id, rule in segments.items()
        for contact_id, snapshot in newest.items()
        if apply({"!!": [rule]}, {**view(snapshot), "now": NOW}) is True
    }


def new_workspace(session_factory: sessionmaker[Session], host: Host) -> tuple[UnitOfWork, str, dict[int, Any]]:
    """A workspace with the five defaults and our segments, all built before any contact."""
    uow = UnitOfWork(session_factory, InlineDispatcher(session_factory, clock=lambda: NOW, deliver=host))
    workspace_id = f"ws-{uuid.uuid4().hex[:8]}"
    service.create_workspace(uow, workspace_id, now=NOW)
    for name, rule in RULES.items():
        service.create_segment(uow, workspace_id, name=name, rule=RuleInput(rule=rule), now=NOW)
    with session_factory() as session:
        segments = dict(
            session.execute(select(Segment.id, Segment.rule).where(Segment.workspace_id == workspace_id)).tuples().all()
        )
    return uow, workspace_id, segments


def changes(events: list[EventView]) -> Counter[tuple[int, str | None, str]]:
    return Counter((e.segment_id, e.contact_id, e.kind) for e in events if e.kind != "built")


@settings(
    max_examples=FaultConfig.from_env().examples or 8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batches=deliveries(), replay=st.randoms(use_true_random=False))
def test_duplicate_and_shuffled_snapshots_leave_the_newest_state_and_no_spurious_event(
    session_factory: sessionmaker[Session], batches: list[list[dict[str, Any]]], replay: Any
) -> None:
    host = Host()
    uow, workspace_id, segments = new_workspace(session_factory, host)
    newest: dict[str, dict[str, Any]] = {}
    before: set[tuple[int, str]] = set()
    for batch in batches:
        delivered = len(host.events)
        service.upsert_contacts(uow, workspace_id, batch, now=NOW)
        for snapshot in batch:  # the model: a snapshot counts only if newer than what is kept
            if snapshot["version"] > newest.get(snapshot["id"], {"version": 0})["version"]:
                newest[snapshot["id"]] = snapshot
        after = expected_membership(segments, newest)
        expected = Counter({(s, c, "entered"): 1 for s, c in after - before})
        expected.update({(s, c, "exited"): 1 for s, c in before - after})
        assert changes(host.events[delivered:]) == expected, f"after host call {batch}"
        before = after
        FIGURES["host calls"] += 1
        FIGURES["events checked"] += sum(expected.values())

    with session_factory() as session:
        stored = dict(
            session.execute(select(Contact.id, Contact.version).where(Contact.workspace_id == workspace_id)).tuples().all()
        )
        outbox = session.scalar(select(func.count()).where(MembershipEvent.workspace_id == workspace_id))
    assert stored == {contact_id: snapshot["version"] for contact_id, snapshot in newest.items()}
    assert membership(session_factory, workspace_id) == before
    assert outbox == len(host.events), "every event of the outbox was delivered, once"

    # Everything again, in another order, then our own commands twice: nothing changes, no event.
    delivered = len(host.events)
    again = [snapshot for batch in batches for snapshot in batch]
    replay.shuffle(again)
    for start in range(0, len(again), 3):
        service.upsert_contacts(uow, workspace_id, again[start : start + 3], now=NOW)
    for _ in range(2):
        service.evaluate_pending(uow, workspace_id, now=NOW)
        for segment_id in segments:
            with session_factory() as session:
                version = session.scalar(select(Segment.rule_version).where(Segment.id == segment_id))
            result = service.rebuild_segment(uow, workspace_id, segment_id, rule_version=version, now=NOW)
            assert (result.entered, result.exited) == (0, 0)
        service.deliver_events(uow, workspace_id, host, now=NOW)
    assert host.events[delivered:] == []
    assert membership(session_factory, workspace_id) == before
    sent = [snapshot for batch in batches for snapshot in batch]
    FIGURES["examples (workspaces)"] += 1
    FIGURES["snapshots delivered"] += len(sent) + len(again)
    FIGURES["of them stale or duplicate"] += len(sent) + len(again) - len(newest)
    FIGURES["spurious events"] += 0  # any would have failed the example


def test_a_stale_snapshot_between_two_newer_ones_changes_nothing(session_factory: sessionmaker[Session]) -> None:
    """The ordering case the host meets most: v2 arrives, then v1 late, then v3; and v1 again."""
    host = Host()
    uow, workspace_id, segments = new_workspace(session_factory, host)
    promo = next(s for s, rule in segments.items() if rule == RULES["Promotion in Malaysia"])
    match = {"tags": ["promotion"], "country": "MY"}
    for version, fields in [(2, match), (1, {"tags": []}), (2, {"tags": []}), (3, {**match, "language": "en"}), (1, {})]:
        service.upsert_contacts(uow, workspace_id, [{"id": "c1", "version": version, **fields}], now=NOW)
    assert [e.kind for e in host.events if e.segment_id == promo] == ["built", "entered"]
    assert membership(session_factory, workspace_id) >= {(promo, "c1")}


def test_a_first_build_delivered_again_after_the_build_moves_no_contact_silently(
    session_factory: sessionmaker[Session],
) -> None:
    """A first build writes no per-contact events (one "built" event instead).  Delivered again
    once the segment is built (a worker that died before acknowledging the message: Celery
    delivers at least once), it must not move a contact silently: here a contact saved but not
    yet evaluated would enter with no "entered" event, and its evaluation would find nothing
    left to do."""
    host = Host()
    uow, workspace_id, segments = new_workspace(session_factory, host)
    vip = next(s for s, rule in segments.items() if rule == RULES["VIP or Singapore"])
    bare = UnitOfWork(session_factory)  # stores, evaluates nothing: the evaluation is pending
    service.upsert_contacts(bare, workspace_id, [{"id": "c1", "version": 1, "tags": ["vip"]}], now=NOW)

    service.rebuild_segment(uow, workspace_id, vip, rule_version=1, now=NOW, first_build=True)  # again
    service.evaluate_pending(uow, workspace_id, now=NOW)
    service.deliver_events(uow, workspace_id, host, now=NOW)

    assert (vip, "c1") in membership(session_factory, workspace_id)
    assert [e.kind for e in host.events if e.segment_id == vip] == ["built", "entered"]
