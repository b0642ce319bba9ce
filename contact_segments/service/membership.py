"""Membership: who is in which segment, kept right one contact at a time or all at once.

Two ways to compute one thing, proven equal by the property tests:

* :func:`evaluate_contacts` - the compiled Python predicate, for a batch of changed contacts;
* :func:`rebuild_batch` - the compiled SQL condition, set-wise over the workspace's contacts
  (a batch of contact ids, or a chosen set: those a time window or a change stamp names).  The
  tick compares the contacts its time windows catch in SQL too (:mod:`.tick`).

All write the membership diff and its events in the caller's transaction, and derive the events
from the rows actually inserted or deleted (``INSERT ... RETURNING``, with ``ON CONFLICT DO
NOTHING`` unless the caller is the only possible writer, and ``DELETE ... RETURNING``).
Whatever races happen between workers, a contact's events per segment therefore alternate
entered / exited, never twice the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, false, or_
from sqlalchemy.orm import Session

from ..rules import compile_predicate
from ..rules.analysis import TimeThreshold, depends_on_now, fields_read, time_thresholds
from ..rules.sql import rule_to_sql
from ..storage import (
    EventCause,
    EventKind,
    NewEvent,
    Segment,
    contact_view_columns,
    setwise,
)
from ..storage import queries as q


@dataclass(frozen=True)
class CompiledSegment:
    """What the engine needs of a segment's rule, computed once per rule version.

    ``reads`` names the view fields the rule reads, any custom field counting as
    ``custom_fields``: the granularity at which changes are tracked.
    """

    id: int
    rule_version: int
    predicate: Callable[[Mapping[str, Any]], bool]
    reads: frozenset[str]
    uses_now: bool
    thresholds: frozenset[TimeThreshold]
    """The rule's comparisons of a timestamp with ``now`` (see :func:`time_thresholds`)."""
    rule_text: str
    """The rule as canonical JSON (sorted keys)."""


@lru_cache(maxsize=4096)
def _compiled(segment_id: int, rule_version: int, rule_text: str) -> CompiledSegment:
    rule = json.loads(rule_text)
    reads = frozenset(name.partition(".")[0] for name in fields_read(rule))  # custom_fields.x -> custom_fields
    uses_now = depends_on_now(rule)
    thresholds = time_thresholds(rule) if uses_now else frozenset()
    return CompiledSegment(segment_id, rule_version, compile_predicate(rule), reads, uses_now, thresholds, rule_text)


def compiled_segment(segment: Segment) -> CompiledSegment:
    """The segment's compiled rule, from a per-process cache keyed by id and rule version."""
    return _compiled(segment.id, segment.rule_version, json.dumps(segment.rule, sort_keys=True))


def flip_candidates(segment: CompiledSegment, t0: float, t1: float) -> ColumnElement[bool] | None:
    """The contacts whose membership in the segment may differ between ``now = t0`` and
    ``now = t1`` (either order), as a condition on ``contacts``: for each of the rule's time
    thresholds, a range of its timestamp's index (see :meth:`TimeThreshold.window`).  False for
    a rule that does not read ``now``; None for one whose use of the clock has no such window.
    """
    if not segment.uses_now:
        return false()
    if not segment.thresholds:
        return None
    spans = [threshold.window(t0, t1) for threshold in sorted(segment.thresholds)]
    return or_(
        *(
            setwise.time_window_condition(
                span.field, span.low, span.high, include_low=span.low_inclusive, with_null=span.contains(None)
            )
            for span in spans
        )
    )


@dataclass
class Diff:
    """What a membership change did: the (segment, contact) pairs that entered and exited."""

    entered: list[tuple[int, str]] = field(default_factory=list)
    exited: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entered or self.exited)

    def extend(self, other: Diff) -> None:
        self.entered.extend(other.entered)
        self.exited.extend(other.exited)


def _event(
    workspace_id: str, segment_id: int, contact_id: str | None, kind: EventKind, cause: EventCause, version: int, now: float
) -> NewEvent:
    return NewEvent(
        workspace_id=workspace_id,
        segment_id=segment_id,
        contact_id=contact_id,
        kind=kind.value,
        cause=cause.value,
        rule_version=version,
        occurred_at=now,
    )


READ_FIRST_ABOVE = 4
"""(Segment, contact) pairs per contact above which :func:`evaluate_contacts` reads the
contacts' memberships before it writes.  Measured at 1,000,000 contacts (``bench/recompute.py``'s
data): with 3 pairs per contact, most of which change, writing straight away was about 10%
faster; with 5 pairs per new contact, none of them members yet, reading first about 6%."""


