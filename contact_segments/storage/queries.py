"""The hot queries, as plain functions over a :class:`~sqlalchemy.orm.Session`.

They run Core statements through ``session.execute`` and never commit: the caller owns the
transaction. Bulk functions take any number of items and send them in batches of
:data:`BATCH_SIZE`. On PostgreSQL a batch travels as one parameter (a JSON document or an array)
rather than one placeholder per value, which psycopg would spend longer preparing than the server
spends running the statement.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from itertools import islice
from typing import Any, NotRequired, TypedDict, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Double,
    Executable,
    Result,
    Select,
    Table,
    TableValuedAlias,
    Text,
    any_,
    bindparam,
    case,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    tuple_,
    union,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contact_segments.storage.ids import new_uuid7
from contact_segments.storage.models import (
    ALL_PENDING,
    CONTACT_VIEW_FIELDS,
    MAX_SEGMENTS_PER_WORKSPACE,
    TRACKED_FIELDS,
    Contact,
    ContactTombstone,
    DefaultRegistryEntry,
    DeliveryRequest,
    Membership,
    MembershipEvent,
    PendingChange,
    Segment,
    SegmentChange,
    Workspace,
    segment_name_key,
)

BATCH_SIZE = 1000
"""Rows (or ids) per statement in bulk functions."""

SEGMENT_NAME_CONSTRAINT = "uq_segments_workspace_id_name_key"

_workspaces = cast(Table, Workspace.__table__)
_segments = cast(Table, Segment.__table__)
_contacts = cast(Table, Contact.__table__)
_memberships = cast(Table, Membership.__table__)
_events = cast(Table, MembershipEvent.__table__)
_segment_changes = cast(Table, SegmentChange.__table__)
_tombstones = cast(Table, ContactTombstone.__table__)
_pending = cast(Table, PendingChange.__table__)
_requests = cast(Table, DeliveryRequest.__table__)
_registry = cast(Table, DefaultRegistryEntry.__table__)

_DELIVERY_LOCK_CLASS = 0x5E6
"""The seed of the hash of a workspace id that keys its delivery advisory lock (PostgreSQL)."""

_T = TypeVar("_T")
Insert = postgresql.Insert | sqlite.Insert


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
    """A membership event to append to the outbox (``seq`` and ``event_id`` are assigned)."""

    workspace_id: str
    segment_id: int
    contact_id: str | None  # None for a "built" event
    kind: str  # an EventKind
    cause: str  # an EventCause
    rule_version: int
    occurred_at: float
    member_count: NotRequired[int | None]  # for a "built" event


SegmentRow = tuple[int, int, str]
"""A segment as evaluating contacts needs it: id, rule version and rule (its JSON text)."""


@dataclass(frozen=True, slots=True)
class TickWindow:
    """The instants a tick covers: ``(start, end]``; ``start`` is None on a workspace's first tick."""

    start: float | None
    end: float
    segments: tuple[SegmentRow, ...] = ()
    """The workspace's segments (:func:`segment_rows`), read after the watermark moved."""


# --- workspaces -------------------------------------------------------------------------------


def ensure_workspace(
    session: Session, workspace_id: str, *, name: str, timezone: str = "UTC", now: float
) -> bool:
    """Create the workspace unless it exists; return whether it was created."""
    row = {"id": workspace_id, "name": name, "timezone": timezone, "created_at": now}

    def unless_known(insert: Insert) -> Executable:
        return insert.on_conflict_do_nothing(index_elements=[_workspaces.c.id]).returning(_workspaces.c.id)

    return _bulk_insert(session, _workspaces, [row], unless_known).first() is not None


def _move_watermark() -> Select[Any]:
    """PostgreSQL: one statement, ``WITH moved AS (UPDATE ... FROM (SELECT ... FOR UPDATE)
    before ... RETURNING`` the watermark as it was``) SELECT`` it beside each of the workspace's
    segment rows (:data:`_SEGMENT_ROWS`, share-locked in a lateral subquery, so after the
    workspace row is locked, and only if the watermark moved).  A tick that waited for another
    reads the watermark it moved.  Built once (a tick runs every minute for every workspace)."""
    row = _workspaces.c
    workspace_id = bindparam("workspace_id", type_=Text())
    before = select(row.id, row.last_tick_at).where(row.id == workspace_id).with_for_update().subquery("before")
    now = bindparam("now", type_=Double())
    moved = (
        update(_workspaces)
        .where(row.id == before.c.id, or_(before.c.last_tick_at.is_(None), before.c.last_tick_at < now))
        .values(last_tick_at=now)
        .returning(before.c.last_tick_at)
        .cte("moved")
    )
    segments = _SEGMENT_ROWS.lateral("segments")
    return select(moved.c.last_tick_at, *segments.c).select_from(moved.outerjoin(segments, true())).order_by(segments.c.id)


