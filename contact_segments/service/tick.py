"""The tick: apply every time-based flip since the last tick, and only those.

"Contacts created <7 days ago" loses a contact at ``created_at + 7 days`` exactly, without the
contact changing.  For each segment whose rule reads ``now``, the rules layer lists its
comparisons of a timestamp with ``now ± N`` (:func:`~..rules.analysis.time_thresholds`); each
can change value between two instants only for contacts whose timestamp lies in a window of the
same width, which an index range query finds.  Those contacts alone are read (each with its
membership, looked up by key) and evaluated with the segment's compiled predicate, and the
flips of every segment are written in one statement (:func:`apply_diff`, events in contact
order, then segment), so a tick costs what the flips cost, not what the contacts cost.

A window holding more than :data:`TICK_BATCH` contacts (a beat missed for days, a bulk import
sharing one instant) is reconciled set-wise in SQL among those contacts instead, rather than
read into Python; and a segment whose use of the clock has no such window, or a workspace's
first tick, over every contact.

The workspace's watermark (``last_tick_at``) moves in the tick's transaction, under the
workspace row's lock: ticks of a workspace run one after another, and no evaluation of a
contact runs meanwhile (:func:`.segments.evaluation_instant` share-locks the row); a missed
beat is caught up by the next tick's wider window, and no window is covered twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import EventCause, setwise
from ..storage import queries as q
from .commands import DeliverEvents
from .contacts import workspace_segments
from .membership import Diff, apply_diff, compiled_segment, flip_candidates, rebuild_batch
from .segments import get_workspace
from .uow import UnitOfWork

TICK_BATCH = 1000
"""Most window contacts a tick evaluates in Python for one segment; beyond, it reconciles in SQL."""


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
        to_enter: list[tuple[int, str]] = []
        to_exit: list[tuple[int, str]] = []
        versions: dict[int, int] = {}
        for segment in workspace_segments(uow.session, workspace_id):
            compiled = compiled_segment(segment)  # cached per rule version
            if not compiled.uses_now:
                continue
            may_flip = flip_candidates(compiled, window.start, now) if window.start is not None else None
            if may_flip is None:  # no watermark yet, or no index window: reconcile everyone
                diff.extend(rebuild_batch(uow.session, segment, after=None, upto=None, now=now, cause=EventCause.TIME_PASSED))
                continue
            caught = q.contact_views_where(uow.session, workspace_id, may_flip, member_of=segment.id, limit=TICK_BATCH + 1)
            if len(caught) > TICK_BATCH:  # too many for Python: compare them in SQL
                candidates += setwise.count_matching(uow.session, workspace_id, may_flip)
                diff.extend(
                    rebuild_batch(
                        uow.session, segment, after=None, upto=None, among_contacts=may_flip, now=now, cause=EventCause.TIME_PASSED
                    )
                )
                continue
            candidates += len(caught)
            versions[segment.id] = segment.rule_version
            for view, is_member in caught:
                if bool(compiled.predicate({**view, "now": now})) != is_member:
                    (to_exit if is_member else to_enter).append((segment.id, view["id"]))
        if to_enter or to_exit:
            diff.extend(
                apply_diff(
                    uow.session, workspace_id, to_enter, to_exit, versions=versions, cause=EventCause.TIME_PASSED, now=now
                )
            )
        if diff:
            uow.add_command(DeliverEvents(workspace_id))
        uow.commit()
    return TickResult(workspace_id, window.start, now, candidates, len(diff.entered), len(diff.exited))
