"""Set-wise queries: membership of all contacts at once, given a rule's SQL condition.

The condition comes from the rules layer (``rule_to_sql``) as a boolean expression over the
``contacts`` table; these functions only run it.  Like :mod:`.queries`, they never commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Double,
    Integer,
    Select,
    Table,
    Text,
    any_,
    bindparam,
    case,
    column,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .ids import uuid7_sql
from .models import Contact, EventKind, Membership, MembershipEvent
from .queries import NewEvent, add_memberships, among, append_events, batched, insert_for, remove_memberships

_contacts = cast(Table, Contact.__table__)
_memberships = cast(Table, Membership.__table__)
_events = cast(Table, MembershipEvent.__table__)


def _id_range(column: Any, after: str | None, upto: str | None) -> list[ColumnElement[bool]]:
    bounds = []
    if after is not None:
        bounds.append(column > after)
    if upto is not None:
        bounds.append(column <= upto)
    return bounds


def _id_scope(
    session: Session, column: Any, after: str | None, upto: str | None, contact_ids: Sequence[str] | None
) -> list[ColumnElement[bool]]:
    """The contacts a reconciliation covers: ids in ``(after, upto]``, and among ``contact_ids``."""
    scope = _id_range(column, after, upto)
    if contact_ids is not None:
        scope.append(among(session, column, contact_ids))
    return scope


@dataclass(frozen=True)
class EventStamp:
    """What each event of one membership write carries besides its pair and kind."""

    cause: str
    occurred_at: float
    rule_versions: Mapping[int, int]
    """Segment id -> the rule version its events name."""


def _event_rows(
    workspace_id: str, pairs: Iterable[tuple[int, str]], kind: EventKind, stamp: EventStamp
) -> list[NewEvent]:
    return [
        NewEvent(
            workspace_id=workspace_id,
            segment_id=segment_id,
            contact_id=contact_id,
            kind=kind.value,
            cause=stamp.cause,
            rule_version=stamp.rule_versions[segment_id],
            occurred_at=stamp.occurred_at,
        )
        for segment_id, contact_id in pairs
    ]


def _append_events_sql(
    changed: Any,
    *,
    workspace_id: ColumnElement[str],
    cause: ColumnElement[str],
    rule_version: ColumnElement[int],
    occurred_at: ColumnElement[float],
    order_by: list[ColumnElement[Any]],
) -> Any:
    """PostgreSQL: ``INSERT INTO membership_events ... SELECT ... FROM changed ORDER BY ...`` as a
    CTE, one event per row of ``changed`` (segment_id, contact_id, kind), each with a fresh
    time-ordered id (:func:`.ids.uuid7_sql`); ``seq`` follows the order (what
    :func:`queries.append_events` gives a list sorted the same way).  The other columns are SQL
    expressions: constants, or parameters of a statement built once."""
    rows = select(
        uuid7_sql(), workspace_id, changed.c.segment_id, changed.c.contact_id, changed.c.kind,
        cause, rule_version, occurred_at,
    ).order_by(*order_by)  # fmt: skip
    columns = ["event_id", "workspace_id", "segment_id", "contact_id", "kind", "cause", "rule_version", "occurred_at"]
    # The generic INSERT: SQLAlchemy caches the compiled form of a statement only if it has no
    # dialect INSERT (whose ON CONFLICT clause it cannot key).
    return insert(_events).from_select(columns, rows, include_defaults=False).cte("events")  # attempts: 0


def _stamped_versions(changed: Any, versions: Mapping[int, int]) -> ColumnElement[int]:
    """The rule version each row of ``changed`` names, from ``versions`` (a ``CASE`` on its
    segment): for a statement whose segments are fixed.  :func:`_diff_statement`, built once for
    any segments, takes the versions as one JSONB parameter instead."""
    return case(
        *((changed.c.segment_id == segment_id, literal(version)) for segment_id, version in versions.items()),
        else_=null(),
    )


def reconcile_memberships(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    after: str | None = None,
    upto: str | None = None,
    contact_ids: Sequence[str] | None = None,
    among_contacts: ColumnElement[bool] | None = None,
    since: float,
    events: EventStamp | None = None,
) -> tuple[list[str], list[str]]:
    """Make the segment's members among contacts with ids in ``(after, upto]`` (and among
    ``contact_ids``, and those satisfying the condition ``among_contacts``, if given) exactly
    those matching ``condition``; return the contact ids that entered and those that exited,
    each sorted.  With ``events``, also append an "entered" event per contact that entered,
    then an "exited" one per contact that exited, each in contact id order.

    entered = matches - members (``INSERT ... ON CONFLICT DO NOTHING RETURNING``), exited =
    members - matches (``DELETE ... RETURNING``): only rows that really changed come back (and
    get events), whatever runs concurrently.  On PostgreSQL all of it is one statement, which
    finds the two differences with a single full join of the matches and the members, so each
    side is read once (see :func:`_reconcile_postgresql`); with ``among_contacts``, those
    contacts are read, each member looked up by key.  Elsewhere two statements with ``NOT
    EXISTS``, and the events after them.
    """
    if session.get_bind().dialect.name == "postgresql":
        return _reconcile_postgresql(
            session,
            segment_id=segment_id,
            workspace_id=workspace_id,
            condition=condition,
            scope=lambda column: _id_scope(session, column, after, upto, contact_ids),
            among_contacts=among_contacts,
            since=since,
            events=events,
        )
    member = _memberships.c
    contact = _contacts.c

    def scope(column: Any) -> list[ColumnElement[bool]]:
        bounds = _id_scope(session, column, after, upto, contact_ids)
        if among_contacts is not None:
            bounds.append(column.in_(select(contact.id).where(contact.workspace_id == workspace_id, among_contacts)))
        return bounds

    matching = [contact.workspace_id == workspace_id, condition, *scope(contact.id)]
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
    entered = sorted(session.scalars(insert).all())

    still_matches = exists().where(
        contact.workspace_id == workspace_id, contact.id == member.contact_id, condition
    )
    removal = (
        delete(_memberships)
        .where(member.segment_id == segment_id, *scope(member.contact_id), ~still_matches)
        .returning(member.contact_id)
    )
    exited = sorted(session.scalars(removal).all())
    if events is not None:
        append_events(
            session,
            _event_rows(workspace_id, ((segment_id, c) for c in entered), EventKind.ENTERED, events)
            + _event_rows(workspace_id, ((segment_id, c) for c in exited), EventKind.EXITED, events),
        )
    return entered, exited


def _compared(
    session: Session, segment_id: int, workspace_id: str, condition: ColumnElement[bool], among: list[ColumnElement[bool]]
) -> Any:
    """A CTE of :func:`_comparison`; on PostgreSQL ``MATERIALIZED``, so each lookup runs once."""
    compared = _comparison(segment_id, workspace_id, condition, among)
    if session.get_bind().dialect.name == "postgresql":
        return compared.cte("compared").prefix_with("MATERIALIZED")
    return compared.cte("compared")


def _comparison(
    segment_id: int, workspace_id: str | ColumnElement[str], condition: ColumnElement[bool], among: list[ColumnElement[bool]]
) -> Select[Any]:
    """The contacts satisfying ``among``: ``id``, whether each ``matches`` the condition (null
    counting as false, as in a ``WHERE``) and whether it ``is_member`` of the segment.

    Membership is a correlated ``EXISTS``, so each contact is looked up by key: joined, the
    planner may hash all of a segment's members (hundreds of thousands) for ten thousand
    contacts.
    """
    member = _memberships.c
    contact = _contacts.c
    is_member = exists().where(member.segment_id == segment_id, member.contact_id == contact.id)
    return select(
        contact.id.label("id"), func.coalesce(condition, false()).label("matches"), is_member.label("is_member")
    ).where(contact.workspace_id == workspace_id, *among)


def _entered(rows: Any, *, on_conflict: bool) -> Any:
    """PostgreSQL: the CTE ``entered``, ``INSERT INTO memberships (segment_id, contact_id,
    workspace_id, since) <rows> RETURNING segment_id, contact_id``; ``on_conflict`` adds ``ON
    CONFLICT DO NOTHING`` (see :func:`_insert_optimistically`)."""
    member = _memberships.c
    names = ["segment_id", "contact_id", "workspace_id", "since"]
    adding: Any = insert(_memberships).from_select(names, rows)
    if on_conflict:
        adding = (
            postgresql.insert(_memberships)
            .from_select(names, rows)
            .on_conflict_do_nothing(index_elements=[member.segment_id, member.contact_id])
        )
    return adding.returning(member.segment_id, member.contact_id).cte("entered")


def _changed(entered: Any, exited: Any) -> Any:
    """PostgreSQL: the subquery ``changed`` (segment_id, contact_id, kind) of the ``RETURNING``
    rows of the CTEs ``entered`` and ``exited``, from which events are built."""
    return union_all(
        select(entered.c.segment_id, entered.c.contact_id, literal(EventKind.ENTERED.value).label("kind")),
        select(exited.c.segment_id, exited.c.contact_id, literal(EventKind.EXITED.value)),
    ).subquery("changed")


def _insert_optimistically(
    session: Session, statement: Callable[[bool], Any], parameters: Mapping[str, Any] | None = None
) -> Any:
    """PostgreSQL: the one row of ``statement(False)``, a statement whose memberships INSERT has
    no ``ON CONFLICT``, run in a savepoint; if a concurrent writer added one of the memberships
    meanwhile, the unique violation rolls the savepoint back and ``statement(True)``, the same
    with ``ON CONFLICT DO NOTHING``, runs instead.  The outcome is the same either way.

    A plain insert costs about two thirds of a speculative one, and SQLAlchemy caches the
    compiled form of a statement only without the dialect's INSERT (whose ``ON CONFLICT`` it
    cannot key): compiling one anew takes milliseconds, more than a small batch takes to run.
    """
    try:
        with session.begin_nested():
            return session.execute(statement(False), parameters).one()
    except IntegrityError:
        return session.execute(statement(True), parameters).one()


def _reconcile_postgresql(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    scope: Callable[[Any], list[ColumnElement[bool]]],
    among_contacts: ColumnElement[bool] | None,
    since: float,
    events: EventStamp | None,
) -> tuple[list[str], list[str]]:
    """PostgreSQL: one statement, ``WITH diff AS (matches FULL JOIN members), entered AS
    (INSERT ... RETURNING), exited AS (DELETE ... RETURNING)[, events AS (INSERT ...)] SELECT
    array_agg(...), ...``.  With ``among_contacts``, the diff compares just those contacts,
    each membership looked up by key (see :func:`_compared`), never a read of all the members.

    The delete finds its rows by key (``contact_id = ANY(ARRAY(SELECT ... FROM diff))``), an
    index lookup whatever the planner guesses of the join's size.  The insert is tried first
    without ``ON CONFLICT`` (see :func:`_insert_optimistically`).
    """
    member = _memberships.c
    contact = _contacts.c
    if among_contacts is not None:
        compared = _compared(session, segment_id, workspace_id, condition, [among_contacts, *scope(contact.id)])
        diff = (
            select(
                case((compared.c.matches, compared.c.id)).label("matching"),
                case((compared.c.is_member, compared.c.id)).label("member"),
            )
            .where(compared.c.matches != compared.c.is_member)
            .cte("diff")
        )
    else:
        matches = (
            select(contact.id.label("id"))
            .where(contact.workspace_id == workspace_id, condition, *scope(contact.id))
            .subquery("matches")
        )
        members = (
            select(member.contact_id.label("id"))
            .where(member.segment_id == segment_id, *scope(member.contact_id))
            .subquery("members")
        )
        diff = (
            select(matches.c.id.label("matching"), members.c.id.label("member"))
            .select_from(matches.join(members, members.c.id == matches.c.id, full=True))
            .where(or_(matches.c.id.is_(None), members.c.id.is_(None)))
            .cte("diff")
        )
    leaving = func.array(select(diff.c.member).where(diff.c.matching.is_(None)).scalar_subquery())
    removal = (
        delete(_memberships)
        .where(member.segment_id == segment_id, member.contact_id == any_(leaving))
        .returning(member.segment_id, member.contact_id)
        .cte("exited")
    )

    def statement(on_conflict: bool) -> Any:
        rows = select(literal(segment_id), diff.c.matching, literal(workspace_id), literal(since)).where(
            diff.c.member.is_(None)
        )
        entered = _entered(rows, on_conflict=on_conflict)
        result = select(  # two arrays in one row: no per-row objects for a first build's many entries
            select(func.array_agg(entered.c.contact_id)).scalar_subquery(),
            select(func.array_agg(removal.c.contact_id)).scalar_subquery(),
        )
        if events is not None:
            changed = union_all(
                select(entered.c.segment_id, entered.c.contact_id, literal(EventKind.ENTERED.value).label("kind"), literal(0).label("rank")),
                select(removal.c.segment_id, removal.c.contact_id, literal(EventKind.EXITED.value), literal(1)),
            ).subquery("changed")
            result = result.add_cte(
                _append_events_sql(
                    changed,
                    workspace_id=literal(workspace_id),
                    cause=literal(events.cause),
                    rule_version=_stamped_versions(changed, events.rule_versions),
                    occurred_at=literal(events.occurred_at),
                    order_by=[changed.c.rank, changed.c.contact_id.collate("C")],
                )
            )
        return result

    entered, exited = _insert_optimistically(session, statement)
    return sorted(entered or ()), sorted(exited or ())


DIFF_CHUNK = 5000
"""Pairs per statement in :func:`write_membership_diff` (PostgreSQL)."""


def write_membership_diff(
    session: Session,
    workspace_id: str,
    to_enter: Iterable[tuple[int, str]],
    to_exit: Iterable[tuple[int, str]],
    *,
    since: float,
    events: EventStamp,
    exclusive: bool = False,
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Add the ``to_enter`` memberships and remove the ``to_exit`` ones, with one event per pair
    that really changed, in contact id order (then segment id); return the ``(segment_id,
    contact_id)`` pairs that entered and those that exited, each sorted.  A pair that is already
    as asked (a member to enter, a non-member to exit) costs a lookup of the primary key and
    makes no event, so a caller may give every pair it considered, as it wants it.

    Elsewhere this is :func:`queries.add_memberships`, :func:`queries.remove_memberships` and
    :func:`queries.append_events`.  On PostgreSQL it is one statement per chunk of pairs (whole
    contacts, in contact id order, so events stay in order across chunks), which builds the
    events from the ``RETURNING`` rows itself.

    ``exclusive`` says the caller holds off every other writer of these memberships (a tick
    holds its workspace row for update, and every other writer share-locks it first:
    evaluations, deletions and rebuild batches): the insert then runs without the savepoint of
    :func:`_insert_optimistically`, and were the protocol ever broken, the unique key would fail
    the whole transaction.
    """
    enter, leave = set(to_enter), set(to_exit)
    if session.get_bind().dialect.name != "postgresql":
        entered = add_memberships(session, workspace_id, enter, since=since)
        exited = remove_memberships(session, leave)
        rows = _event_rows(workspace_id, entered, EventKind.ENTERED, events) + _event_rows(workspace_id, exited, EventKind.EXITED, events)
        append_events(session, sorted(rows, key=lambda e: (e["contact_id"], e["segment_id"])))
        return sorted(entered), sorted(exited)
    entered, exited = [], []
    by_contact = sorted([(c, s, True) for s, c in enter] + [(c, s, False) for s, c in leave])
    start = 0
    while start < len(by_contact):
        end = min(start + DIFF_CHUNK, len(by_contact))
        while end < len(by_contact) and by_contact[end][0] == by_contact[end - 1][0]:
            end += 1  # a contact's pairs stay in one chunk
        chunk = by_contact[start:end]
        adding = sorted((s, c) for c, s, entering in chunk if entering)  # one lock order for all callers
        removing = sorted((s, c) for c, s, entering in chunk if not entering)
        parameters = _diff_parameters(workspace_id, adding, removing, since=since, events=events)
        # The other callers (evaluations, deletions) exclude one another per contact and
        # share-lock the segments, so another writer of these memberships is rare: see
        # _insert_optimistically.
        if exclusive:
            in_segments, in_contacts, out_segments, out_contacts = session.execute(_diff_statement(False), parameters).one()
        else:
            in_segments, in_contacts, out_segments, out_contacts = _insert_optimistically(session, _diff_statement, parameters)
        entered += zip(in_segments or (), in_contacts or (), strict=True)
        exited += zip(out_segments or (), out_contacts or (), strict=True)
        start = end
    return sorted(entered), sorted(exited)


