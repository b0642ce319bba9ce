"""Set-wise queries: membership of all contacts at once, given a rule's SQL condition.

The condition comes from the rules layer (``rule_to_sql``) as a boolean expression over the
``contacts`` table; these functions only run it.  Like :mod:`.queries`, they never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, delete, exists, func, literal, select
from sqlalchemy.orm import Session

from .models import Contact, Membership
from .queries import insert_for

_contacts = cast(Table, Contact.__table__)
_memberships = cast(Table, Membership.__table__)


def _id_range(column: Any, after: str | None, upto: str | None) -> list[ColumnElement[bool]]:
    bounds = []
    if after is not None:
        bounds.append(column > after)
    if upto is not None:
        bounds.append(column <= upto)
    return bounds


def reconcile_memberships(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    after: str | None = None,
    upto: str | None = None,
    since: float,
) -> tuple[list[str], list[str]]:
    """Make the segment's members among contacts with ids in ``(after, upto]`` exactly those
    matching ``condition``; return the contact ids that entered and those that exited.

    entered = matches - members (``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING``),
    exited = members - matches (``DELETE ... WHERE NOT EXISTS ... RETURNING``): only rows that
    really changed come back, whatever runs concurrently.
    """
    member = _memberships.c
    contact = _contacts.c
    matching = [contact.workspace_id == workspace_id, condition, *_id_range(contact.id, after, upto)]
    is_member = exists().where(member.segment_id == segment_id, member.contact_id == contact.id)
    entering = select(literal(segment_id), contact.id, literal(workspace_id), literal(since)).where(
        *matching, ~is_member
    )
    insert = (
        insert_for(session, _memberships)
        .from_select(["segment_id", "contact_id", "workspace_id", "since"], entering)
        .on_conflict_do_nothing(index_elements=[member.segment_id, member.contact_id])
        .returning(member.contact_id)
    )
    entered = list(session.scalars(insert))

    still_matches = exists().where(
        contact.workspace_id == workspace_id, contact.id == member.contact_id, condition
    )
    removal = (
        delete(_memberships)
        .where(member.segment_id == segment_id, *_id_range(member.contact_id, after, upto), ~still_matches)
        .returning(member.contact_id)
    )
    exited = list(session.scalars(removal))
    return sorted(entered), sorted(exited)


def count_matching(session: Session, workspace_id: str, condition: ColumnElement[bool]) -> int:
    """How many of the workspace's contacts match ``condition``."""
    statement = (
        select(func.count()).select_from(_contacts).where(_contacts.c.workspace_id == workspace_id, condition)
    )
    return session.scalar(statement) or 0


def count_difference(
    session: Session, *, segment_id: int, workspace_id: str, condition: ColumnElement[bool]
) -> tuple[int, int]:
    """How many contacts would enter and exit the segment if ``condition`` were its rule."""
    member = _memberships.c
    contact = _contacts.c
    is_member = exists().where(member.segment_id == segment_id, member.contact_id == contact.id)
    entering = (
        select(func.count())
        .select_from(_contacts)
        .where(contact.workspace_id == workspace_id, condition, ~is_member)
    )
    still_matches = exists().where(
        contact.workspace_id == workspace_id, contact.id == member.contact_id, condition
    )
    exiting = (
        select(func.count()).select_from(_memberships).where(member.segment_id == segment_id, ~still_matches)
    )
    return session.scalar(entering) or 0, session.scalar(exiting) or 0


def contact_id_bounds(session: Session, workspace_id: str, batch_size: int) -> list[str | None]:
    """Upper bounds cutting the workspace's contact ids into batches of ``batch_size``.

    The last bound is None (no upper bound), so contacts added meanwhile are still covered.
    """
    ranked = (
        select(_contacts.c.id, func.row_number().over(order_by=_contacts.c.id).label("n"))
        .where(_contacts.c.workspace_id == workspace_id)
        .subquery()
    )
    bounds: list[str | None] = list(
        session.scalars(select(ranked.c.id).where(ranked.c.n % batch_size == 0).order_by(ranked.c.id))
    )
    return [*bounds, None]


def time_window_query(
    workspace_id: str, column_name: str, low: float, high: float, *, include_low: bool
) -> Select[tuple[str]]:
    """Ids of contacts whose timestamp ``column_name`` lies in ``(low, high]``, or in
    ``[low, high)`` with ``include_low``: a range scan of the (workspace, timestamp) index."""
    column = _contacts.c[column_name]
    in_window = (column >= low) & (column < high) if include_low else (column > low) & (column <= high)
    return select(_contacts.c.id).where(_contacts.c.workspace_id == workspace_id, in_window)


def contacts_in_time_window(
    session: Session, workspace_id: str, column_name: str, low: float, high: float, *, include_low: bool
) -> Sequence[str]:
    """The ids :func:`time_window_query` selects."""
    return session.scalars(time_window_query(workspace_id, column_name, low, high, include_low=include_low)).all()


def contacts_with_null(session: Session, workspace_id: str, column_name: str) -> Sequence[str]:
    """Ids of contacts whose timestamp ``column_name`` is null."""
    column = _contacts.c[column_name]
    return session.scalars(select(_contacts.c.id).where(_contacts.c.workspace_id == workspace_id, column.is_(None))).all()
