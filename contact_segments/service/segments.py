"""Segment operations: create, edit (or save as new), rename, delete, list, members, rebuild.

Each operation is a plain function over a :class:`~.uow.UnitOfWork`.  Product rules live here:
names are unique in a workspace after trimming and case-folding, a workspace holds at most 500
segments (both enforced by the database, so concurrent requests cannot break them), a rule
arrives as JSONLogic or as editor conditions and is validated and normalised before it is kept.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import ColumnElement, bindparam, or_, select
from sqlalchemy.exc import IntegrityError

from ..rules import RuleError
from ..rules.conditions import conditions_to_rule, filter_count, rule_to_conditions
from ..rules.sql import rule_to_sql
from ..rules.validation import string_problem, validate_segment_rule
from ..storage import (
    MAX_SEGMENTS_PER_WORKSPACE,
    EventCause,
    Segment,
    Workspace,
    change_stamps,
    contact_view_columns,
    setwise,
)
from ..storage import queries as q
from .commands import DeliverEvents, RebuildSegment
from .errors import DuplicateName, InvalidInput, LimitReached, NotFound
from .membership import Diff, built_event, compiled_segment, flip_candidates, rebuild_batch
from .uow import UnitOfWork

MAX_NAME_LENGTH = 100
REBUILD_BATCH_SIZE = 50_000


@dataclass(frozen=True)
class SegmentView:
    """A segment as the host shows it: its definition, member count and filter badge."""

    id: int
    workspace_id: str
    name: str
    description: str
    rule: Any
    conditions: Any
    is_default: bool
    rule_version: int
    filter_count: int
    member_count: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleInput:
    """A rule as given: JSONLogic, or editor conditions (a group), never both."""

    rule: Any = None
    conditions: Any = None


def _view(segment: Segment, member_count: int) -> SegmentView:
    return SegmentView(
        id=segment.id,
        workspace_id=segment.workspace_id,
        name=segment.name,
        description=segment.description,
        rule=segment.rule,
        conditions=segment.conditions,
        is_default=segment.is_default,
        rule_version=segment.rule_version,
        filter_count=filter_count(segment.rule),
        member_count=member_count,
        created_at=segment.created_at,
        updated_at=segment.updated_at,
    )


# --------------------------------------------------------------------------- validation


def clean_name(name: Any) -> str:
    """The name to store: NFC-normalised and trimmed; non-empty, at most 100 characters, no
    control characters or line breaks (so "Café" typed two ways is one name, and a name is one line)."""
    if not isinstance(name, str):
        raise InvalidInput("a segment name must be a string")
    cleaned = unicodedata.normalize("NFC", name).strip()
    if not cleaned:
        raise InvalidInput("a segment name must not be empty")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidInput(f"a segment name has at most {MAX_NAME_LENGTH} characters, this one {len(cleaned)}")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in cleaned):
        raise InvalidInput("a segment name must not contain control characters, line breaks or lone surrogates")
    return cleaned


def resolve_rule(given: RuleInput, timezone: str) -> tuple[Any, Any]:
    """Validate and normalise a rule; return it with its editor conditions (None if it has none).

    Raises :class:`InvalidInput` with every problem keyed by JSON path.
    """
    if (given.rule is None) == (given.conditions is None):
        raise InvalidInput("give a segment either a JSONLogic rule or conditions, not both or neither")
    try:
        if given.conditions is not None:
            rule = validate_segment_rule(conditions_to_rule(given.conditions, timezone))
        else:
            rule = validate_segment_rule(given.rule)
    except ValidationError as error:
        raise InvalidInput("invalid segment rule", _messages(error.messages)) from None
    except RuleError as error:
        raise InvalidInput("invalid segment rule", error.messages) from None
    conditions = rule_to_conditions(rule)
    return rule, (None if _is_advanced(conditions) else conditions)


def _messages(messages: Any) -> Mapping[str, Any]:
    return messages if isinstance(messages, Mapping) else {"$": messages}


def _is_advanced(group: Any) -> bool:
    """Whether the editor can only show the rule as raw JSONLogic."""
    items = group.get("conditions", []) if isinstance(group, Mapping) else []
    return len(items) == 1 and isinstance(items[0], Mapping) and items[0].get("category") == "advanced"


# --------------------------------------------------------------------------- lookups


def get_workspace(uow: UnitOfWork, workspace_id: str, *, lock: bool = False) -> Workspace:
    statement = select(Workspace).where(Workspace.id == workspace_id)
    workspace = uow.session.scalar(statement.with_for_update() if lock else statement)
    if workspace is None:
        raise NotFound("workspace", workspace_id)
    return workspace


def evaluation_instant(uow: UnitOfWork, workspace_id: str, now: float) -> float:
    """The instant to evaluate at: ``now``, or the workspace's last tick if that is later.

    Takes a share lock on the workspace row (PostgreSQL) until the transaction ends, so a tick
    (which locks the row to move its watermark) never runs in the middle of an evaluation: an
    evaluation that began before a tick cannot undo a flip the tick applied.
    """
    workspace = uow.session.execute(_LAST_TICK, {"workspace_id": workspace_id}).first()
    if workspace is None:
        raise NotFound("workspace", workspace_id)
    return max(now, workspace.last_tick_at or now)


_LAST_TICK = select(Workspace.last_tick_at).where(Workspace.id == bindparam("workspace_id")).with_for_update(read=True)
"""The workspace's last tick, its row share-locked (built once: every evaluation runs it)."""


