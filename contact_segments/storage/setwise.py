"""Set-wise queries: membership of all contacts at once, given a rule's SQL condition.

The condition comes from the rules layer (``rule_to_sql``) as a boolean expression over the
``contacts`` table; these functions only run it.  Like :mod:`.queries`, they never commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, any_, delete, exists, func, literal, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
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


def among(session: Session, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``= ANY(array)``, one parameter however many values."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(list(values), postgresql.ARRAY(column.type)))
    return column.in_(values)


def _id_scope(
    session: Session, column: Any, after: str | None, upto: str | None, contact_ids: Sequence[str] | None
) -> list[ColumnElement[bool]]:
    """The contacts a reconciliation covers: ids in ``(after, upto]``, and among ``contact_ids``."""
    scope = _id_range(column, after, upto)
    if contact_ids is not None:
        scope.append(among(session, column, contact_ids))
    return scope


def reconcile_memberships(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    after: str | None = None,
    upto: str | None = None,
    contact_ids: Sequence[str] | None = None,
    since: float,
) -> tuple[list[str], list[str]]:
    """Make the segment's members among contacts with ids in ``(after, upto]`` (and among
    ``contact_ids``, if given) exactly those matching ``condition``; return the contact ids that
    entered and those that exited, each sorted.

    entered = matches - members (``INSERT ... ON CONFLICT DO NOTHING RETURNING``), exited =
    members - matches (``DELETE ... RETURNING``): only rows that really changed come back,
    whatever runs concurrently.  On PostgreSQL both come from one statement, which finds the two
    differences with a single full join of the matches and the members, so each side is read
    once (see :func:`_reconcile_postgresql`); elsewhere two statements with ``NOT EXISTS``.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _reconcile_postgresql(
            session,
            segment_id=segment_id,
            workspace_id=workspace_id,
            condition=condition,
            scope=lambda column: _id_scope(session, column, after, upto, contact_ids),
            since=since,
        )
    member = _memberships.c
    contact = _contacts.c
    matching = [contact.workspace_id == workspace_id, condition, *_id_scope(session, contact.id, after, upto, contact_ids)]
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
    entered = session.scalars(insert).all()

    still_matches = exists().where(
        contact.workspace_id == workspace_id, contact.id == member.contact_id, condition
    )
    removal = (
        delete(_memberships)
        .where(member.segment_id == segment_id, *_id_scope(session, member.contact_id, after, upto, contact_ids), ~still_matches)
        .returning(member.contact_id)
    )
    exited = session.scalars(removal).all()
    return sorted(entered), sorted(exited)


def _reconcile_postgresql(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    scope: Callable[[Any], list[ColumnElement[bool]]],
    since: float,
) -> tuple[list[str], list[str]]:
    """PostgreSQL: one statement, ``WITH diff AS (matches FULL JOIN members ...), entered AS
    (INSERT ... RETURNING), exited AS (DELETE ... RETURNING) SELECT ...``.

    The insert is tried first without ``ON CONFLICT`` (a plain insert costs about two thirds of
    a speculative one), inside a savepoint; if a concurrent writer added one of the memberships
    meanwhile, the unique violation rolls the savepoint back and the statement runs again with
    ``ON CONFLICT DO NOTHING``, so the outcome is the same either way.
    """
    member = _memberships.c
    contact = _contacts.c
    matches = (
        select(contact.id.label("id")).where(contact.workspace_id == workspace_id, condition, *scope(contact.id)).subquery("matches")
    )
    members = select(member.contact_id.label("id")).where(member.segment_id == segment_id, *scope(member.contact_id)).subquery("members")
    diff = (
        select(matches.c.id.label("matching"), members.c.id.label("member"))
        .select_from(matches.join(members, members.c.id == matches.c.id, full=True))
        .where(or_(matches.c.id.is_(None), members.c.id.is_(None)))
        .cte("diff")
    )
    removal = (
        delete(_memberships)
        .where(member.segment_id == segment_id, member.contact_id.in_(select(diff.c.member).where(diff.c.matching.is_(None))))
        .returning(member.contact_id)
        .cte("exited")
    )

    def statement(on_conflict: bool) -> Any:
        insert = postgresql.insert(_memberships).from_select(
            ["segment_id", "contact_id", "workspace_id", "since"],
            select(literal(segment_id), diff.c.matching, literal(workspace_id), literal(since)).where(diff.c.member.is_(None)),
        )
        if on_conflict:
            insert = insert.on_conflict_do_nothing(index_elements=[member.segment_id, member.contact_id])
        entered = insert.returning(member.contact_id).cte("entered")
        return select(literal(True).label("entered"), entered.c.contact_id).union_all(
            select(literal(False), removal.c.contact_id)
        )

    try:
        with session.begin_nested():
            rows = session.execute(statement(on_conflict=False)).all()
    except IntegrityError:
        rows = session.execute(statement(on_conflict=True)).all()
    return sorted(c for entered, c in rows if entered), sorted(c for entered, c in rows if not entered)


def membership_differences(
    session: Session, *, segment_id: int, workspace_id: str, condition: ColumnElement[bool], limit: int
) -> list[str] | None:
    """The ids of the contacts whose membership in the segment disagrees with ``condition``
    (matches that are not members, members that do not match), sorted; None if there are more
    than ``limit``.  Read-only: a rebuild's first pass, so that it writes to just those.

    On PostgreSQL one full join reads each side once; elsewhere two ``NOT EXISTS`` queries.
    """
    member = _memberships.c
    contact = _contacts.c
    if session.get_bind().dialect.name == "postgresql":
        matches = select(contact.id.label("id")).where(contact.workspace_id == workspace_id, condition).subquery("matches")
        members = select(member.contact_id.label("id")).where(member.segment_id == segment_id).subquery("members")
        statement: Any = (
            select(func.coalesce(matches.c.id, members.c.id))
            .select_from(matches.join(members, members.c.id == matches.c.id, full=True))
            .where(or_(matches.c.id.is_(None), members.c.id.is_(None)))
        )
    else:
        is_member = exists().where(member.segment_id == segment_id, member.contact_id == contact.id)
        still_matches = exists().where(contact.workspace_id == workspace_id, contact.id == member.contact_id, condition)
        statement = select(contact.id).where(contact.workspace_id == workspace_id, condition, ~is_member).union_all(
            select(member.contact_id).where(member.segment_id == segment_id, ~still_matches)
        )
    ids = session.scalars(statement.limit(limit + 1)).all()
    return None if len(ids) > limit else sorted(ids)


def member_count(session: Session, segment_id: int) -> int:
    """How many members the segment has (a segment's memberships all carry its workspace)."""
    return session.scalar(select(func.count()).select_from(_memberships).where(_memberships.c.segment_id == segment_id)) or 0


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
