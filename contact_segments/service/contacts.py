"""Contacts: store the host's snapshots, keep their memberships right.

Storing and evaluating are two steps, so a host's request thread can do the first and a worker
the second:

* :func:`store_snapshots` keeps each snapshot only if its version is newer than the stored one
  (a stale or duplicate snapshot is a no-op, as is one no newer than a deleted contact's last
  version: a late save does not bring a deleted contact back); the database marks the fields
  it changed as *pending*;
* :func:`evaluate_pending` takes pending contacts (their pending rows stay locked until it
  commits), re-evaluates only the segments whose rules read a changed field, and writes the
  membership diff and its events - all in one transaction.

Pending fields accumulate across snapshots until an evaluation takes them, so coalescing a burst
of changes into one evaluation of the newest snapshot loses nothing (see
:mod:`contact_segments.storage.pending_changes`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from itertools import count
from typing import Any

from sqlalchemy.orm import Session

from ..storage import EventCause, Segment, pending_changes
from ..storage import queries as q
from ..storage.models import TRACKED_FIELDS
from .commands import DeliverEvents, EvaluatePending
from .errors import InvalidInput, NotFound
from .membership import Diff, compiled_segment, evaluate_contacts
from .segments import evaluation_instant, get_workspace
from .snapshots import load_snapshot
from .uow import UnitOfWork

PENDING_BATCH = 1000
EVERY_FIELD = frozenset(TRACKED_FIELDS)


def load_snapshots(documents: Iterable[Any], labels: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Validate snapshots; the first bad one raises :class:`InvalidInput` naming where it is
    (its label, e.g. "line 7", or its position)."""
    loaded = []
    places = iter(labels) if labels is not None else (f"snapshot #{n}" for n in count(1))
    for place, document in zip(places, documents, strict=False):
        try:
            loaded.append(load_snapshot(document))
        except InvalidInput as error:
            raise InvalidInput(f"{place}: {error.message}", error.messages) from None
    return loaded


def store_snapshots(uow: UnitOfWork, workspace_id: str, snapshots: list[dict[str, Any]], *, now: float) -> list[str]:
    """Store the newer snapshots in the current transaction; return the ids actually stored.

    The database marks the fields each one changed as pending; their evaluation
    (:class:`EvaluatePending`) is scheduled for after the commit.
    """
    stored = q.upsert_contacts(uow.session, workspace_id, snapshots, now=now)
    if stored:
        uow.add_command(EvaluatePending(workspace_id))
    return stored


def upsert_contacts(uow: UnitOfWork, workspace_id: str, documents: Iterable[Any], *, now: float) -> list[str]:
    """Validate, store and schedule the evaluation of snapshots, in one transaction."""
    return upsert_snapshots(uow, workspace_id, load_snapshots(documents), now=now)


def upsert_snapshots(uow: UnitOfWork, workspace_id: str, snapshots: list[dict[str, Any]], *, now: float) -> list[str]:
    """Store validated snapshots (see :func:`load_snapshots`) and schedule their evaluation."""
    with uow:
        get_workspace(uow, workspace_id)
        stored = store_snapshots(uow, workspace_id, snapshots, now=now)
        uow.commit()
    return stored


def evaluate_pending(uow: UnitOfWork, workspace_id: str, *, now: float, limit: int = PENDING_BATCH) -> Diff:
    """Evaluate up to ``limit`` contacts with pending changes against the segments that read them.

    If more may be pending (it took ``limit``), another :class:`EvaluatePending` follows: on
    PostgreSQL sent at once to a dispatcher that runs work elsewhere, so a burst is evaluated by
    as many workers as are free, or else after the commit (:meth:`.UnitOfWork.add_waiting`).
    The instant of evaluation is never earlier than the workspace's last tick (see
    :func:`evaluation_instant`).
    """
    with uow:
        now = evaluation_instant(uow, workspace_id, now)
        pending = pending_changes.take(uow.session, workspace_id, limit=limit)
        if not pending:
            return Diff()
        if len(pending) == limit:
            # More may be pending, in rows stored and committed before: another worker can take
            # the next batch (SKIP LOCKED) while this one is evaluated.
            uow.add_waiting(EvaluatePending(workspace_id))
        # Every field pending means a new contact: it is evaluated against every segment, those
        # whose rules read no field (e.g. "all contacts", rule ``true``) included.
        changed = {contact_id: (None if fields == EVERY_FIELD else fields) for contact_id, fields in pending.items()}
        diff = evaluate_contacts(
            uow.session,
            workspace_id,
            pending,
            now=now,
            cause=EventCause.CONTACT_CHANGED,
            segments=_segments_reading(workspace_segments(uow.session, workspace_id), changed.values()),
            changed=changed,
        )
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return diff