_DIFF_PAIRS = [column("segment_id", Integer), column("contact_id", Text)]


def _diff_parameters(
    workspace_id: str,
    adding: Sequence[tuple[int, str]],
    removing: Sequence[tuple[int, str]],
    *,
    since: float,
    events: EventStamp,
) -> dict[str, Any]:
    """The values of :func:`_diff_statement`'s parameters."""

    return {
        "entering_segments": [segment_id for segment_id, _ in adding],
        "entering_contacts": [contact_id for _, contact_id in adding],
        "leaving_segments": [segment_id for segment_id, _ in removing],
        "leaving_contacts": [contact_id for _, contact_id in removing],
        "workspace_id": workspace_id,
        "since": since,
        "cause": events.cause,
        "occurred_at": events.occurred_at,
        "rule_versions": {str(segment_id): version for segment_id, version in events.rule_versions.items()},
    }


@lru_cache(maxsize=2)
def _diff_statement(on_conflict: bool) -> Any:
    """PostgreSQL: the statement that writes a membership diff and its events, built once (its
    values are all parameters, see :func:`_diff_parameters`): ``WITH exited AS (DELETE ...
    RETURNING), entered AS (INSERT ... RETURNING), events AS (INSERT ...) SELECT`` the entered
    pairs and the exited ones as four arrays.  ``on_conflict`` adds ``ON CONFLICT DO NOTHING``
    to the memberships INSERT (see :func:`_insert_optimistically`)."""
    member = _memberships.c

    def pairs(name: str) -> Any:
        segment_ids = bindparam(f"{name}_segments", type_=postgresql.ARRAY(Integer))
        contact_ids = bindparam(f"{name}_contacts", type_=postgresql.ARRAY(Text))
        return func.unnest(segment_ids, contact_ids).table_valued(*_DIFF_PAIRS).render_derived(name)

    given_in, given_out = pairs("entering"), pairs("leaving")
    workspace_id = bindparam("workspace_id", type_=Text)
    exited = (
        delete(_memberships)
        .where(member.segment_id == given_out.c.segment_id, member.contact_id == given_out.c.contact_id)
        .returning(member.segment_id, member.contact_id)
        .cte("exited")
    )
    # A pair that is a member already is skipped by a probe of the primary key, so a caller may
    # give the memberships it wants instead of reading those that exist first.
    already = exists().where(member.segment_id == given_in.c.segment_id, member.contact_id == given_in.c.contact_id)
    rows = select(given_in.c.segment_id, given_in.c.contact_id, workspace_id, bindparam("since", type_=Double)).where(~already)
    entered = _entered(rows, on_conflict=on_conflict)
    changed = _changed(entered, exited)
    versions = bindparam("rule_versions", type_=postgresql.JSONB)
    in_order = _append_events_sql(
        changed,
        workspace_id=workspace_id,
        cause=bindparam("cause", type_=Text),
        rule_version=cast_(versions[cast_(changed.c.segment_id, Text)].astext, Integer),
        occurred_at=bindparam("occurred_at", type_=Double),
        order_by=[changed.c.contact_id.collate("C"), changed.c.segment_id],
    )
    ins = select(func.array_agg(entered.c.segment_id).label("s"), func.array_agg(entered.c.contact_id).label("c")).subquery()
    outs = select(func.array_agg(exited.c.segment_id).label("s"), func.array_agg(exited.c.contact_id).label("c")).subquery()
    return select(ins.c.s, ins.c.c, outs.c.s, outs.c.c).select_from(ins.join(outs, true())).add_cte(in_order)


