"""Periodic upkeep: what the beat runs besides the tick.

Everything the engine must eventually do is recorded in the database (pending contact changes,
undelivered events, rule versions), so a lost broker message only delays work: these functions
find it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from ..storage import EventCause, Segment, Workspace, pending_changes
from ..storage import queries as q
from .commands import DeliverEvents, EvaluatePending, RebuildSegment
from .segments import rebuild_segment
from .uow import UnitOfWork

log = logging.getLogger(__name__)


def workspace_ids(uow: UnitOfWork) -> list[str]:
    with uow:
        return list(uow.session.scalars(select(Workspace.id).order_by(Workspace.id)))


REBUILD_GRACE_SECONDS = 60.0
"""How long a due rebuild may be in flight before the beat sends it again."""


def schedule_pending_work(uow: UnitOfWork, *, now: float) -> int:
    """Dispatch what the database says is due: an evaluation for every workspace with pending
    contact changes, a delivery for every workspace with undelivered events, a rebuild for every
    segment not yet built for its rule version (for a while); return how many commands went out."""
    with uow:
        for workspace_id in pending_changes.workspaces_with_pending(uow.session):
            uow.add_command(EvaluatePending(workspace_id))
        for workspace_id in q.workspaces_with_undelivered_events(uow.session):
            uow.add_command(DeliverEvents(workspace_id))
        overdue = select(Segment).where(
            Segment.built_version != Segment.rule_version, Segment.updated_at < now - REBUILD_GRACE_SECONDS
        )
        for segment in uow.session.scalars(overdue):
            uow.add_command(
                RebuildSegment(segment.workspace_id, segment.id, segment.rule_version, first_build=segment.built_version == 0)
            )
        count = len(uow.pending_commands)
        uow.commit()
    return count


@dataclass(frozen=True)
class Drift:
    segment_id: int
    entered: int
    exited: int


def sweep(uow: UnitOfWork, workspace_id: str, *, now: float) -> list[Drift]:
    """Rebuild every segment of the workspace from its SQL; report (and so repair) any drift
    between stored membership and the rule."""
    with uow:
        segment_ids = [segment.id for segment in q.list_segments(uow.session, workspace_id)]
    drifts = []
    for segment_id in segment_ids:
        result = rebuild_segment(uow, workspace_id, segment_id, now=now, cause=EventCause.SWEEP, count_members=False)
        if result.entered or result.exited:
            log.warning(
                "segment %s of workspace %s drifted: %d entered, %d exited (repaired)",
                segment_id, workspace_id, result.entered, result.exited,
            )
            drifts.append(Drift(segment_id, result.entered, result.exited))
    if drifts:
        with uow:
            uow.add_command(DeliverEvents(workspace_id))
            uow.commit()
    return drifts
