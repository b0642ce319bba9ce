"""Export and import of segment definitions (the format: :mod:`contact_segments.rules.transfer`).

**Export** writes a workspace's segments (all, or the ones asked for) in a stable order, by name
(trimmed, case-folded) then id, with definitions only: no memberships, no counts, no ids.  The
document's only time is ``exported_at``, the ``now`` the caller gives (the CLI's ``--now``, else
the clock), so two exports of the same definitions are byte-identical when made at the same
``now``, and otherwise differ in that one line.

**Import** is all or nothing: the document is validated first (every problem reported by JSON
path, nothing touched), then every segment is created, renamed, replaced or skipped in **one**
transaction, which commits only if all of them succeed.  Names conflict when they are equal
trimmed and case-folded, and ``on_conflict`` says what happens then:

- ``skip``: the existing segment stays as it is;
- ``rename``: the segment is created as "Name (2)", "Name (3)", ... (the first name free in the
  workspace and in the file);
- ``replace``: the existing segment takes the file's rule and description and keeps its id and
  name (so broadcasts and workflows that use it keep working).  The rule version goes up and a
  rebuild follows, with enter/exit events, only if the rule changes: replacing a segment with its
  own definition changes nothing and sends no event.

The 500-segment limit counts what the workspace already has: an import that would pass it is
refused whole, before anything is written.  A created segment keeps the file's ``is_default``
(it records that the segment began as a default; the workspace's default registry is not
touched, so a deleted default still never comes back by itself).

``dry_run`` reports what would happen without writing anything: for each created (or renamed)
segment the member count it would have, for each replacement how many contacts would enter and
exit, all computed in SQL at ``now`` (as ``segment edit --dry-run`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..rules.sql import rule_to_sql
from ..rules.transfer import (
    MAX_EXPORT_BYTES,
    MAX_NAME_LENGTH,
    Export,
    ExportedSegment,
    check_export,
    dump_export,
    export_document,
    name_key,
    too_large_message,
)
from ..storage import MAX_SEGMENTS_PER_WORKSPACE, Segment, Workspace, contact_view_columns, setwise
from ..storage import queries as q
from .commands import RebuildSegment
from .errors import InvalidInput, LimitReached, SegmentsError
from .segments import _is_advanced, get_segment, get_workspace, record_change
from .uow import UnitOfWork

export_too_large_message = too_large_message

OnConflict = Literal["skip", "rename", "replace"]
ON_CONFLICT: tuple[OnConflict, ...] = ("skip", "rename", "replace")

Action = Literal["created", "renamed", "replaced", "skipped"]


# --------------------------------------------------------------------------- export


def export_segments(
    uow: UnitOfWork, workspace_id: str, segment_ids: Iterable[Any] | None = None, *, now: float
) -> dict[str, Any]:
    """The export document of the workspace's segments (all, or those of ``segment_ids``).

    Segments come in a stable order (name trimmed and case-folded, then id); an unknown id, or
    one of another workspace, raises :class:`NotFound`; a workspace without segments has
    nothing to export (:class:`InvalidInput`: an export holds at least one segment).
    """
    with uow:
        workspace = get_workspace(uow, workspace_id)
        if segment_ids is None:
            segments = list(q.list_segments(uow.session, workspace_id))
        else:
            chosen = {get_segment(uow, workspace_id, ident).id: None for ident in segment_ids}
            segments = [s for s in q.list_segments(uow.session, workspace_id) if s.id in chosen]
        if not segments:
            raise InvalidInput(f"nothing to export: workspace {workspace_id!r} has no segments")
        segments.sort(key=lambda s: (s.name_key, s.id))
        return export_document(
            workspace_id=workspace.id,
            timezone=workspace.timezone,
            exported_at=now,
            segments=[
                {
                    "name": s.name,
                    "description": s.description,
                    "rule": s.rule,
                    "conditions": s.conditions,
                    "is_default": s.is_default,
                }
                for s in segments
            ],
        )


def render_export(document: dict[str, Any]) -> str:
    """An export document as text (:func:`~contact_segments.rules.transfer.dump_export`), refused
    if an import could not read it back (larger than the size limit)."""
    text = dump_export(document)
    size = len(text.encode("utf-8"))
    if size > MAX_EXPORT_BYTES:
        raise InvalidInput(f"cannot export: {too_large_message(size)}; export fewer segments (--segment)")
    return text


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`validate_export` found: the export, or every problem by JSON path."""

    export: Export | None
    problems: dict[str, str]

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        export = self.export
        return {
            "valid": self.valid,
            "format_version": export.format_version if export else None,
            "workspace": {"id": export.workspace_id, "timezone": export.timezone} if export else None,
            "segments": len(export.segments) if export else None,
            "problems": [{"path": path, "message": message} for path, message in self.problems.items()],
        }