NOW = bindparam("now", type_=Double())
"""The instant a statement built once runs at (:class:`WindowFlips`): a rule compiled with
``now=NOW`` (:func:`~..rules.rule_to_sql`) holds at whatever value the statement is given."""

START = bindparam("start", type_=Double())
"""The instant a :class:`WindowFlips` window starts after (its memberships were right then)."""

_WORKSPACE = bindparam("workspace_id", type_=Text())


@dataclass(frozen=True)
class Window:
    """A segment whose memberships may be out of date among some contacts between the instants
    :data:`START` and :data:`NOW` (a tick's work), in terms of those two parameters."""

    segment_id: int
    rule_version: int
    condition: ColumnElement[bool]
    """The segment's rule as SQL at :data:`NOW`."""
    among: ColumnElement[bool]
    """The contacts to compare: a condition on ``contacts`` (index ranges of a timestamp, their
    ends :data:`START` and :data:`NOW` plus a rule's offset)."""


WINDOWS_PER_STATEMENT = 100
"""Windows a comparison reads per statement on SQLite, which takes at most 500 terms in a
``UNION ALL`` (a workspace has at most 500 segments)."""


class WindowFlips:
    """Applies the flips of some windows between two instants: built once for a set of windows,
    run at any ``(start, now]``.

    Its statements are built on first use and kept, their values all parameters, so a run costs
    what executing them costs: no SQL is built, and SQLAlchemy finds their compiled form by
    identity.  On PostgreSQL a run is one statement: each window's contacts read by index range
    and compared with the rule, each membership looked up by key, all windows in one ``UNION
    ALL``; the flips written from it, their events built from the ``RETURNING`` rows (in contact
    id order, then segment id).  Elsewhere the comparison is read (:data:`WINDOWS_PER_STATEMENT`
    windows a statement), then written by :func:`write_membership_diff`.
    """

    def __init__(self, windows: Sequence[Window], *, cause: str) -> None:
        self.windows = tuple(windows)
        self.cause = cause
        self.versions = {window.segment_id: window.rule_version for window in self.windows}

    def apply(self, session: Session, workspace_id: str, *, start: float, now: float) -> tuple[int, int, int]:
        """Bring the windows' memberships in line with their rules at ``now`` (they were right at
        ``start``, an earlier instant), each flip with an event at ``now``; return how many
        contacts the windows hold (a contact counts once per window), how many entered and how
        many exited.

        The caller must be the only writer of these memberships (a tick holds its workspace row
        for update, and every other writer share-locks it first): the inserts have no ``ON
        CONFLICT``, and were the protocol ever broken, the unique key would fail the transaction.
        """
        if not start < now:
            raise ValueError(f"a window runs from one instant to a later one, not from {start} to {now}")
        parameters = {"workspace_id": workspace_id, "start": start, "now": now}
        if session.get_bind().dialect.name == "postgresql":
            candidates, entered, exited = session.execute(self._postgresql, parameters).one()
            return candidates, entered, exited
        rows: list[Any] = []
        for comparison in self._comparisons:
            rows += session.execute(comparison, parameters).all()
        enter = [(segment_id, contact_id) for contact_id, matches, is_member, segment_id in rows if matches and not is_member]
        leave = [(segment_id, contact_id) for contact_id, matches, is_member, segment_id in rows if is_member and not matches]
        stamp = EventStamp(self.cause, now, self.versions)
        added, removed = write_membership_diff(session, workspace_id, enter, leave, since=now, events=stamp, exclusive=True)
        return len(rows), len(added), len(removed)

    def _compared(self, windows: Sequence[Window]) -> Any:
        """``id, matches, is_member, segment_id`` of each window's contacts (:func:`_comparison`)."""
        return union_all(
            *(
                _comparison(w.segment_id, _WORKSPACE, w.condition, [w.among]).add_columns(literal(w.segment_id).label("segment_id"))
                for w in windows
            )
        )

    @cached_property
    def _comparisons(self) -> list[Any]:
        return [self._compared(chunk) for chunk in batched(self.windows, WINDOWS_PER_STATEMENT)]

    @cached_property
    def _postgresql(self) -> Any:
        """``WITH compared AS MATERIALIZED (...), flips AS (...), entered AS (INSERT ...
        RETURNING), exited AS (DELETE ... RETURNING), events AS (INSERT ...) SELECT`` the
        number of contacts compared, entered and exited."""
        member = _memberships.c
        compared = self._compared(self.windows).cte("compared").prefix_with("MATERIALIZED")
        flips = (
            select(compared.c.segment_id, compared.c.id, compared.c.matches)
            .where(compared.c.matches != compared.c.is_member)
            .cte("flips")
        )
        entered = _entered(select(flips.c.segment_id, flips.c.id, _WORKSPACE, NOW).where(flips.c.matches), on_conflict=False)
        exited = (
            delete(_memberships)
            .where(member.segment_id == flips.c.segment_id, member.contact_id == flips.c.id, ~flips.c.matches)
            .returning(member.segment_id, member.contact_id)
            .cte("exited")
        )
        changed = _changed(entered, exited)
        events = _append_events_sql(
            changed,
            workspace_id=_WORKSPACE,
            cause=literal(self.cause),
            rule_version=_stamped_versions(changed, self.versions),
            occurred_at=NOW,
            order_by=[changed.c.contact_id.collate("C"), changed.c.segment_id],
        )

        def count(rows: Any) -> Any:
            return select(func.count()).select_from(rows).scalar_subquery()

        return select(count(compared), count(entered), count(exited)).add_cte(events)