_SEGMENT_ROWS = (
    select(_segments.c.id, _segments.c.rule_version, cast_(_segments.c.rule, Text).label("rule"))
    .where(_segments.c.workspace_id == bindparam("workspace_id", type_=Text()))
    .order_by(_segments.c.id)
    .with_for_update(read=True)
)
_MOVE_WATERMARK = _move_watermark()


def segment_rows(session: Session, workspace_id: str) -> tuple[SegmentRow, ...]:
    """The workspace's segments, oldest first, as :data:`SegmentRow` (the rule as text, not
    parsed); share-locked until the transaction ends (PostgreSQL), as :func:`list_segments`
    with ``share_lock`` locks them.  Built once: every evaluation runs it."""
    return tuple(session.execute(_SEGMENT_ROWS, {"workspace_id": workspace_id}).tuples())


def open_tick_window(session: Session, workspace_id: str, now: float) -> TickWindow | None:
    """Move the workspace's tick watermark to ``now`` and return the window the tick covers,
    with the workspace's segments (:func:`segment_rows`, read after the watermark's lock).

    Returns None if ``now`` is not after the watermark (or the workspace does not exist). On
    PostgreSQL the workspace row stays locked until the transaction ends, so ticks of one
    workspace run one after another and no instant is covered twice; there it is one statement.
    """
    # Core statements on the table: the ORM's bulk UPDATE path costs a millisecond a call.
    row = _workspaces.c
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_MOVE_WATERMARK, {"workspace_id": workspace_id, "now": now}).all()
        if not rows:
            return None
        segments = tuple((ident, version, rule) for _, ident, version, rule in rows if ident is not None)
        return TickWindow(start=rows[0].last_tick_at, end=now, segments=segments)
    watermark = session.execute(select(row.last_tick_at).where(row.id == workspace_id).with_for_update()).first()
    if watermark is None or (watermark.last_tick_at is not None and watermark.last_tick_at >= now):
        return None
    session.execute(update(_workspaces).where(row.id == workspace_id).values(last_tick_at=now))
    return TickWindow(start=watermark.last_tick_at, end=now, segments=segment_rows(session, workspace_id))


# --- contacts ---------------------------------------------------------------------------------


def upsert_contacts(
    session: Session, workspace_id: str, snapshots: Iterable[Mapping[str, Any]], *, now: float
) -> list[str]:
    """Store each snapshot that is newer than the stored one; return the ids actually stored.

    A snapshot has ``id``, ``version`` and any of the evaluation view's fields (missing ones are
    null, or empty for ``tags``, ``channels`` and ``custom_fields``); it replaces the stored one
    whole. Stale and duplicate versions are no-ops; within one call, the newest version of an id
    wins. Concurrent upserts of one contact leave the newest version, whatever their order.
    """
    newest: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        row = _contact_row(workspace_id, snapshot, now)
        known = newest.get(row["id"])
        if known is None or row["version"] > known["version"]:
            newest[row["id"]] = row

    def if_newer(insert: Insert) -> Executable:
        return insert.on_conflict_do_update(
            index_elements=[_contacts.c.workspace_id, _contacts.c.id],
            set_={name: insert.excluded[name] for name in _CONTACT_UPDATE_COLUMNS}
            | {"changed_mask": _changed_mask(insert.excluded)},
            where=_contacts.c.version < insert.excluded.version,
        ).returning(_contacts.c.id, _contacts.c.changed_mask)

    # A deleted contact's snapshot no newer than its tombstone is stale: it stays deleted.  (A
    # save racing the deletion itself, within the same instant, can still bring it back.)
    buried = tombstone_versions(session, workspace_id, newest)
    rows = [  # in id order: one lock order for all callers
        newest[contact_id] for contact_id in sorted(newest) if newest[contact_id]["version"] > buried.get(contact_id, -1)
    ]
    stored: dict[str, int] = {}
    for batch in batched(rows, BATCH_SIZE):
        stored.update(_bulk_insert(session, _contacts, batch, if_newer).tuples().all())
    mark_pending(session, workspace_id, stored)
    return list(stored)


