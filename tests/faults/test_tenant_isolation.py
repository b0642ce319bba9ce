"""Tenant isolation: a property test over several workspaces, on SQLite and PostgreSQL.

The workspaces share contact ids ("c1" in one is not "c1" in another, and their data differ),
segment names and rules, so any query that forgets its workspace mixes them up visibly.
Hypothesis draws the contacts, the segments, an import of one workspace's export into another
(with any conflict policy), edits and further changes; then:

* every segment's members are exactly its own workspace's contacts that match its rule
  (computed here, with the reference ``apply`` over the test's own snapshots), and so is what
  ``iter_members`` streams and what ``explain`` says;
* every event (in the outbox, and as delivered to the host) names a segment and a contact of its
  own workspace;
* an export holds only its workspace's segments, and an import touches only its target;
* an id of another workspace (a segment, a contact, an event), tried through every operation
  that takes one, is refused exactly as an id that exists nowhere: the same error type and the
  same message once the workspace id and the id are masked, naming nothing of the workspace it
  belongs to, and nothing is written.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments import service
from contact_segments.rules import apply
from contact_segments.service import EventView, InlineDispatcher, NotFound, RuleInput, UnitOfWork
from contact_segments.storage import Contact, Membership, MembershipEvent, Segment

from .harness import FaultConfig, report
from .test_deliveries import iso, view

NOW = 1_750_000_000.0
DAY = 86_400.0
CONTACT_IDS = ["c1", "c2", "c3", "c4", "c5"]
RULES = [
    {"in": ["vip", {"var": "tags"}]},
    {"==": [{"var": "country"}, "MY"]},
    {"and": [{"in": ["vip", {"var": "tags"}]}, {"!=": [{"var": "country"}, "MY"]}]},
    {"===": [{"var": "custom_fields.plan"}, "pro"]},
    {"or": [{"==": [{"var": "language"}, "en"]}, {"in": ["b2b", {"var": "tags"}]}]},
]
NAMES = ["VIP", "Malaysia", "Pro", "Leads", "Everyone English"]
NEVER = 10_000_000  #: a segment id no workspace has
FIGURES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    if FIGURES:
        report("tenant_isolation", dict(FIGURES))


@st.composite
def snapshots(draw: st.DrawFn, contact_id: str, version: int) -> dict[str, Any]:
    return {
        "id": contact_id,
        "version": version,
        "tags": draw(st.lists(st.sampled_from(["vip", "b2b"]), unique=True)),
        "country": draw(st.sampled_from(["MY", "SG", None])),
        "language": draw(st.sampled_from(["en", "ms", None])),
        "created_at": iso(NOW - draw(st.sampled_from([1, 10])) * DAY),
        "custom_fields": draw(st.sampled_from([{}, {"plan": "pro"}, {"plan": "free"}])),
    }


class Tenant:
    """One workspace as the test sees it: its snapshots (the model) and its segments."""

    def __init__(self, workspace_id: str) -> None:
        self.id = workspace_id
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.ever: set[str] = set()  #: every contact id it ever had

    def expected(self, rule: Any) -> set[str]:
        return {
            cid for cid, snap in self.snapshots.items() if apply({"!!": [rule]}, {**view(snap), "now": NOW}) is True
        }


def masked(error: BaseException, workspace_id: str, ident: Any) -> str:
    text = str(error).replace(repr(workspace_id), "<workspace>").replace(workspace_id, "<workspace>")
    return re.sub(re.escape(repr(ident)) + "|" + re.escape(str(ident)), "<id>", text)


def refusal(attempt: Callable[[Any], Any], ident: Any) -> BaseException:
    """The error ``attempt(ident)`` refuses the id with (it must)."""
    try:
        result = attempt(ident)
        if hasattr(result, "__next__"):  # a generator refuses on its first batch
            next(result)
    except NotFound as error:
        return error
    raise AssertionError("an id of another workspace was not refused")


def snapshot_of(session_factory: sessionmaker[Session]) -> Any:
    """Everything the service writes, to see that a refusal wrote nothing."""
    with session_factory() as session:
        return (
            sorted(session.execute(select(Segment.id, Segment.name, Segment.rule_version, Segment.updated_at)).tuples()),
            sorted(session.execute(select(Contact.workspace_id, Contact.id, Contact.version, Contact.updated_at)).tuples()),
            sorted(session.execute(select(Membership.segment_id, Membership.contact_id)).tuples()),
            session.scalar(select(func.count()).select_from(MembershipEvent)),
        )


@settings(
    max_examples=FaultConfig.from_env().examples or 6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_operation_crosses_workspaces(session_factory: sessionmaker[Session], data: st.DataObject) -> None:
    delivered: list[EventView] = []
    uow = UnitOfWork(session_factory, InlineDispatcher(session_factory, clock=lambda: NOW, deliver=delivered.extend))
    run = uuid.uuid4().hex[:6]
    tenants = [Tenant(f"ws-{run}-{n}") for n in range(3)]
    version = iter(range(1, 10_000))

    def save(tenant: Tenant, contact_ids: list[str]) -> None:
        batch = [data.draw(snapshots(cid, next(version))) for cid in contact_ids]
        service.upsert_contacts(uow, tenant.id, batch, now=NOW)
        for snap in batch:
            tenant.snapshots[snap["id"]] = snap
            tenant.ever.add(snap["id"])

    for tenant in tenants:
        service.create_workspace(uow, tenant.id, now=NOW)
        for number in data.draw(st.lists(st.integers(0, len(RULES) - 1), min_size=1, max_size=3, unique=True)):
            service.create_segment(uow, tenant.id, name=NAMES[number], rule=RuleInput(rule=RULES[number]), now=NOW)
        save(tenant, data.draw(st.lists(st.sampled_from(CONTACT_IDS), min_size=1, unique=True)))

    # An export of one workspace imported into another.
    source, target = data.draw(st.permutations(tenants))[:2]
    before = service.list_segments(uow, source.id)
    document = service.export_segments(uow, source.id, now=NOW)
    assert {s["name"] for s in document["segments"]} == {v.name for v in before}
    policy = data.draw(st.sampled_from(service.ON_CONFLICT))
    service.import_segments(uow, target.id, document, on_conflict=policy, now=NOW)
    assert service.list_segments(uow, source.id) == before, "an import touched the workspace it came from"

    # More changes and edits, anywhere.
    for _ in range(data.draw(st.integers(0, 3))):
        tenant = data.draw(st.sampled_from(tenants))
        if data.draw(st.booleans()):
            save(tenant, data.draw(st.lists(st.sampled_from(CONTACT_IDS), min_size=1, unique=True)))
        else:
            segment = data.draw(st.sampled_from(service.list_segments(uow, tenant.id)))
            rule = data.draw(st.sampled_from(RULES))
            service.edit_segment(uow, tenant.id, segment.id, rule=RuleInput(rule=rule), now=NOW)

    # Memberships, members listings, explain and events stay in their workspace.
    owner: dict[int, Tenant] = {}
    for tenant in tenants:
        for segment in service.list_segments(uow, tenant.id):
            owner[segment.id] = tenant
            expected = tenant.expected(segment.rule)
            streamed = [cid for batch in service.iter_members(uow, tenant.id, segment.id) for cid in batch]
            assert set(streamed) == expected, f"{tenant.id} {segment.name!r}: members"
            assert segment.member_count == len(expected)
            for cid in tenant.snapshots:
                explained = service.explain(uow, tenant.id, segment.id, cid, now=NOW)
                assert explained["matches"] == explained["member"] == (cid in expected)
    for tenant in tenants:
        for event in service.list_events(uow, tenant.id, limit=100_000):
            assert owner[event.segment_id] is tenant, f"an event of {tenant.id} names another's segment"
            assert event.contact_id is None or event.contact_id in tenant.ever
    for event in delivered:
        tenant = owner[event.segment_id]
        assert event.workspace_id == tenant.id
        assert event.contact_id is None or event.contact_id in tenant.ever

    # Ids of another workspace are refused as ids that exist nowhere, and nothing is written.
    here, there = data.draw(st.permutations(tenants))[:2]
    theirs = data.draw(st.sampled_from([s for s, t in owner.items() if t is there]))
    mine = next(s for s, t in owner.items() if t is here)
    foreign_contact = data.draw(st.sampled_from(sorted(set(CONTACT_IDS) - set(here.snapshots)) or ["nobody"]))
    their_events = service.list_events(uow, there.id, limit=100_000)
    their_name = next(v.name for v in service.list_segments(uow, there.id) if v.id == theirs)
    rule = RuleInput(rule=RULES[0])
    by_segment: list[Callable[[Any], Any]] = [
        lambda ident: service.segment_view(uow, here.id, ident),
        lambda ident: service.edit_segment(uow, here.id, ident, rule=rule, now=NOW),
        lambda ident: service.rename_segment(uow, here.id, ident, name=f"taken {run}", now=NOW),
        lambda ident: service.delete_segment(uow, here.id, ident, now=NOW),
        lambda ident: service.iter_members(uow, here.id, ident),
        lambda ident: service.explain(uow, here.id, ident, next(iter(here.snapshots)), now=NOW),
        lambda ident: service.preview_rule(uow, here.id, rule, segment_id=ident, now=NOW),
        lambda ident: service.save_as_new(uow, here.id, ident, name=f"copy {run}", rule=None, now=NOW),
        lambda ident: service.export_segments(uow, here.id, [ident], now=NOW),
    ]
    written = snapshot_of(session_factory)
    for attempt in by_segment:
        guessed, missing = refusal(attempt, theirs), refusal(attempt, NEVER)
        assert type(guessed) is type(missing)
        assert masked(guessed, here.id, theirs) == masked(missing, here.id, NEVER)
        assert there.id not in str(guessed) and their_name not in str(guessed)
    by_contact: list[Callable[[str], Any]] = [
        lambda cid: service.explain(uow, here.id, mine, cid, now=NOW),
        lambda cid: service.delete_contact(uow, here.id, cid, now=NOW),
    ]
    for attempt in by_contact:
        guessed, missing = refusal(attempt, foreign_contact), refusal(attempt, "nobody-anywhere")
        assert masked(guessed, here.id, foreign_contact) == masked(missing, here.id, "nobody-anywhere")
    assert service.record_message(uow, here.id, foreign_contact, direction="incoming", at=NOW) is False
    if their_events:
        event_id, nowhere = data.draw(st.sampled_from(their_events)).event_id, str(uuid.uuid4())
        def listing(after: str) -> Any:
            return service.list_events(uow, here.id, after_event_id=after)

        guessed, missing = refusal(listing, event_id), refusal(listing, nowhere)
        assert masked(guessed, here.id, event_id) == masked(missing, here.id, nowhere)
    assert snapshot_of(session_factory) == written, "a refused operation wrote something"
    FIGURES["examples"] += 1
    FIGURES["workspaces"] += len(tenants)
    FIGURES["segments checked"] += len(owner)
    FIGURES["events checked"] += len(delivered)
    FIGURES["foreign ids refused like missing ones"] += len(by_segment) + len(by_contact) + bool(their_events)