def _segments_reading(segments: Sequence[Segment], changes: Iterable[frozenset[str] | None]) -> Sequence[Segment]:
    """The segments that read any of the changed fields (all of them if a contact is new).

    :func:`evaluate_contacts` leaves the others alone for every one of these contacts anyway
    (their snapshots are stored: :func:`queries.delete_contacts` removes a deleted contact's
    pending change, after waiting for an evaluation that took it); leaving them out of the
    call also keeps them out of the statement that writes the diff and its events.
    """
    fields: set[str] = set()
    for changed in changes:
        if changed is None:
            return segments
        fields |= changed
    return [segment for segment in segments if compiled_segment(segment).reads & fields]


SEGMENT_CACHE_WORKSPACES = 256
_segments_seen: OrderedDict[str, tuple[tuple[Any, ...], list[Segment]]] = OrderedDict()
_segments_lock = threading.Lock()


def workspace_segments(session: Session, workspace_id: str) -> Sequence[Segment]:
    """The workspace's segments, oldest first, as far as evaluating contacts goes: id, rule
    version and rule (detached objects, for reading only).

    An evaluation task runs often on few contacts, and loading 50 segments as ORM objects, JSON
    rules parsed, costs more than evaluating a handful of contacts.  So this reads each
    segment's id, version and rule *text* (:func:`queries.segment_rows`: no ORM, no parsing)
    and reuses the objects built the last time the workspace's segments read exactly the same
    (:func:`segments_of_rows`).  Same segments, same rules, as :func:`queries.list_segments`
    gives, and like it with ``share_lock``: the rows stay share-locked until the transaction
    ends (see :func:`.membership.evaluate_contacts`).
    """
    return segments_of_rows(workspace_id, q.segment_rows(session, workspace_id))


def segments_of_rows(workspace_id: str, rows: tuple[q.SegmentRow, ...]) -> Sequence[Segment]:
    """The segments of these rows of the workspace (:data:`queries.SegmentRow`): the objects
    built the last time its rows read exactly the same (per process, for the last
    :data:`SEGMENT_CACHE_WORKSPACES` workspaces), or new ones."""
    with _segments_lock:
        seen = _segments_seen.get(workspace_id)
        if seen is not None and seen[0] == rows:
            _segments_seen.move_to_end(workspace_id)
            return seen[1]
    segments = [
        Segment(id=ident, workspace_id=workspace_id, rule_version=version, rule=json.loads(text))
        for ident, version, text in rows
    ]
    with _segments_lock:
        _segments_seen[workspace_id] = (rows, segments)
        _segments_seen.move_to_end(workspace_id)
        while len(_segments_seen) > SEGMENT_CACHE_WORKSPACES:
            _segments_seen.popitem(last=False)
    return segments


MESSAGE_FIELDS = {"incoming": "last_incoming_message_at", "outgoing": "last_outgoing_message_at"}


def record_message(uow: UnitOfWork, workspace_id: str, contact_id: str, *, direction: str, at: float) -> bool:
    """A message went in or out: move the contact's activity timestamp forward (never back) and
    schedule its evaluation.  Returns False for an unknown contact or an older message."""
    field = MESSAGE_FIELDS.get(direction)
    if field is None:
        raise InvalidInput(f"a message direction is 'incoming' or 'outgoing', not {direction!r}")
    if isinstance(at, bool) or not isinstance(at, int | float) or at != at or abs(at) > 1e11:
        raise InvalidInput(f"a message time is epoch seconds, not {at!r}")
    with uow:
        get_workspace(uow, workspace_id)
        moved = q.advance_timestamp(uow.session, workspace_id, contact_id, field, float(at))
        if moved:
            uow.add_command(EvaluatePending(workspace_id))
        uow.commit()
    return moved


def delete_contact(uow: UnitOfWork, workspace_id: str, contact_id: str, *, now: float) -> Diff:
    """Delete a contact: it exits every segment, with an event for each.

    Like an evaluation, it share-locks the workspace row first (:func:`evaluation_instant`), so
    it never runs in the middle of a tick: a tick that read the contact before the deletion
    committed could otherwise put it back into a segment after the deletion took it out.
    """
    with uow:
        now = evaluation_instant(uow, workspace_id, now)
        if not q.delete_contacts(uow.session, workspace_id, [contact_id], now=now):
            raise NotFound("contact", contact_id, workspace_id)
        diff = evaluate_contacts(uow.session, workspace_id, [contact_id], now=now, cause=EventCause.CONTACT_DELETED)
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return diff