def membership_differences(
    session: Session,
    *,
    segment_id: int,
    workspace_id: str,
    condition: ColumnElement[bool],
    limit: int,
    among_contacts: ColumnElement[bool] | None = None,
) -> list[str] | None:
    """The ids of the contacts whose membership in the segment disagrees with ``condition``
    (matches that are not members, members that do not match), sorted; None if there are more
    than ``limit``.  Read-only: a rebuild's first pass, so that it writes to just those.

    With ``among_contacts`` (a condition on ``contacts``: the contacts that may have changed
    since the last build) only those are compared, each looked up in the memberships by key.
    Otherwise every contact and every member: on PostgreSQL one full join reads each side once;
    elsewhere two ``NOT EXISTS`` queries.
    """
    member = _memberships.c
    contact = _contacts.c
    statement: Any
    if among_contacts is not None:
        compared = _compared(session, segment_id, workspace_id, condition, [among_contacts])
        statement = select(compared.c.id).where(compared.c.matches != compared.c.is_member)
    elif session.get_bind().dialect.name == "postgresql":
        matches = select(contact.id.label("id")).where(contact.workspace_id == workspace_id, condition).subquery("matches")
        members = select(member.contact_id.label("id")).where(member.segment_id == segment_id).subquery("members")
        statement = (
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
    return session.scalar(count_matching_query(workspace_id, condition)) or 0


def count_matching_query(workspace_id: str, condition: ColumnElement[bool]) -> Select[tuple[int]]:
    """``SELECT count(*) FROM contacts WHERE workspace_id = ... AND condition``."""
    return select(func.count()).select_from(_contacts).where(_contacts.c.workspace_id == workspace_id, condition)


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


def time_window_condition(
    column_name: str,
    low: float | ColumnElement[float],
    high: float | ColumnElement[float],
    *,
    include_low: bool,
    with_null: bool = False,
) -> ColumnElement[bool]:
    """Contacts whose timestamp ``column_name`` lies in ``(low, high]``, or in ``[low, high)``
    with ``include_low`` (or is null, ``with_null``): a range of the (workspace, timestamp) index."""
    column = _contacts.c[column_name]
    in_window = (column >= low) & (column < high) if include_low else (column > low) & (column <= high)
    return or_(in_window, column.is_(None)) if with_null else in_window