def validate_export(document: Any) -> ExportCheck:
    """Check an export (JSON text, bytes or a parsed value) without touching any database."""
    export, problems = check_export(document)
    return ExportCheck(export, problems)


def invalid_export(problems: dict[str, str]) -> InvalidInput:
    count = len(problems)
    return InvalidInput(f"not a valid export: {count} problem{'s' * (count != 1)}", problems)


# --------------------------------------------------------------------------- import


class ImportPassesLimit(LimitReached):
    """An import that would take the workspace past 500 segments."""

    def __init__(self, creating: int, existing: int) -> None:
        SegmentsError.__init__(
            self,
            f"importing would create {creating} segment{'s' * (creating != 1)} in a workspace that has "
            f"{existing}: a workspace holds at most {MAX_SEGMENTS_PER_WORKSPACE} (nothing was imported)",
        )


@dataclass(frozen=True)
class SegmentOutcome:
    """What happened (or would happen) to one segment of the file, in file order."""

    index: int
    name: str  #: the name in the file (trimmed)
    action: Action
    segment_id: int | None  #: the segment created, replaced or skipped (None: a dry run's creation)
    renamed_to: str | None = None
    changed: bool | None = None  #: replaced: whether the rule (or description) changed
    member_count: int | None = None  #: dry run, created or renamed: the members it would have
    would_enter: int | None = None  #: dry run, replaced
    would_exit: int | None = None  #: dry run, replaced

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImportReport:
    workspace_id: str
    on_conflict: OnConflict
    dry_run: bool
    segments: tuple[SegmentOutcome, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        totals = dict.fromkeys(("created", "renamed", "replaced", "skipped"), 0)
        for outcome in self.segments:
            totals[outcome.action] += 1
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "on_conflict": self.on_conflict,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "segments": [outcome.to_dict() for outcome in self.segments],
        }


@dataclass
class _Planned:
    index: int
    item: ExportedSegment
    action: Action
    name: str  #: the name to create it under
    existing: Segment | None = None
    conditions: Any = None  #: what to store
    changed: bool | None = None


