"""The hot queries, as plain functions over a :class:`~sqlalchemy.orm.Session`.

They run Core statements through ``session.execute`` and never commit: the caller owns the
transaction. Bulk functions take any number of items and send them in batches.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, NotRequired, TypedDict, TypeVar, cast

from sqlalchemy import Table, delete, exists, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contact_segments.storage.models import (
    CONTACT_VIEW_FIELDS,
    MAX_SEGMENTS_PER_WORKSPACE,
    Contact,
    DefaultRegistryEntry,
    Membership,
    MembershipEvent,
    Segment,
    Workspace,
    segment_name_key,
)

BATCH_SIZE = 1000
"""Rows per statement (and ids per ``IN`` list) in bulk functions."""

_contacts = cast(Table, Contact.__table__)
_memberships = cast(Table, Membership.__table__)
_events = cast(Table, MembershipEvent.__table__)
_registry = cast(Table, DefaultRegistryEntry.__table__)

_T = TypeVar("_T")


class ContactView(TypedDict):
    """A contact as rules see it (the evaluation view), without ``now``. Instants are epoch seconds."""

    id: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    country: str | None
    language: str | None
    lifecycle: str | None
    assignee: str | None
    conversation_status: str | None
    last_interacted_channel: str | None
    channels: list[str]
    tags: list[str]
    created_at: float | None
    last_incoming_message_at: float | None
    last_outgoing_message_at: float | None
    custom_fields: dict[str, Any]


class NewEvent(TypedDict):
    """A membership event to append to the outbox (``event_id`` and ``seq`` are assigned)."""

    workspace_id: str
    segment_id: int
    contact_id: str | None  # None for a "built" event
    kind: str  # an EventKind
    cause: str  # an EventCause
    rule_version: int
    occurred_at: float
    member_count: NotRequired[int | None]  # for a "built" event


@dataclass(frozen=True, slots=True)
class TickWindow:
    """The instants a tick covers: ``(start, end]``; ``start`` is None on a workspace's first tick."""

    start: float | None
    end: float


# --- workspaces -------------------------------------------------------------------------------


def ensure_workspace(
    session: Session, workspace_id: str, *, name: str, timezone: str = "UTC", now: float
) -> bool:
    """Create the workspace unless it exists; return whether it was created."""
    statement = (
        _insert(session, cast(Table, Workspace.__table__))
        .values(id=workspace_id, name=name, timezone=timezone, created_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Workspace.id)
    )
    return session.execute(statement).first() is not None


def open_tick_window(session: Session, workspace_id: str, now: float) -> TickWindow | None:
    """Move the workspace's tick watermark to ``now`` and return the window the tick covers.

    Returns None if ``now`` is not after the watermark (or the workspace does not exist). On
    PostgreSQL the workspace row stays locked until the transaction ends, so ticks of one
    workspace run one after another and no window is covered twice.
    """
    start = session.execute(
        select(Workspace.last_tick_at).where(Workspace.id == workspace_id).with_for_update()
    ).first()
    if start is None or (start.last_tick_at is not None and start.last_tick_at >= now):
        return None
    session.execute(update(Workspace).where(Workspace.id == workspace_id).values(last_tick_at=now))
    return TickWindow(start=start.last_tick_at, end=now)


# --- contacts ---------------------------------------------------------------------------------


def upsert_contacts(
    session: Session, workspace_id: str, snapshots: Iterable[Mapping[str, Any]], *, now: float
) -> list[str]:
    """Store each snapshot that is newer than the stored one; return the ids actually stored.

    A snapshot has ``id``, ``version`` and any of the evaluation view's fields (missing ones are
    null, or empty for ``tags``, ``channels`` and ``custom_fields``). Stale and duplicate versions
    are no-ops; within one call, the newest version of an id wins.
    """
    newest: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        row = _contact_row(workspace_id, snapshot, now)
        stored = newest.get(row["id"])
        if stored is None or row["version"] > stored["version"]:
            newest[row["id"]] = row
    if not newest:
        return []

    insert = _insert(session, _contacts)
    statement = insert.on_conflict_do_update(
        index_elements=[_contacts.c.workspace_id, _contacts.c.id],
        set_={name: insert.excluded[name] for name in _CONTACT_UPDATE_COLUMNS},
        where=_contacts.c.version < insert.excluded.version,
    ).returning(_contacts.c.id)
    return [
        contact_id
        for batch in _batched(newest.values(), BATCH_SIZE)
        for contact_id in session.scalars(statement, batch)
    ]