def advance_timestamp(session: Session, workspace_id: str, contact_id: str, field: str, at: float) -> bool:
    """Move a contact's timestamp ``field`` forward to ``at`` (never back) and mark it pending.

    Returns whether the contact exists and the timestamp moved.
    """
    column = _contacts.c[field]
    bit = 1 << TRACKED_FIELDS.index(field)
    statement = (
        update(_contacts)
        .where(
            _contacts.c.workspace_id == workspace_id,
            _contacts.c.id == contact_id,
            column.is_(None) | (column < at),
        )
        .values({field: at, "changed_mask": bit})
        .returning(_contacts.c.id)
    )
    if session.execute(statement).first() is None:
        return False
    mark_pending(session, workspace_id, {contact_id: bit})
    return True


def mark_pending(session: Session, workspace_id: str, masks: Mapping[str, int]) -> None:
    """Add the changed fields' bits (contact id -> mask) to the contacts' pending changes.

    Called after the contacts' rows were written in the same transaction: a writer holds a
    contact's row before its pending row, as every writer does (see :mod:`.pending_changes`).
    An insert, or an OR into the row that is there: concurrent writers never lose a bit.
    """
    rows = [
        {"workspace_id": workspace_id, "contact_id": contact_id, "mask": mask}
        for contact_id, mask in sorted(masks.items())  # one lock order for all callers
        if mask
    ]

    def merged(insert: Insert) -> Executable:
        return insert.on_conflict_do_update(
            index_elements=[_pending.c.workspace_id, _pending.c.contact_id],
            set_={"mask": _pending.c.mask.op("|")(insert.excluded.mask)},
        )

    for batch in batched(rows, BATCH_SIZE):
        _bulk_insert(session, _pending, batch, merged)


def load_contact_views(
    session: Session, workspace_id: str, contact_ids: Iterable[str], *, fields: Collection[str] | None = None
) -> dict[str, ContactView]:
    """The evaluation views (without ``now``) of the stored contacts among ``contact_ids``, by id.

    With ``fields``, a view holds just those fields (and ``id``): what the rules to evaluate read,
    so that a column no rule reads (``custom_fields`` and its JSON, say) is neither sent nor
    parsed.
    """
    names = _view_names(fields)
    postgresql_ = _dialect(session) == "postgresql"
    views: dict[str, ContactView] = {}
    for batch in batched(sorted(set(contact_ids)), BATCH_SIZE):
        if postgresql_:
            rows = session.execute(_views_statement(names), {"workspace_id": workspace_id, "ids": batch}).all()
        else:
            columns = [_contacts.c[name] for name in names]
            statement = select(*columns).where(_contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch))
            rows = session.execute(statement).all()  # fetched at once: row by row costs twice as much
        views.update((row[0], cast(ContactView, dict(zip(names, row, strict=True)))) for row in rows)
    return views


@lru_cache(maxsize=64)
def _views_statement(names: tuple[str, ...]) -> Select[Any]:
    """PostgreSQL: ``SELECT <names> FROM contacts WHERE workspace_id = :workspace_id AND id =
    ANY(:ids)``, built once per set of fields (every evaluation runs it)."""
    return select(*(_contacts.c[name] for name in names)).where(
        _contacts.c.workspace_id == bindparam("workspace_id", type_=Text()),
        _contacts.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(Text()))),
    )


def _view_names(fields: Collection[str] | None) -> tuple[str, ...]:
    """The view's fields (``id`` first) that a view restricted to ``fields`` holds (None: all)."""
    if fields is None:
        return CONTACT_VIEW_FIELDS
    if not set(fields) <= set(CONTACT_VIEW_FIELDS):
        raise ValueError(f"not fields of the evaluation view: {sorted(set(fields) - set(CONTACT_VIEW_FIELDS))}")
    return tuple(n for n in CONTACT_VIEW_FIELDS if n == "id" or n in fields)