def get_segment(uow: UnitOfWork, workspace_id: str, segment_id: Any, *, lock: bool = False) -> Segment:
    """The segment with this id in this workspace; an id of another workspace is not found."""
    try:
        ident = int(segment_id)
    except (TypeError, ValueError):
        raise NotFound("segment", segment_id, workspace_id) from None
    statement = select(Segment).where(Segment.id == ident, Segment.workspace_id == workspace_id)
    segment = uow.session.scalar(statement.with_for_update() if lock else statement)
    if segment is None:
        raise NotFound("segment", segment_id, workspace_id)
    return segment


def record_change(uow: UnitOfWork, segment: Segment, change: str, *, now: float) -> None:
    """Tell the host, after the commit, that the segment was ``created``, ``edited``,
    ``renamed`` or ``deleted``: a row in the notification outbox, written in this transaction
    (so it is delivered at least once, whatever happens to the broker), and its delivery."""
    q.append_segment_change(
        uow.session,
        {
            "workspace_id": segment.workspace_id,
            "segment_id": segment.id,
            "name": segment.name,
            "rule_version": segment.rule_version,
            "change": change,
            "occurred_at": now,
        },
    )
    uow.add_command(DeliverEvents(segment.workspace_id))


def _member_count(uow: UnitOfWork, segment: Segment) -> int:
    return q.member_counts(uow.session, segment.workspace_id).get(segment.id, 0)


# --------------------------------------------------------------------------- operations


def create_segment(
    uow: UnitOfWork,
    workspace_id: str,
    *,
    name: str,
    rule: RuleInput,
    now: float,
    description: str = "",
    default_key: str | None = None,
) -> SegmentView:
    """Create a segment and schedule its first build (one "built" event, no flood of entries)."""
    cleaned = clean_name(name)
    if not isinstance(description, str) or (problem := string_problem(description)):
        raise InvalidInput(f"a segment description must be text: {problem or 'not a string'}")
    with uow:
        workspace = get_workspace(uow, workspace_id)
        normalised, conditions = resolve_rule(rule, workspace.timezone)
        segment = _insert_segment(
            uow, workspace_id, cleaned, normalised, conditions, description, now, default_key=default_key
        )
        uow.add_command(RebuildSegment(workspace_id, segment.id, segment.rule_version, first_build=True))
        record_change(uow, segment, "created", now=now)
        uow.commit()
        segment_id = segment.id
    return segment_view(uow, workspace_id, segment_id)


def _insert_segment(
    uow: UnitOfWork,
    workspace_id: str,
    name: str,
    rule: Any,
    conditions: Any,
    description: str,
    now: float,
    *,
    default_key: str | None = None,
) -> Segment:
    """Insert a segment in the current transaction, claiming one of the workspace's 500 slots."""
    if q.segment_name_taken(uow.session, workspace_id, name):
        raise DuplicateName(name)
    if q.claim_segment_slot(uow.session, workspace_id) is None:
        raise LimitReached(MAX_SEGMENTS_PER_WORKSPACE)
    segment = Segment(
        workspace_id=workspace_id,
        name=name,
        description=description,
        rule=rule,
        conditions=conditions,
        is_default=default_key is not None,
        default_key=default_key,
        rule_version=1,
        created_at=now,
        updated_at=now,
    )
    uow.session.add(segment)
    try:
        uow.session.flush()
    except IntegrityError as error:
        if q.is_duplicate_segment_name(error):
            raise DuplicateName(name) from None
        raise
    return segment