def load_contact_views(
    session: Session, workspace_id: str, contact_ids: Iterable[str], *, for_update: bool = False
) -> dict[str, ContactView]:
    """The evaluation views (without ``now``) of the stored contacts among ``contact_ids``, by id.

    With ``for_update``, the rows stay locked (PostgreSQL; in id order, so concurrent callers do not
    deadlock) until the transaction ends: evaluations of one contact then run one after another,
    each on the newest snapshot.
    """
    columns = [_contacts.c[name] for name in CONTACT_VIEW_FIELDS]
    views: dict[str, ContactView] = {}
    for batch in _batched(sorted(set(contact_ids)), BATCH_SIZE):
        statement = select(*columns).where(
            _contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch)
        )
        if for_update:
            statement = statement.order_by(_contacts.c.id).with_for_update()
        for row in session.execute(statement):
            views[row.id] = cast(ContactView, row._asdict())
    return views


def contact_versions(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> dict[str, int]:
    """The stored version of each stored contact among ``contact_ids``."""
    versions: dict[str, int] = {}
    for batch in _batched(set(contact_ids), BATCH_SIZE):
        rows = session.execute(
            select(_contacts.c.id, _contacts.c.version).where(
                _contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch)
            )
        )
        versions.update(rows.tuples())
    return versions


def delete_contacts(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> list[str]:
    """Delete the contacts; return the ids that existed. Memberships are the caller's to remove."""
    deleted: list[str] = []
    for batch in _batched(set(contact_ids), BATCH_SIZE):
        statement = (
            delete(_contacts)
            .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch))
            .returning(_contacts.c.id)
        )
        deleted.extend(session.scalars(statement))
    return deleted


# --- memberships ------------------------------------------------------------------------------


def add_memberships(
    session: Session, workspace_id: str, pairs: Iterable[tuple[int, str]], *, since: float
) -> list[tuple[int, str]]:
    """Make each ``(segment_id, contact_id)`` a membership; return the pairs that were not already.

    Only the returned pairs have entered, so only they get "entered" events: when two
    transactions add the same membership, exactly one of them sees it returned.
    """
    rows = [
        {"segment_id": segment_id, "contact_id": contact_id, "workspace_id": workspace_id, "since": since}
        for segment_id, contact_id in dict.fromkeys(pairs)
    ]
    statement = (
        _insert(session, _memberships)
        .on_conflict_do_nothing(index_elements=[_memberships.c.segment_id, _memberships.c.contact_id])
        .returning(_memberships.c.segment_id, _memberships.c.contact_id)
    )
    return [
        (segment_id, contact_id)
        for batch in _batched(rows, BATCH_SIZE)
        for segment_id, contact_id in session.execute(statement, batch).tuples()
    ]