def evaluate_contacts(
    session: Session,
    workspace_id: str,
    contact_ids: Iterable[str],
    *,
    now: float,
    cause: EventCause,
    segments: Sequence[Segment] | None = None,
    changed: Mapping[str, frozenset[str] | None] | None = None,
    read_first: bool | None = None,
) -> Diff:
    """Re-evaluate contacts with the compiled predicates and write the membership diff, an
    event per membership that changed.

    ``segments`` defaults to all of the workspace's; ``changed`` maps a contact id to the fields
    that changed (None: all of them, e.g. a new contact), so a segment whose rule reads none of
    them is left alone for that contact.  A contact that no longer exists leaves every segment
    considered.

    Each (segment, contact) pair considered goes to the write as in or out, and the write
    changes (and makes events for) just the pairs that differ: one lookup of the primary key
    per pair.  When the pairs outnumber the contacts more than :data:`READ_FIRST_ABOVE` times
    (a new contact considers every segment), the contacts' memberships are read first, one
    index range per contact, and only the pairs that change are written.  ``read_first``
    decides instead (the two ways give the same result).

    The caller must hold the contacts, so that two evaluations of one contact never interleave:
    their pending rows taken (:func:`~..storage.pending_changes.take`), or the contacts deleted
    in this transaction (:func:`~..storage.queries.delete_contacts`, which waits for an
    evaluation holding them).  It must also hold the workspace row share-locked
    (:func:`.segments.evaluation_instant`), so no tick writes these memberships meanwhile.

    The segments must have been read under a share lock in this transaction (PostgreSQL; the
    default list is): an edit or a rebuild batch locks its segment's row exclusively, so none
    runs while an evaluation holds the segment.  Otherwise an evaluation on the rule before an
    edit could commit after the rebuild for the new rule had looked at its contacts (a member
    left by the old rule, not put back by the new), and an evaluation and a rebuild writing the
    same segment's memberships in different orders would deadlock.
    """
    ids = sorted(set(contact_ids))
    if not ids:
        return Diff()
    if segments is None:
        segments = q.list_segments(session, workspace_id, share_lock=True)
    compiled = [compiled_segment(segment) for segment in segments]
    versions = {c.id: c.rule_version for c in compiled}
    # Only the columns these rules read (``reads`` is complete: it also decides which changes
    # re-evaluate a segment at all).
    views = q.load_contact_views(session, workspace_id, ids, fields=frozenset().union(*(c.reads for c in compiled)))
    # Holding the contacts, the workspace and the segments (see above), nobody else writes
    # these pairs meanwhile: what the write finds is what a read would have found.
    belong: list[tuple[int, str]] = []
    not_belong: list[tuple[int, str]] = []
    for contact_id in ids:
        view = views.get(contact_id)
        if view is None:  # no longer stored: a member of none
            not_belong.extend((c.id, contact_id) for c in compiled)
            continue
        data = {**view, "now": now}
        fields = changed.get(contact_id) if changed is not None else None
        for segment in compiled:
            if fields is not None and not (segment.reads & fields):
                continue
            (belong if segment.predicate(data) else not_belong).append((segment.id, contact_id))
    if read_first is None:
        read_first = len(belong) + len(not_belong) > READ_FIRST_ABOVE * len(ids)
    if read_first:
        current = q.memberships_of(session, workspace_id, ids)
        belong = [(s, c) for s, c in belong if s not in current.get(c, ())]
        not_belong = [(s, c) for s, c in not_belong if s in current.get(c, ())]
    entered, exited = setwise.write_membership_diff(
        session, workspace_id, belong, not_belong, since=now, events=setwise.EventStamp(cause.value, now, versions)
    )
    return Diff(entered, exited)


def rebuild_batch(
    session: Session,
    segment: Segment,
    *,
    after: str | None,
    upto: str | None,
    now: float,
    cause: EventCause,
    events: bool = True,
    contact_ids: Sequence[str] | None = None,
    among_contacts: ColumnElement[bool] | None = None,
) -> Diff:
    """Bring the segment's memberships of contacts with ids in ``(after, upto]`` (and among
    ``contact_ids`` and those satisfying ``among_contacts``, if given) in line with SQL.

    entered = matches - members; exited = members - matches.  With ``events`` false (a first
    build) no per-contact events are written: the caller writes one "built" event instead.
    """
    segment_id = segment.id  # not an ORM attribute read per row
    entered, exited = setwise.reconcile_memberships(
        session,
        segment_id=segment_id,
        workspace_id=segment.workspace_id,
        condition=rule_to_sql(segment.rule, contact_view_columns(), now=now),
        after=after,
        upto=upto,
        contact_ids=contact_ids,
        among_contacts=among_contacts,
        since=now,
        events=setwise.EventStamp(cause.value, now, {segment_id: segment.rule_version}) if events else None,
    )
    return Diff([(segment_id, c) for c in entered], [(segment_id, c) for c in exited])


def built_event(segment: Segment, member_count: int, now: float) -> NewEvent:
    event = _event(segment.workspace_id, segment.id, None, EventKind.BUILT, EventCause.BUILT, segment.rule_version, now)
    event["member_count"] = member_count
    return event
