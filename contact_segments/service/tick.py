"""The tick: apply every time-based flip since the last tick, and only those.

"Contacts created <7 days ago" loses a contact at ``created_at + 7 days`` exactly, without the
contact changing.  For each segment whose rule reads ``now``, the rules layer lists its
comparisons of a timestamp with ``now ± N`` (:func:`~..rules.analysis.time_thresholds`); each
can change value between two instants only for contacts whose timestamp lies in a window of the
same width, which an index range query finds.  Those contacts alone are compared with their
memberships, set-wise in SQL (one statement per segment, see :func:`rebuild_batch`), so a tick
costs what the flips cost, not what the contacts cost.

The workspace's watermark (``last_tick_at``) moves in the tick's transaction, under the
workspace row's lock: ticks of a workspace run one after another, a missed beat is caught up by
the next tick's wider window, and no window is covered twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import EventCause, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import workspace_segments
from .membership import Diff, compiled_segment, flip_candidates, rebuild_batch
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
        candidates = 0
        for segment in workspace_segments(uow.session, workspace_id):
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            # No watermark yet, or a rule whose clock use has no index window: reconcile everyone.
            may_flip = flip_candidates(compiled, window.start, now) if window.start is not None else None
            if may_flip is not None:
                candidates += setwise.count_matching(uow.session, workspace_id, may_flip)
            diff.extend(
                rebuild_batch(
                    uow.session, segment, after=None, upto=None, among_contacts=may_flip, now=now, cause=EventCause.TIME_PASSED
                )
            )
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return TickResult(workspace_id, window.start, now, candidates, len(diff.entered), len(diff.exited))