def import_segments(
    uow: UnitOfWork,
    workspace_id: str,
    document: Any,
    *,
    on_conflict: OnConflict = "skip",
    dry_run: bool = False,
    now: float,
) -> ImportReport:
    """Import an export (JSON text, bytes or a parsed value) into a workspace, all or nothing.

    Raises :class:`InvalidInput` listing every problem of an invalid document (nothing is
    touched), :class:`NotFound` for an unknown workspace, :class:`LimitReached` if the workspace
    would pass 500 segments; on any error nothing is written.
    """
    if on_conflict not in ON_CONFLICT:
        raise InvalidInput(f"on_conflict is one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}")
    export, problems = check_export(document)
    if export is None:
        raise invalid_export(problems)
    with uow:
        # Lock the workspace row first (PostgreSQL): segment creations in it wait for this
        # import, so the names and the count it plans with stay true until it commits.
        workspace = get_workspace(uow, workspace_id, lock=not dry_run)
        plan = _plan(uow, workspace_id, export, on_conflict, lock=not dry_run and on_conflict == "replace")
        creating = sum(p.action in ("created", "renamed") for p in plan)
        if workspace.segment_count + creating > MAX_SEGMENTS_PER_WORKSPACE:
            raise ImportPassesLimit(creating, workspace.segment_count)
        if dry_run:
            return ImportReport(
                workspace_id, on_conflict, True, tuple(_preview(uow, workspace_id, plan, now))
            )
        _replace(uow, workspace_id, [p for p in plan if p.action == "replaced"], now)
        created = _create(uow, workspace_id, [p for p in plan if p.action in ("created", "renamed")], now)
        outcomes = [_outcome(planned, created) for planned in plan]
        uow.commit()
    return ImportReport(workspace_id, on_conflict, False, tuple(outcomes))


def _plan(
    uow: UnitOfWork, workspace_id: str, export: Export, on_conflict: OnConflict, *, lock: bool
) -> list[_Planned]:
    """What to do with each segment of the file.  With ``lock`` (a replacing import), the
    workspace's segments stay locked until the import ends (PostgreSQL), so none changes between
    this plan and the writes."""
    statement = select(Segment).where(Segment.workspace_id == workspace_id)
    existing = {
        s.name_key: s for s in uow.session.scalars(statement.with_for_update() if lock else statement)
    }
    taken = set(existing) | {item.name_key for item in export.segments}
    plan = []
    for index, item in enumerate(export.segments):
        conditions = None if _is_advanced(item.conditions) else item.conditions
        current = existing.get(item.name_key)
        if current is None:
            plan.append(_Planned(index, item, "created", item.name, conditions=conditions))
        elif on_conflict == "skip":
            plan.append(_Planned(index, item, "skipped", item.name, existing=current))
        elif on_conflict == "rename":
            name = _free_name(item.name, taken)
            taken.add(name_key(name))
            plan.append(_Planned(index, item, "renamed", name, conditions=conditions))
        else:
            changed = item.rule != current.rule or conditions != current.conditions
            plan.append(
                _Planned(
                    index,
                    item,
                    "replaced",
                    current.name,
                    existing=current,
                    conditions=conditions,
                    changed=changed or item.description != current.description,
                )
            )
    return plan


def _free_name(name: str, taken: set[str]) -> str:
    """``name (2)``, ``name (3)``, ...: the first whose key is not taken (shortened to fit)."""
    number = 2
    while True:
        suffix = f" ({number})"
        candidate = name[: MAX_NAME_LENGTH - len(suffix)].rstrip() + suffix
        if name_key(candidate) not in taken:
            return candidate
        number += 1


def _rule_changes(planned: _Planned) -> bool:
    current = planned.existing
    assert current is not None
    return planned.item.rule != current.rule or planned.conditions != current.conditions


def _preview(uow: UnitOfWork, workspace_id: str, plan: list[_Planned], now: float) -> list[SegmentOutcome]:
    columns = contact_view_columns()
    outcomes = []
    for planned in plan:
        item, current = planned.item, planned.existing
        match planned.action:
            case "skipped":
                assert current is not None
                outcome = SegmentOutcome(planned.index, item.name, "skipped", current.id)
            case "created" | "renamed":
                condition = rule_to_sql(item.rule, columns, now=now)
                count = setwise.count_matching(uow.session, workspace_id, condition)
                outcome = SegmentOutcome(
                    planned.index,
                    item.name,
                    planned.action,
                    None,
                    renamed_to=planned.name if planned.action == "renamed" else None,
                    member_count=count,
                )
            case _:
                assert current is not None
                entering = exiting = 0
                if _rule_changes(planned):
                    condition = rule_to_sql(item.rule, columns, now=now)
                    entering, exiting = setwise.count_difference(
                        uow.session, segment_id=current.id, workspace_id=workspace_id, condition=condition
                    )
                outcome = SegmentOutcome(
                    planned.index,
                    item.name,
                    "replaced",
                    current.id,
                    changed=planned.changed,
                    would_enter=entering,
                    would_exit=exiting,
                )
        outcomes.append(outcome)
    return outcomes


