"""Pending changes: which fields of a contact changed since its memberships were last evaluated.

Storing a snapshot sets one bit per field whose value it changed (all of them for a new
contact), computed by the database in the upsert itself (``IS DISTINCT FROM`` the stored
value), so concurrent stores never lose a bit.  An evaluation takes the pending contacts under
their row locks and clears the bits.  Bits accumulate across snapshots, so a burst of changes
evaluated once, on the newest snapshot, still re-evaluates every segment that reads any field
that changed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from .models import TRACKED_FIELDS, Contact
from .queries import BATCH_SIZE, batched

_contacts = cast(Table, Contact.__table__)


@lru_cache(maxsize=4096)
def fields_of(mask: int) -> frozenset[str]:
    """The tracked field names whose bits are set in ``mask``."""
    return frozenset(name for bit, name in enumerate(TRACKED_FIELDS) if mask >> bit & 1)


def take(session: Session, workspace_id: str, *, limit: int = BATCH_SIZE) -> dict[str, frozenset[str]]:
    """Up to ``limit`` of the workspace's contacts with pending changes, locked, their bits
    cleared: each id with the fields that changed.

    On PostgreSQL, rows another transaction holds are skipped (``SKIP LOCKED``), so several
    workers take disjoint batches of the same workspace; and it is one statement, ``UPDATE ...
    FROM (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` the bits as they were when locked.
    (SQLite's RETURNING cannot name the FROM subquery, so there it is a SELECT, then an UPDATE;
    its transactions exclude every other writer anyway.)
    """
    locked = (
        select(_contacts.c.id, _contacts.c.pending_mask)
        .where(_contacts.c.workspace_id == workspace_id, _contacts.c.pending_mask != 0)
        .order_by(_contacts.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if session.get_bind().dialect.name == "postgresql":
        # A MATERIALIZED CTE runs once.  As a plain subquery the planner may rescan it for each
        # row it updates, and a rescan of FOR UPDATE sees the bits just cleared and moves on to
        # the next rows: the LIMIT would not hold.
        taken = locked.cte("taken").prefix_with("MATERIALIZED")
        rows = session.execute(
            update(_contacts)
            .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id == taken.c.id)
            .values(pending_mask=0)
            .returning(taken.c.id, taken.c.pending_mask)
        ).all()
    else:
        rows = session.execute(locked).all()
        for batch in batched([contact_id for contact_id, _ in rows], BATCH_SIZE):
            session.execute(
                update(_contacts)
                .where(_contacts.c.workspace_id == workspace_id, _contacts.c.id.in_(batch))
                .values(pending_mask=0)
            )
    return {contact_id: fields_of(mask) for contact_id, mask in sorted(rows)}


def workspaces_with_pending(session: Session) -> list[str]:
    """Workspaces that have contacts with pending changes."""
    statement = select(_contacts.c.workspace_id).where(_contacts.c.pending_mask != 0).distinct()
    return list(session.scalars(statement))