def remove_memberships(session: Session, pairs: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Delete the ``(segment_id, contact_id)`` memberships; return the pairs that existed."""
    key = tuple_(_memberships.c.segment_id, _memberships.c.contact_id)
    removed: list[tuple[int, str]] = []
    for batch in _batched(set(pairs), BATCH_SIZE):
        statement = (
            delete(_memberships)
            .where(key.in_(batch))
            .returning(_memberships.c.segment_id, _memberships.c.contact_id)
        )
        removed.extend(session.execute(statement).tuples())
    return removed


def memberships_of(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> dict[str, set[int]]:
    """The segment ids each of ``contact_ids`` is a member of (contacts with none are left out)."""
    segments: dict[str, set[int]] = {}
    for batch in _batched(set(contact_ids), BATCH_SIZE):
        rows = session.execute(
            select(_memberships.c.contact_id, _memberships.c.segment_id).where(
                _memberships.c.workspace_id == workspace_id, _memberships.c.contact_id.in_(batch)
            )
        )
        for contact_id, segment_id in rows.tuples():
            segments.setdefault(contact_id, set()).add(segment_id)
    return segments


def member_counts(session: Session, workspace_id: str) -> dict[int, int]:
    """Members per segment of the workspace (segments with none are left out)."""
    rows = session.execute(
        select(_memberships.c.segment_id, func.count())
        .where(_memberships.c.workspace_id == workspace_id)
        .group_by(_memberships.c.segment_id)
    )
    return dict(rows.tuples().all())


def iter_member_ids(
    session: Session, segment_id: int, *, batch_size: int = BATCH_SIZE
) -> Iterator[list[str]]:
    """A segment's member ids in batches, in contact id order (keyset pagination on the key)."""
    after: str | None = None
    while True:
        statement = (
            select(_memberships.c.contact_id)
            .where(_memberships.c.segment_id == segment_id)
            .order_by(_memberships.c.contact_id)
            .limit(batch_size)
        )
        if after is not None:
            statement = statement.where(_memberships.c.contact_id > after)
        batch = list(session.scalars(statement))
        if not batch:
            return
        yield batch
        after = batch[-1]


# --- segments ---------------------------------------------------------------------------------


def claim_segment_slot(session: Session, workspace_id: str) -> int | None:
    """Count one more segment in the workspace; return the new count, or None at the limit.

    The conditional ``UPDATE`` locks the workspace row, so concurrent creators queue and the
    count never passes :data:`MAX_SEGMENTS_PER_WORKSPACE` (a CHECK backs this up). None also
    means the workspace does not exist.
    """
    statement = (
        update(Workspace)
        .where(Workspace.id == workspace_id, Workspace.segment_count < MAX_SEGMENTS_PER_WORKSPACE)
        .values(segment_count=Workspace.segment_count + 1)
        .returning(Workspace.segment_count)
    )
    return session.scalar(statement)


def release_segment_slot(session: Session, workspace_id: str) -> int | None:
    """Count one segment less in the workspace; return the new count (None: no such workspace)."""
    statement = (
        update(Workspace)
        .where(Workspace.id == workspace_id, Workspace.segment_count > 0)
        .values(segment_count=Workspace.segment_count - 1)
        .returning(Workspace.segment_count)
    )
    return session.scalar(statement)


def list_segments(session: Session, workspace_id: str) -> Sequence[Segment]:
    """The workspace's segments, oldest first."""
    return session.scalars(
        select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id)
    ).all()


def segment_name_taken(
    session: Session, workspace_id: str, name: str, *, exclude_segment_id: int | None = None
) -> bool:
    """Whether another segment of the workspace has this name (trimmed, case-folded).

    A courtesy check for a friendly message: the unique constraint is what enforces the rule
    (see :func:`is_duplicate_segment_name`).
    """
    condition = (Segment.workspace_id == workspace_id) & (Segment.name_key == segment_name_key(name))
    if exclude_segment_id is not None:
        condition &= Segment.id != exclude_segment_id
    return bool(session.scalar(select(exists().where(condition))))


SEGMENT_NAME_CONSTRAINT = "uq_segments_workspace_id_name_key"


def is_duplicate_segment_name(error: IntegrityError) -> bool:
    """Whether ``error`` is the segment name rule's unique constraint failing."""
    diagnostics = getattr(error.orig, "diag", None)  # psycopg
    if diagnostics is not None:
        return diagnostics.constraint_name == SEGMENT_NAME_CONSTRAINT
    return "segments.workspace_id, segments.name_key" in str(error.orig)  # sqlite3


# --- the default-segment registry -------------------------------------------------------------


def claim_defaults(
    session: Session, workspace_id: str, default_keys: Iterable[str], *, registry_version: int
) -> list[str]:
    """Record the defaults as seeded; return the keys that were not recorded before.

    Seed only the returned keys: a default once recorded is never seeded again, even if its segment
    was renamed or deleted, and of two concurrent seeders only one gets each key.
    """
    rows = [
        {"workspace_id": workspace_id, "default_key": key, "registry_version": registry_version}
        for key in dict.fromkeys(default_keys)
    ]
    if not rows:
        return []
    statement = (
        _insert(session, _registry)
        .on_conflict_do_nothing(index_elements=[_registry.c.workspace_id, _registry.c.default_key])
        .returning(_registry.c.default_key)
    )
    return list(session.scalars(statement, rows))


def link_default_segment(session: Session, workspace_id: str, default_key: str, segment_id: int) -> None:
    """Point a recorded default at the segment seeded for it."""
    session.execute(
        update(_registry)
        .where(_registry.c.workspace_id == workspace_id, _registry.c.default_key == default_key)
        .values(segment_id=segment_id)
    )