def edit_segment(
    uow: UnitOfWork, workspace_id: str, segment_id: Any, *, rule: RuleInput, now: float
) -> SegmentView:
    """Replace a segment's rule: the rule version goes up and a rebuild follows, with an event
    (cause "rule_edited") for each contact that enters or exits.  The same rule changes nothing."""
    with uow:
        workspace = get_workspace(uow, workspace_id)
        segment = get_segment(uow, workspace_id, segment_id, lock=True)
        normalised, conditions = resolve_rule(rule, workspace.timezone)
        if normalised != segment.rule or conditions != segment.conditions:
            segment.rule, segment.conditions = normalised, conditions
            segment.rule_version += 1
            segment.updated_at = now
            uow.add_command(RebuildSegment(workspace_id, segment.id, segment.rule_version))
            record_change(uow, segment, "edited", now=now)
        uow.commit()
    return segment_view(uow, workspace_id, segment.id)


def save_as_new(
    uow: UnitOfWork, workspace_id: str, segment_id: Any, *, name: str, rule: RuleInput | None, now: float
) -> SegmentView:
    """Create a new segment from an existing one's (possibly edited) rule; the original stays."""
    with uow:
        original = get_segment(uow, workspace_id, segment_id)
        given = rule if rule is not None else RuleInput(rule=original.rule)
        description = original.description
    return create_segment(uow, workspace_id, name=name, rule=given, now=now, description=description)


def rename_segment(uow: UnitOfWork, workspace_id: str, segment_id: Any, *, name: str, now: float) -> SegmentView:
    """Rename a segment; its id, rule and members stay."""
    cleaned = clean_name(name)
    with uow:
        segment = get_segment(uow, workspace_id, segment_id, lock=True)
        if q.segment_name_taken(uow.session, workspace_id, cleaned, exclude_segment_id=segment.id):
            raise DuplicateName(cleaned)
        segment.name = cleaned
        segment.updated_at = now
        try:
            uow.session.flush()
        except IntegrityError as error:
            if q.is_duplicate_segment_name(error):
                raise DuplicateName(cleaned) from None
            raise
        record_change(uow, segment, "renamed", now=now)
        uow.commit()
    return segment_view(uow, workspace_id, segment.id)


def delete_segment(uow: UnitOfWork, workspace_id: str, segment_id: Any, *, now: float) -> None:
    """Delete a segment for good: its memberships and undelivered events go with it (cascade),
    and its pending rebuilds find no segment and stop.

    Locks the workspace row before the segment's, the order evaluations take them in (its
    share lock, then the segment's key), so a delete waits for them instead of deadlocking.
    """
    with uow:
        get_workspace(uow, workspace_id, lock=True)
        segment = get_segment(uow, workspace_id, segment_id, lock=True)
        record_change(uow, segment, "deleted", now=now)
        uow.session.delete(segment)
        uow.session.flush()
        q.release_segment_slot(uow.session, workspace_id)
        uow.commit()


def segment_view(uow: UnitOfWork, workspace_id: str, segment_id: Any) -> SegmentView:
    with uow:
        segment = get_segment(uow, workspace_id, segment_id)
        return _view(segment, _member_count(uow, segment))


def list_segments(uow: UnitOfWork, workspace_id: str) -> list[SegmentView]:
    """The workspace's segments, oldest first, each with its member count and filter count."""
    with uow:
        get_workspace(uow, workspace_id)
        counts = q.member_counts(uow.session, workspace_id)
        return [_view(s, counts.get(s.id, 0)) for s in q.list_segments(uow.session, workspace_id)]