def _replace(uow: UnitOfWork, workspace_id: str, plan: list[_Planned], now: float) -> None:
    """Give existing segments (locked by :func:`_plan`) the file's rule and description; a new
    rule raises the rule version and schedules a rebuild (events for who enters and exits)."""
    for planned in plan:
        segment = planned.existing
        assert segment is not None
        if _rule_changes(planned):
            segment.rule, segment.conditions = planned.item.rule, planned.conditions
            segment.rule_version += 1
            segment.updated_at = now
            uow.add_command(RebuildSegment(workspace_id, segment.id, segment.rule_version))
            record_change(uow, segment, "edited", now=now)
        if planned.item.description != segment.description:
            segment.description = planned.item.description
            segment.updated_at = now
    uow.session.flush()


def _create(uow: UnitOfWork, workspace_id: str, plan: list[_Planned], now: float) -> dict[int, Segment]:
    """Create the planned segments in one statement (by plan index), after claiming their slots
    of the workspace's 500 in one update.  The database enforces both product rules (the
    segment count's CHECK, the unique name key), so a concurrent change fails this import whole.

    Each new segment is built once the import commits (one "built" event, no flood of entries).
    """
    if not plan:
        return {}
    claimed = uow.session.execute(
        update(Workspace)
        .where(
            Workspace.id == workspace_id,
            Workspace.segment_count + len(plan) <= MAX_SEGMENTS_PER_WORKSPACE,
        )
        .values(segment_count=Workspace.segment_count + len(plan))
        .returning(Workspace.segment_count)
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed is None:
        raise ImportPassesLimit(len(plan), _segment_count(uow, workspace_id))
    segments = {
        planned.index: Segment(
            workspace_id=workspace_id,
            name=planned.name,
            description=planned.item.description,
            rule=planned.item.rule,
            conditions=planned.conditions,
            is_default=planned.item.is_default,
            default_key=None,
            rule_version=1,
            created_at=now,
            updated_at=now,
        )
        for planned in plan
    }
    uow.session.add_all(segments.values())
    try:
        uow.session.flush()
    except IntegrityError as error:
        if q.is_duplicate_segment_name(error):
            raise SegmentsError(
                "a segment of the same name as an imported one was created or renamed during the import: "
                "nothing was imported; import again"
            ) from None
        raise
    for segment in segments.values():
        uow.add_command(RebuildSegment(workspace_id, segment.id, segment.rule_version, first_build=True))
        record_change(uow, segment, "created", now=now)
    return segments


def _segment_count(uow: UnitOfWork, workspace_id: str) -> int:
    return uow.session.scalar(select(Workspace.segment_count).where(Workspace.id == workspace_id)) or 0


def _outcome(planned: _Planned, created: dict[int, Segment]) -> SegmentOutcome:
    item = planned.item
    if planned.action in ("created", "renamed"):
        renamed_to = planned.name if planned.action == "renamed" else None
        segment_id = created[planned.index].id
        return SegmentOutcome(planned.index, item.name, planned.action, segment_id, renamed_to=renamed_to)
    assert planned.existing is not None
    return SegmentOutcome(
        planned.index, item.name, planned.action, planned.existing.id, changed=planned.changed
    )


__all__ = [
    "MAX_EXPORT_BYTES",
    "ON_CONFLICT",
    "ExportCheck",
    "ImportPassesLimit",
    "ImportReport",
    "OnConflict",
    "SegmentOutcome",
    "export_segments",
    "export_too_large_message",
    "import_segments",
    "render_export",
    "validate_export",
]