def contact_versions(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> dict[str, int]:
    """The stored version of each stored contact among ``contact_ids``."""
    versions: dict[str, int] = {}
    for batch in batched(set(contact_ids), BATCH_SIZE):
        rows = session.execute(
            select(_contacts.c.id, _contacts.c.version).where(
                _contacts.c.workspace_id == workspace_id, among(session, _contacts.c.id, batch)
            )
        )
        versions.update(rows.tuples().all())
    return versions


def delete_contacts(session: Session, workspace_id: str, contact_ids: Iterable[str], *, now: float) -> list[str]:
    """Delete the contacts, leaving a tombstone with each one's version; return the ids that
    existed. Memberships are the caller's to remove.

    The contacts' pending changes go too, after their rows: deleting a pending row that an
    evaluation has taken waits for that evaluation's transaction to end, so the caller then
    starts from the memberships it wrote (see :mod:`.pending_changes`).
    """
    deleted: list[str] = []
    for batch in batched(sorted(set(contact_ids)), BATCH_SIZE):
        statement = (
            delete(_contacts)
            .where(_contacts.c.workspace_id == workspace_id, among(session, _contacts.c.id, batch))
            .returning(_contacts.c.id, _contacts.c.version)
        )
        rows = session.execute(statement).tuples().all()
        if rows:
            tombstones = [
                {"workspace_id": workspace_id, "contact_id": contact_id, "version": version, "deleted_at": now}
                for contact_id, version in rows
            ]
            insert = insert_for(session, _tombstones)
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=[_tombstones.c.workspace_id, _tombstones.c.contact_id],
                    set_={"version": insert.excluded.version, "deleted_at": insert.excluded.deleted_at},
                ),
                tombstones,
            )
        session.execute(
            delete(_pending).where(_pending.c.workspace_id == workspace_id, among(session, _pending.c.contact_id, batch))
        )
        deleted.extend(contact_id for contact_id, _ in rows)
    return deleted


def tombstone_versions(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> dict[str, int]:
    """The version each of ``contact_ids`` had when it was deleted (those never deleted are left out)."""
    versions: dict[str, int] = {}
    for batch in batched(sorted(set(contact_ids)), BATCH_SIZE):
        rows = session.execute(
            select(_tombstones.c.contact_id, _tombstones.c.version).where(
                _tombstones.c.workspace_id == workspace_id, among(session, _tombstones.c.contact_id, batch)
            )
        )
        versions.update(rows.tuples().all())
    return versions


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
        for segment_id, contact_id in sorted(set(pairs))  # one lock order for all callers
    ]

    def unless_member(insert: Insert) -> Executable:
        return insert.on_conflict_do_nothing(
            index_elements=[_memberships.c.segment_id, _memberships.c.contact_id]
        ).returning(_memberships.c.segment_id, _memberships.c.contact_id)

    return [
        (segment_id, contact_id)
        for batch in batched(rows, BATCH_SIZE)
        for segment_id, contact_id in _bulk_insert(session, _memberships, batch, unless_member).tuples()
    ]