def iter_members(uow: UnitOfWork, workspace_id: str, segment_id: Any, *, batch_size: int = 1000) -> Iterator[list[str]]:
    """A segment's member ids in batches, in stable (contact id) order: a broadcast's audience.

    Each batch is read in a short transaction of its own (keyset pagination), so a long
    broadcast never holds the database (on SQLite, a transaction holds the write lock).
    """
    with uow:
        segment_id = get_segment(uow, workspace_id, segment_id).id
    after: str | None = None
    while True:
        with uow:
            batch = q.member_ids_page(uow.session, segment_id, after=after, limit=batch_size)
        if not batch:
            return
        yield batch
        after = batch[-1]


# --------------------------------------------------------------------------- rebuilds


@dataclass(frozen=True)
class RebuildResult:
    segment_id: int
    entered: int
    exited: int
    member_count: int | None
    """None when not asked for (``count_members=False``): counting reads all the memberships."""
    stale: bool = False


def rebuild_segment(
    uow: UnitOfWork,
    workspace_id: str,
    segment_id: int,
    *,
    rule_version: int | None = None,
    now: float,
    cause: EventCause = EventCause.RULE_EDITED,
    first_build: bool = False,
    incremental: bool = False,
    count_members: bool = True,
    batch_size: int = REBUILD_BATCH_SIZE,
    progress: Any = None,
) -> RebuildResult:
    """Rebuild a segment set-wise in SQL, one transaction per batch of contact ids.

    Each batch locks the segment row and checks its rule version first: once the rule has moved
    past ``rule_version`` (or the segment is gone) the rebuild stops and reports itself stale.
    A first build writes one "built" event with the member count instead of per-contact events
    (only while the segment has never been built: asked again later, it is an ordinary rebuild).
    Like any evaluation, each batch runs at ``now`` or at the workspace's last tick if that is
    later (see :func:`evaluation_instant`), so a rebuild never undoes a flip a tick applied.

    Batches: a first build cuts the contact ids into ranges of ``batch_size``.  Any other
    rebuild first finds, read-only, the contacts whose membership disagrees with the rule and
    reconciles just those ids, ``batch_size`` at a time (the usual case: a sweep or most rule
    edits change few); if there are too many, it falls back to id ranges.

    ``incremental``: if the segment was last built for its current rule, compare only the
    contacts that may have changed since: those the database stamped after that build's
    watermark (:mod:`~..storage.change_stamps`), and, for a rule that reads ``now``, those whose
    time thresholds lie between the instants of that build and this one (as a tick finds them).
    That assumes the clock moves forward: a ``now`` earlier than the last build's compares
    everyone, as does any other case.  A sweep must not be incremental: it is there to find
    drift that no change explains.

    The result has the member count unless ``count_members`` is false.
    """
    with uow:
        try:
            at = evaluation_instant(uow, workspace_id, now)
            segment = get_segment(uow, workspace_id, segment_id)
        except NotFound:
            return RebuildResult(segment_id, 0, 0, 0, stale=True)
        if rule_version is not None and segment.rule_version != rule_version:
            return RebuildResult(segment_id, 0, 0, 0, stale=True)
        stamp = change_stamps.watermark(uow.session, workspace_id)  # before anything is read
        batches = _plan_batches(uow, segment, at, first_build=first_build, incremental=incremental, size=batch_size)
        uow.commit()  # SQLite: the watermark advanced the workspace's change epoch
    instants = [at]
    total = Diff()
    for number, batch in enumerate(batches, start=1):
        with uow:
            try:
                at = evaluation_instant(uow, workspace_id, now)  # the workspace's lock before the segment's
                segment = get_segment(uow, workspace_id, segment_id, lock=True)
            except NotFound:
                return RebuildResult(segment_id, len(total.entered), len(total.exited), 0, stale=True)
            if rule_version is not None and segment.rule_version != rule_version:
                return RebuildResult(segment_id, len(total.entered), len(total.exited), 0, stale=True)
            instants.append(at)
            # A first build writes no per-contact event only while the segment has never been
            # built.  The same command delivered again once it has been (at least once: a worker
            # that died before acknowledging it) reconciles like any rebuild, with an event for
            # each contact it moves; silent, it would apply a pending change or a due flip
            # without its event, and the evaluation or tick that follows would find nothing to do.
            silent = first_build and segment.built_version == 0
            total.extend(
                rebuild_batch(
                    uow.session, segment, after=batch.after, upto=batch.upto, contact_ids=batch.ids,
                    among_contacts=batch.among, now=at, cause=cause, events=not silent,
                )  # fmt: skip
            )
            if number == len(batches):
                if silent:  # one "built" event, however often the first build is asked for
                    q.append_events(uow.session, [built_event(segment, setwise.member_count(uow.session, segment.id), at)])
                segment.built_version = segment.rule_version
                segment.built_stamp = stamp
                segment.built_from, segment.built_until = min(instants), max(instants)
            uow.commit()
        if progress is not None:
            progress(1)
    count = None
    if count_members:
        with uow:
            segment = get_segment(uow, workspace_id, segment_id)
            count = setwise.member_count(uow.session, segment.id)
    return RebuildResult(segment_id, len(total.entered), len(total.exited), count)


