"""Pending changes: which fields of a contact changed since its memberships were last evaluated.

Storing a snapshot computes, in the upsert itself, one bit per field whose value it changed (all
of them for a new contact: ``IS DISTINCT FROM`` the stored value) and ORs them into the contact's
row of ``pending_changes`` (:func:`.queries.mark_pending`).  An evaluation takes pending rows
(deletes them, keeping their bits); bits accumulate until then, so a burst of changes evaluated
once, on the newest snapshot, still re-evaluates every segment that reads any field that changed.

The pending row is also what makes evaluations of one contact run one after another, without a
lock on the wide contact row (PostgreSQL; SQLite runs one writer at a time):

* an evaluation holds the rows it took (deleted, not yet committed) until its transaction ends,
  and another one skips them (``SKIP LOCKED``);
* a writer of the contact writes its row first, then its pending row: if an evaluation holds the
  pending row, the writer waits for it (a unique key check waits for the deleting transaction),
  so a newer snapshot is marked pending only once the evaluation of the older one has committed,
  and the next evaluation starts from the memberships it wrote;
* deleting a contact deletes its pending row last, and so waits the same way
  (:func:`.queries.delete_contacts`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Delete, Integer, Select, Table, Text, any_, bindparam, delete, func, select
from sqlalchemy.orm import Session

from .models import TRACKED_FIELDS, PendingChange
from .queries import BATCH_SIZE, among, batched

_pending = cast(Table, PendingChange.__table__)


@lru_cache(maxsize=4096)
def fields_of(mask: int) -> frozenset[str]:
    """The tracked field names whose bits are set in ``mask``."""
    return frozenset(name for bit, name in enumerate(TRACKED_FIELDS) if mask >> bit & 1)


def take(session: Session, workspace_id: str, *, limit: int = BATCH_SIZE) -> dict[str, frozenset[str]]:
    """Up to ``limit`` of the workspace's contacts with pending changes, in id order, each with
    the fields that changed; their pending rows are deleted, and held until the transaction ends.

    On PostgreSQL, rows another transaction holds are skipped (``SKIP LOCKED``), so several
    workers take disjoint batches of the same workspace; and it is one statement, ``WITH taken
    AS MATERIALIZED (SELECT ... FOR UPDATE SKIP LOCKED) DELETE ... RETURNING``.  (On SQLite, a
    SELECT, then a DELETE: its transactions exclude every other writer anyway.)
    """
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_take_statement(), {"workspace_id": workspace_id, "limit": limit}).all()
    else:
        rows = session.execute(_locked(workspace_id, limit)).all()
        for batch in batched([contact_id for contact_id, _ in rows], BATCH_SIZE):
            session.execute(
                delete(_pending).where(
                    _pending.c.workspace_id == workspace_id, among(session, _pending.c.contact_id, batch)
                )
            )
    return dict(sorted((contact_id, fields_of(mask)) for contact_id, mask in rows))  # sorts tuples, not rows


def _locked(workspace_id: Any, limit: Any) -> Select[tuple[str, int]]:
    """``SELECT contact_id, mask ... ORDER BY contact_id LIMIT ... FOR UPDATE SKIP LOCKED``."""
    pending = _pending.c
    return (
        select(pending.contact_id, pending.mask)
        .where(pending.workspace_id == workspace_id)
        .order_by(pending.contact_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


@lru_cache(maxsize=1)
def _take_statement() -> Delete:
    """PostgreSQL: ``WITH taken AS MATERIALIZED (<locked>) DELETE ... RETURNING``, built once.

    A MATERIALIZED CTE runs once.  As a plain subquery the planner may rescan it for each row it
    deletes, and a rescan of FOR UPDATE skips the rows just deleted and moves on to the next
    ones: the LIMIT would not hold.  The taken rows are then deleted by key (``= ANY(ARRAY(...))``):
    joined, the planner may read all the workspace's pending rows again to hash them.
    """
    pending = _pending.c
    workspace_id = bindparam("workspace_id", type_=Text())
    taken = _locked(workspace_id, bindparam("limit", type_=Integer())).cte("taken").prefix_with("MATERIALIZED")
    taken_ids = func.array(select(taken.c.contact_id).scalar_subquery())
    return (
        delete(_pending)
        .where(pending.workspace_id == workspace_id, pending.contact_id == any_(taken_ids))
        .returning(pending.contact_id, pending.mask)
    )


def workspaces_with_pending(session: Session) -> list[str]:
    """Workspaces that have contacts with pending changes."""
    return list(session.scalars(select(_pending.c.workspace_id).distinct().order_by(_pending.c.workspace_id)))
