"""Change stamps: which contacts changed since a rebuild read them.

The database stamps a contact on every insert and on every update of a field of the evaluation
view, by trigger (migration 0005), so no writer can forget it, the service or anyone else.  A
rebuild takes a :func:`watermark` before it reads; afterwards, :func:`changed_since` that
watermark covers every contact whose change the rebuild may not have seen.

* PostgreSQL: the stamp is the id of the transaction that wrote the row, and the watermark the
  ``xmin`` of a snapshot taken first: every transaction with a smaller id had ended, so its
  changes were visible to whatever the rebuild read after; a change it could have missed comes
  from a transaction at or above ``xmin``.  Nothing is locked and writers pay one trigger call.
* SQLite (one writer at a time): the stamp is the workspace's ``change_epoch`` when the row was
  written, and the watermark advances the epoch in the transaction that reads, so each change
  is either visible to the rebuild or stamped with the new epoch.  That transaction must commit.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import ColumnElement, Table, select, text, update
from sqlalchemy.orm import Session

from .models import Contact, Workspace

_contacts = cast(Table, Contact.__table__)
_workspaces = cast(Table, Workspace.__table__)

_SNAPSHOT_XMIN = select(text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))


def watermark(session: Session, workspace_id: str) -> int:
    """A stamp such that every change to the workspace's contacts not visible to what this
    transaction reads from now on is stamped at or above it (see the module's docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(int, session.scalar(_SNAPSHOT_XMIN))
    advanced = (
        update(_workspaces)
        .where(_workspaces.c.id == workspace_id)
        .values(change_epoch=_workspaces.c.change_epoch + 1)
        .returning(_workspaces.c.change_epoch)
    )
    return cast(int, session.scalar(advanced))


def changed_since(stamp: int) -> ColumnElement[bool]:
    """The contacts stamped at or after ``stamp``: a range of the (workspace, change_stamp) index."""
    return _contacts.c.change_stamp >= stamp