@dataclass(frozen=True)
class _Batch:
    """The contacts one rebuild transaction reconciles: ids in ``(after, upto]``, among ``ids``
    and those satisfying ``among``, each if given."""

    after: str | None = None
    upto: str | None = None
    ids: list[str] | None = None
    among: ColumnElement[bool] | None = None


INCREMENTAL_DIFFERENCES_LIMIT = 500_000
"""Beyond this many differing contacts an incremental rebuild reconciles by id ranges."""


def _plan_batches(
    uow: UnitOfWork, segment: Segment, at: float, *, first_build: bool, incremental: bool, size: int
) -> list[_Batch]:
    """How a rebuild cuts its work into transactions (see :func:`rebuild_segment`)."""
    session = uow.session
    among = _changed_since_build(segment, at) if incremental and not first_build else None
    if among is not None and setwise.count_matching(session, segment.workspace_id, among) <= size:
        return [_Batch(among=among)]  # few enough to compare in the one transaction
    differing = None
    if not first_build:
        differing = setwise.membership_differences(
            session,
            segment_id=segment.id,
            workspace_id=segment.workspace_id,
            condition=rule_to_sql(segment.rule, contact_view_columns(), now=at),
            limit=size if among is None else INCREMENTAL_DIFFERENCES_LIMIT,
            among_contacts=among,
        )
    if differing is not None:  # an empty list still makes the batch that records the build
        return [_Batch(ids=differing[i : i + size]) for i in range(0, max(len(differing), 1), size)]
    bounds = setwise.contact_id_bounds(session, segment.workspace_id, size)
    return [_Batch(after, upto) for after, upto in zip([None, *bounds[:-1]], bounds, strict=True)]


def _changed_since_build(segment: Segment, at: float) -> ColumnElement[bool] | None:
    """The contacts whose membership may have changed since the segment's last complete build,
    evaluated at ``at`` now (a condition on ``contacts``); None if that is not known, or if the
    clock went back since that build."""
    if (
        segment.built_version != segment.rule_version
        or segment.built_stamp is None
        or segment.built_from is None
        or segment.built_until is None
        or at < segment.built_until
    ):
        return None
    # Since the build, memberships were evaluated at the build's instants, by ticks and by
    # evaluations of changed contacts, each at an evaluation instant (never before the last
    # tick): with a clock that moves forward, all between the build's first instant and ``at``.
    # A contact's membership can differ between two of them only if it was stamped since, or a
    # time threshold of the rule lies between them.
    flips = flip_candidates(compiled_segment(segment), segment.built_from, at)
    if flips is None:
        return None
    return or_(change_stamps.changed_since(segment.built_stamp), flips)


def preview_rule(
    uow: UnitOfWork, workspace_id: str, rule: RuleInput, *, segment_id: Any = None, now: float
) -> dict[str, int]:
    """What a rule would do, computed in SQL without writing: its member count, and for an
    existing segment how many contacts would enter and exit."""
    with uow:
        workspace = get_workspace(uow, workspace_id)
        normalised, _ = resolve_rule(rule, workspace.timezone)
        condition = rule_to_sql(normalised, contact_view_columns(), now=now)
        preview = {"member_count": setwise.count_matching(uow.session, workspace_id, condition)}
        if segment_id is not None:
            segment = get_segment(uow, workspace_id, segment_id)
            entering, exiting = setwise.count_difference(
                uow.session, segment_id=segment.id, workspace_id=workspace_id, condition=condition
            )
            preview |= {"would_enter": entering, "would_exit": exiting}
        return preview
