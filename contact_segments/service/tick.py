"""The tick: apply every time-based flip since the last tick, and only those.

"Contacts created <7 days ago" loses a contact at ``created_at + 7 days`` exactly, without the
contact changing.  For each segment whose rule reads ``now``, the rules layer lists its
comparisons of a timestamp with ``now ± N`` (:func:`~..rules.analysis.time_thresholds`); each
can change value between two instants only for contacts whose timestamp lies in a window of the
same width, which an index range query finds.  Those contacts alone are compared with the
segment's rule in SQL, each membership looked up by key, all segments in one read
(:func:`~..storage.setwise.window_flips`); then the flips of every segment are written with
their events (:func:`.membership.apply_diff`, one statement per 5,000 flips on PostgreSQL).  So
a tick costs what the window's contacts (about the flips) cost, not what all contacts cost.  A
window of any width works the same way: a beat missed for days is caught up by one wider range
(its flips pass through Python on their way to the write: 50,000 of them take about a second).

A segment whose use of the clock has no such window, and every time-relative segment at a
workspace's first tick, is reconciled over every contact instead.

The workspace's watermark (``last_tick_at``) moves in the tick's transaction, under the
workspace row's lock: ticks of a workspace run one after another, and no evaluation or deletion
of a contact, nor a rebuild batch, runs meanwhile (each share-locks the row first:
:func:`.segments.evaluation_instant`), so the tick writes its flips as their only writer; a
missed beat is caught up by the next tick's wider window, and no window is covered twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..rules import rule_to_sql
from ..storage import EventCause, contact_view_columns, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import workspace_segments
from .membership import Diff, apply_diff, compiled_segment, flip_candidates, rebuild_batch
from .segments import get_workspace
from .uow import UnitOfWork


@dataclass(frozen=True)
class TickResult:
    workspace_id: str
    start: float | None
    end: float
    candidates: int
    entered: int
    exited: int
    skipped: bool = False


def tick(uow: UnitOfWork, workspace_id: str, *, now: float) -> TickResult:
    """Apply the flips of ``(last tick, now]`` to the workspace's time-relative segments."""
    with uow:
        window = q.open_tick_window(uow.session, workspace_id, now)
        if window is None:
            get_workspace(uow, workspace_id)  # an unknown workspace is an error, not "nothing to do"
            return TickResult(workspace_id, None, now, 0, 0, 0, skipped=True)
        diff = Diff()
        windows: list[setwise.Window] = []
        versions: dict[int, int] = {}
        for segment in workspace_segments(uow.session, workspace_id):
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            may_flip = flip_candidates(compiled, window.start, now) if window.start is not None else None
            if may_flip is None:  # no watermark yet, or no index window: reconcile everyone
                diff.extend(rebuild_batch(uow.session, segment, after=None, upto=None, now=now, cause=EventCause.TIME_PASSED))
                continue
            condition = rule_to_sql(segment.rule, contact_view_columns(), now=now)
            windows.append(setwise.Window(segment.id, condition, among=may_flip))
            versions[segment.id] = segment.rule_version
        candidates, to_enter, to_exit = setwise.window_flips(uow.session, workspace_id, windows)
        if to_enter or to_exit:
            # Their only writer: this transaction holds the workspace row, which every other one share-locks first.
            diff.extend(
                apply_diff(
                    uow.session, workspace_id, to_enter, to_exit, versions=versions, cause=EventCause.TIME_PASSED,
                    now=now, exclusive=True,
                )
            )  # fmt: skip
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return TickResult(workspace_id, window.start, now, candidates, len(diff.entered), len(diff.exited))