def remove_memberships(session: Session, pairs: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """Delete the ``(segment_id, contact_id)`` memberships; return the pairs that existed.

    Only the returned pairs have exited (see :func:`add_memberships`).
    """
    key = (_memberships.c.segment_id, _memberships.c.contact_id)
    removed: list[tuple[int, str]] = []
    for batch in batched(sorted(set(pairs)), BATCH_SIZE):
        statement = delete(_memberships).returning(*key)
        if _dialect(session) == "postgresql":
            rows = [{"segment_id": segment_id, "contact_id": contact_id} for segment_id, contact_id in batch]
            given = _json_rows(_memberships, rows)
            statement = statement.where(key[0] == given.c.segment_id, key[1] == given.c.contact_id)
        else:
            statement = statement.where(tuple_(*key).in_(batch))
        removed.extend(session.execute(statement).tuples())
    return removed


def memberships_of(session: Session, workspace_id: str, contact_ids: Iterable[str]) -> dict[str, set[int]]:
    """The segment ids each of ``contact_ids`` is a member of (contacts with none are left out)."""
    segments: dict[str, set[int]] = {}
    for batch in batched(set(contact_ids), BATCH_SIZE):
        rows = session.execute(
            select(_memberships.c.contact_id, _memberships.c.segment_id).where(
                _memberships.c.workspace_id == workspace_id,
                among(session, _memberships.c.contact_id, batch),
            )
        )
        for contact_id, segment_id in rows.tuples().all():  # fetched at once: row by row costs twice as much
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


def member_ids_page(session: Session, segment_id: int, *, after: str | None, limit: int = BATCH_SIZE) -> list[str]:
    """Up to ``limit`` of a segment's member ids after ``after``, in contact id order (keyset
    pagination on the primary key: each page is one index range scan, in any transaction)."""
    statement = (
        select(_memberships.c.contact_id)
        .where(_memberships.c.segment_id == segment_id)
        .order_by(_memberships.c.contact_id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(_memberships.c.contact_id > after)
    return list(session.scalars(statement))


def iter_member_ids(session: Session, segment_id: int, *, batch_size: int = BATCH_SIZE) -> Iterator[list[str]]:
    """A segment's member ids in batches, in contact id order."""
    after: str | None = None
    while batch := member_ids_page(session, segment_id, after=after, limit=batch_size):
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


def list_segments(session: Session, workspace_id: str, *, share_lock: bool = False) -> Sequence[Segment]:
    """The workspace's segments, oldest first.

    With ``share_lock`` (PostgreSQL) the rows stay share-locked, in id order, until the
    transaction ends: what an evaluation does before it writes memberships by their rules (see
    :func:`contact_segments.service.membership.evaluate_contacts`).
    """
    statement = select(Segment).where(Segment.workspace_id == workspace_id).order_by(Segment.id)
    if share_lock:
        statement = statement.with_for_update(read=True).execution_options(populate_existing=True)
    return session.scalars(statement).all()


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


def is_duplicate_segment_name(error: IntegrityError) -> bool:
    """Whether ``error`` is the segment name rule's unique constraint failing."""
    diagnostics = getattr(error.orig, "diag", None)  # psycopg
    if diagnostics is not None:
        return bool(diagnostics.constraint_name == SEGMENT_NAME_CONSTRAINT)
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

    def unless_recorded(insert: Insert) -> Executable:
        return insert.on_conflict_do_nothing(
            index_elements=[_registry.c.workspace_id, _registry.c.default_key]
        ).returning(_registry.c.default_key)

    return list(_bulk_insert(session, _registry, rows, unless_recorded).scalars())


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
    rows: list[dict[str, Any]] = [
        {"member_count": None, **event, "event_id": new_uuid7()} for event in events
    ]
    for batch in batched(rows, BATCH_SIZE):
        _bulk_insert(session, _events, batch)
    return [row["event_id"] for row in rows]


def try_lock_delivery(session: Session, workspace_id: str) -> bool:
    """Try to become the workspace's one deliverer until the transaction ends; return whether so.

    One deliverer per workspace keeps each contact's events in order across workers. On
    PostgreSQL this is a transaction-level advisory lock, which does not wait; on SQLite the
    transaction already excludes every other writer, so it is always True.
    """
    if _dialect(session) != "postgresql":
        return True
    # One 64-bit key per workspace: two workspaces sharing a key would share a deliverer, and the
    # requests one leaves for the other (by workspace id) would never be taken.
    lock = func.pg_try_advisory_xact_lock(func.hashtextextended(workspace_id, _DELIVERY_LOCK_CLASS))
    return bool(session.scalar(select(lock)))


def request_delivery(session: Session, workspace_id: str) -> None:
    """Ask whoever holds the workspace's delivery lock (:func:`try_lock_delivery`) to deliver
    again once it lets go: what it last fetched may predate the rows this delivery came for.
    Commit the request before trying the lock again; the holder takes it after letting go
    (:func:`take_delivery_request`), so one of the two sees the rows."""
    session.execute(insert_for(session, _requests).values(workspace_id=workspace_id).on_conflict_do_nothing())


def take_delivery_request(session: Session, workspace_id: str) -> bool:
    """Take (delete) the workspace's delivery request; return whether there was one.  On SQLite
    no delivery finds the lock taken, so none is ever made: False, without a write."""
    if _dialect(session) != "postgresql":
        return False
    taken = session.execute(delete(_requests).where(_requests.c.workspace_id == workspace_id).returning(_requests.c.workspace_id))
    return taken.first() is not None


Outbox = type[MembershipEvent] | type[SegmentChange]
"""One of the two outboxes: membership events, or segment notifications."""


def fetch_undelivered_events(
    session: Session, workspace_id: str, *, limit: int = BATCH_SIZE, outbox: Outbox = MembershipEvent
) -> Sequence[Any]:
    """The workspace's undelivered events (or rows of the ``outbox``), oldest first.

    Read without row locks: the one deliverer of a workspace holds :func:`try_lock_delivery`,
    and row locks held while the host is called would make a hook that deletes a segment (whose
    deletion takes its events) wait for the delivery calling it.  Marking the rows delivered
    locks them, after the host returned; a row deleted meanwhile is simply not marked.
    """
    statement = (
        select(outbox)
        .where(outbox.workspace_id == workspace_id, outbox.delivered_at.is_(None))
        .order_by(outbox.seq)
        .limit(limit)
        .execution_options(populate_existing=True)  # fresh rows even if the session holds them
    )
    return session.scalars(statement).all()


def append_segment_change(session: Session, change: Mapping[str, Any]) -> None:
    """Append a segment notification (workspace_id, segment_id, name, rule_version, change,
    occurred_at) to its outbox."""
    session.execute(insert(_segment_changes).values(**change))


def delete_workspace_rows(session: Session, workspace_id: str) -> None:
    """Delete the workspace and everything in it: its row takes contacts, segments, memberships
    and events with it (foreign keys, ``ON DELETE CASCADE``); its segment notifications, contact
    tombstones, pending changes and delivery request, which have no foreign key, go explicitly."""
    for table in (_segment_changes, _tombstones, _pending, _requests):
        session.execute(delete(table).where(table.c.workspace_id == workspace_id))
    session.execute(delete(_workspaces).where(_workspaces.c.id == workspace_id))


def workspaces_with_undelivered_events(session: Session) -> list[str]:
    """The workspaces that have events or segment notifications waiting for delivery (from the
    undelivered indexes alone)."""
    waiting = union(
        select(MembershipEvent.workspace_id).where(MembershipEvent.delivered_at.is_(None)),
        select(SegmentChange.workspace_id).where(SegmentChange.delivered_at.is_(None)),
    ).subquery()
    return list(session.scalars(select(waiting.c.workspace_id).order_by(waiting.c.workspace_id)))


def mark_events_delivered(session: Session, seqs: Iterable[int], *, now: float, outbox: Outbox = MembershipEvent) -> None:
    """Record the events (or the ``outbox``'s rows) as delivered at ``now``."""
    table = cast(Table, outbox.__table__)
    for batch in batched(sorted(set(seqs)), BATCH_SIZE):
        session.execute(update(table).where(among(session, table.c.seq, batch)).values(delivered_at=now))


def record_failed_delivery(session: Session, seqs: Iterable[int], *, outbox: Outbox = MembershipEvent) -> None:
    """Count one more failed delivery attempt of each event (or row of the ``outbox``)."""
    table = cast(Table, outbox.__table__)
    for batch in batched(sorted(set(seqs)), BATCH_SIZE):
        session.execute(
            update(table).where(among(session, table.c.seq, batch)).values(attempts=table.c.attempts + 1)
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
        .execution_options(populate_existing=True)
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
_CONTACT_UPDATE_COLUMNS = (
    *(name for name in CONTACT_VIEW_FIELDS if name != "id"),
    "version",
    "updated_at",
)


def _changed_mask(new: Any) -> ColumnElement[int]:
    """The pending bits of the fields whose stored value differs from ``new`` (the excluded row)."""
    bits = [
        case((_contacts.c[name].is_distinct_from(new[name]), 1 << bit), else_=0)
        for bit, name in enumerate(TRACKED_FIELDS)
    ]
    return reduce(lambda a, b: a.op("|")(b), bits)


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
    row["changed_mask"] = ALL_PENDING  # a new contact: everything is to evaluate
    return row


def insert_for(session: Session, table: Table) -> Insert:
    """An INSERT into ``table`` in the session's dialect, which has ``on_conflict_do_*``."""
    match _dialect(session):
        case "postgresql":
            return postgresql.insert(table)
        case "sqlite":
            return sqlite.insert(table)
        case other:
            raise NotImplementedError(f"unsupported database: {other}")


def batched(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _bulk_insert(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    finish: Callable[[Insert], Executable] = lambda insert: insert,
) -> Result[Any]:
    """INSERT ``rows`` (all with the same keys), ``finish`` adding ON CONFLICT, RETURNING etc.

    PostgreSQL gets the rows as one JSON document (so values must be what the columns take, as
    JSON); SQLite gets an executemany, which SQLAlchemy sends as multi-row VALUES.
    """
    insert = insert_for(session, table)
    if _dialect(session) == "postgresql":
        prepared = _prepared_insert(session, table, rows, finish)
        if prepared is not None:
            sql, constants, to_json = prepared
            parameters = {**constants, _ROWS_PARAMETER: to_json(list(rows))}
            return session.connection().exec_driver_sql(sql, parameters)
        given = _json_rows(table, rows)
        names = list(rows[0])
        insert = insert.from_select(names, select(*(given.c[name] for name in names)))
        return session.execute(finish(insert))
    return session.execute(finish(insert), list(rows))


_ROWS_PARAMETER = "bulk_rows"
_PreparedInsert = tuple[str, dict[str, Any], Callable[[Any], Any]]
_prepared_inserts: dict[tuple[Any, ...], _PreparedInsert | None] = {}


def _prepared_insert(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], finish: Callable[[Insert], Executable]
) -> _PreparedInsert | None:
    """:func:`_bulk_insert`'s statement on PostgreSQL (psycopg) compiled once per shape: its
    SQL, its constant parameters and the rows' JSONB adapter; None where that cannot be done.

    SQLAlchemy 2.0 cannot cache a statement with ``ON CONFLICT`` (it has no cache key), so it
    compiles such a statement on every execution: about 3 ms for the contact upsert, more than
    the database spends running it for one contact.  The statement depends only on the table,
    the column names and ``finish``, provided ``finish`` has no closure (so it captures no
    per-call value) and no column left out takes a default computed per row (SQLAlchemy adds
    those to the INSERT, computed at execution).  Then the rows become one named JSONB
    parameter, and the SQL, compiled once, runs as is (psycopg prepares it on the server).
    """
    dialect = session.get_bind().dialect
    if finish.__closure__ is not None or dialect.driver != "psycopg":
        return None
    names = tuple(rows[0])
    key = (dialect.driver, table.name, names, finish.__code__)
    if key in _prepared_inserts:
        return _prepared_inserts[key]
    defaults = {c.key: c.default for c in table.c if c.default is not None and c.key not in names}
    if any(not default.is_scalar for default in defaults.values()):
        return _prepared_inserts.setdefault(key, None)
    given = _json_rows(table, rows, bindparam(_ROWS_PARAMETER, type_=postgresql.JSONB))
    statement = finish(insert_for(session, table).from_select(list(names), select(*(given.c[n] for n in names))))
    compiled = statement.compile(dialect=dialect)
    constants: dict[str, Any] = {}
    for name, value in compiled.params.items():
        if name == _ROWS_PARAMETER:
            continue
        if name in defaults:  # a scalar default, which SQLAlchemy fills in at execution
            value = getattr(defaults[name], "arg", None)
        process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        constants[name] = process(value) if process is not None else value
    # Integer constants (the pending bits, defaults) go into the text: shorter SQL, which psycopg
    # then parses once and caches (it does not cache statements over 4 KB).
    sql = str(compiled)
    for name, value in list(constants.items()):
        if type(value) is int:
            sql = sql.replace(f"%({name})s", str(value))
            del constants[name]
    to_json = postgresql.JSONB().dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    return _prepared_inserts.setdefault(key, (sql, constants, to_json))


def _json_rows(table: Table, rows: Sequence[Mapping[str, Any]], document: Any = None) -> TableValuedAlias:
    """PostgreSQL: ``rows`` as a table (typed like ``table``'s columns), from one JSONB parameter
    (``document``, by default ``rows`` themselves as a literal)."""
    if document is None:
        document = literal(list(rows), postgresql.JSONB)
    columns = (column(name, table.c[name].type) for name in rows[0])
    return func.jsonb_to_recordset(document).table_valued(*columns).render_derived("given", with_types=True)


def among(session: Session, column_: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``column_ IN values``; on PostgreSQL ``= ANY(array)``, one parameter instead of many."""
    if _dialect(session) == "postgresql":
        return column_ == any_(literal(list(values), postgresql.ARRAY(column_.type)))
    return column_.in_(values)