def seeded_defaults(session: Session, workspace_id: str) -> dict[str, int | None]:
    """The workspace's recorded default keys, each with its segment id (None once deleted)."""
    rows = session.execute(
        select(_registry.c.default_key, _registry.c.segment_id).where(
            _registry.c.workspace_id == workspace_id
        )
    )
    return dict(rows.tuples().all())


# --- the event outbox -------------------------------------------------------------------------


def append_events(session: Session, events: Iterable[NewEvent]) -> list[str]:
    """Append events to the outbox, in order (``seq`` grows); return their new event ids."""
    rows = [{"member_count": None, **event, "event_id": str(uuid.uuid4())} for event in events]
    for batch in _batched(rows, BATCH_SIZE):
        session.execute(_insert(session, _events), batch)
    return [row["event_id"] for row in rows]


def fetch_undelivered_events(
    session: Session, *, workspace_id: str | None = None, limit: int = BATCH_SIZE
) -> Sequence[MembershipEvent]:
    """Undelivered events, oldest first, locked for delivery.

    On PostgreSQL the rows stay locked until the transaction ends, and rows another transaction has
    locked are skipped, so concurrent deliverers take disjoint batches. (Per-contact order across
    deliverers is then the caller's concern: e.g. one deliverer per workspace.)
    """
    statement = (
        select(MembershipEvent)
        .where(MembershipEvent.delivered_at.is_(None))
        .order_by(MembershipEvent.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if workspace_id is not None:
        statement = statement.where(MembershipEvent.workspace_id == workspace_id)
    return session.scalars(statement).all()


def mark_events_delivered(session: Session, seqs: Iterable[int], *, now: float) -> None:
    """Record the events as delivered at ``now``."""
    for batch in _batched(set(seqs), BATCH_SIZE):
        session.execute(update(_events).where(_events.c.seq.in_(batch)).values(delivered_at=now))


def record_failed_delivery(session: Session, seqs: Iterable[int]) -> None:
    """Count one more failed delivery attempt of each event."""
    for batch in _batched(set(seqs), BATCH_SIZE):
        session.execute(
            update(_events).where(_events.c.seq.in_(batch)).values(attempts=_events.c.attempts + 1)
        )


def list_events(
    session: Session, workspace_id: str, *, after_event_id: str | None = None, limit: int = BATCH_SIZE
) -> Sequence[MembershipEvent]:
    """The workspace's events (delivered or not) in order, after ``after_event_id`` if given.

    Raises LookupError if ``after_event_id`` is not an event of the workspace.
    """
    statement = (
        select(MembershipEvent)
        .where(MembershipEvent.workspace_id == workspace_id)
        .order_by(MembershipEvent.seq)
        .limit(limit)
    )
    if after_event_id is not None:
        after_seq = session.scalar(
            select(MembershipEvent.seq).where(
                MembershipEvent.workspace_id == workspace_id, MembershipEvent.event_id == after_event_id
            )
        )
        if after_seq is None:
            raise LookupError(f"no event {after_event_id!r} in workspace {workspace_id!r}")
        statement = statement.where(MembershipEvent.seq > after_seq)
    return session.scalars(statement).all()


# --- helpers ----------------------------------------------------------------------------------

_SNAPSHOT_FIELDS = frozenset(CONTACT_VIEW_FIELDS) | {"version"}
_CONTACT_UPDATE_COLUMNS = (*(name for name in CONTACT_VIEW_FIELDS if name != "id"), "version", "updated_at")


def _contact_row(workspace_id: str, snapshot: Mapping[str, Any], now: float) -> dict[str, Any]:
    unknown = snapshot.keys() - _SNAPSHOT_FIELDS
    if unknown:
        raise ValueError(f"unknown contact fields: {', '.join(sorted(unknown))}")
    row = dict.fromkeys(CONTACT_VIEW_FIELDS) | dict(snapshot)
    row["tags"] = list(row["tags"] or ())
    row["channels"] = list(row["channels"] or ())
    row["custom_fields"] = dict(row["custom_fields"] or {})
    row["workspace_id"] = workspace_id
    row["updated_at"] = now
    return row


def _insert(session: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with the database's ``ON CONFLICT`` support."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database: {dialect}")


def _batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
