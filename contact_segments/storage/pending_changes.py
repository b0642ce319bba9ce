"""Pending changes: which fields of a contact changed since its memberships were last evaluated.

Storing a snapshot adds the fields it changed (``*`` for a new contact: all of them); an
evaluation takes them under the row lock and clears them.  They accumulate across snapshots, so
a burst of changes evaluated once, on the newest snapshot, still re-evaluates every segment that
reads any field that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from .models import Contact
from .queries import BATCH_SIZE, batched

ALL_FIELDS = "*"

_contacts = cast(Table, Contact.__table__)


def add(session: Session, workspace_id: str, changes: Mapping[str, frozenset[str] | None]) -> None:
    """Add each contact's changed fields (None: all) to its pending ones."""
    if not changes:
        return
    current = _read(session, workspace_id, changes.keys())
    rows = []
    for contact_id, fields in changes.items():
        merged = _merge(current.get(contact_id, frozenset()), fields)
        rows.append({"cid": contact_id, "pending": sorted(merged) if merged is not None else [ALL_FIELDS]})
    statement = (
        update(_contacts)
        .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id == bindparam("cid"))
        .values(pending_fields=bindparam("pending", type_=_contacts.c.pending_fields.type))
    )
    for batch in batched(rows, BATCH_SIZE):
        session.connection().execute(statement, batch)


def take(
    session: Session, workspace_id: str, versions: Mapping[str, int]
) -> dict[str, frozenset[str] | None]:
    """Lock the contacts, clear and return their pending fields (None: all).

    Contacts stored at a newer version than asked for are left alone: the evaluation scheduled
    for that version will take them.  Contacts with nothing pending are left out.
    """
    taken: dict[str, frozenset[str] | None] = {}
    for batch in batched(sorted(versions), BATCH_SIZE):
        rows = session.execute(
            select(_contacts.c.id, _contacts.c.version, _contacts.c.pending_fields)
            .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch))
            .order_by(_contacts.c.id)
            .with_for_update()
        )
        for contact_id, version, pending in rows:
            if pending is None or version > versions[contact_id]:
                continue
            taken[contact_id] = None if ALL_FIELDS in pending else frozenset(pending)
    for batch in batched(list(taken), BATCH_SIZE):
        session.execute(
            update(_contacts)
            .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch))
            .values(pending_fields=None)
        )
    return taken


def _read(
    session: Session, workspace_id: str, contact_ids: Iterable[str]
) -> dict[str, frozenset[str] | None]:
    """Each contact's pending fields (None: all); contacts with nothing pending are left out."""
    found: dict[str, frozenset[str] | None] = {}
    for batch in batched(sorted(contact_ids), BATCH_SIZE):
        rows = session.execute(
            select(_contacts.c.id, _contacts.c.pending_fields).where(
                _contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch)
            )
        )
        for contact_id, pending in rows:
            if pending is not None:
                found[contact_id] = None if ALL_FIELDS in pending else frozenset(pending)
    return found


def _merge(current: frozenset[str] | None, fields: frozenset[str] | None) -> frozenset[str] | None:
    """The union of two sets of fields, where None stands for all of them."""
    if fields is None or current is None:
        return None
    return current | fields
